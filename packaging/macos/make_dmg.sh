#!/usr/bin/env bash
# Wraps dist/PoolNet.app (made by `pyinstaller packaging/poolnet.spec` on macOS) in a
# compressed disk image with an Applications link to drag it onto:
#   packaging/macos/make_dmg.sh   -> dist/PoolNet-VERSION.dmg
# The app is signed ad hoc by PyInstaller only; a release needs codesign with a Developer ID
# and notarytool before Gatekeeper opens it without a warning.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
version=$("$PYTHON" -c 'import poolnet_desktop; print(poolnet_desktop.__version__)')
[ -d dist/PoolNet.app ] || { echo "dist/PoolNet.app is missing: build it with PyInstaller first" >&2; exit 1; }

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp -R dist/PoolNet.app "$staging/"
ln -s /Applications "$staging/Applications"
rm -f "dist/PoolNet-$version.dmg"
hdiutil create -volname PoolNet -srcfolder "$staging" -fs HFS+ -format UDZO -ov "dist/PoolNet-$version.dmg"
echo "dist/PoolNet-$version.dmg"
