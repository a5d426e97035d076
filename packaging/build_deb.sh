#!/usr/bin/env bash
# Builds PoolNet's one-folder bundle (PyInstaller, packaging/poolnet.spec) and wraps it in a .deb:
#   packaging/build_deb.sh            -> dist/poolnet/ and dist/poolnet_VERSION_ARCH.deb
# Needs: .venv with `pip install -e '.[packaging]'` (or PYTHON=/path/to/python), dpkg-deb.
# DIST_DIR and WORK_DIR (default dist, build) move the outputs: the tests build elsewhere so
# they never clobber a developer's dist/.
# The package installs the bundle in /opt/poolnet, the commands in /usr/bin, the menu entry and
# hicolor icons. No maintainer scripts: dpkg's file triggers (desktop-file-utils,
# gtk-update-icon-cache) refresh the menu and icon caches on install and on removal.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DIST_DIR=${DIST_DIR:-dist}
WORK_DIR=${WORK_DIR:-build}
SECONDS=0

# Qt's run-time libraries on Debian 12: offscreen needs the first six, an X display the rest.
# bubblewrap: the `bwrap` that sandboxes the shards this computer runs for the pool.
DEPENDS="libgl1, libegl1, libfontconfig1, libxkbcommon0, libglib2.0-0, libdbus-1-3,\
 libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-render-util0,\
 libxcb-shape0, libxcb-xkb1, libxkbcommon-x11-0, bubblewrap"

if ! "$PYTHON" -c 'import PyInstaller' 2>/dev/null; then
  echo "PyInstaller is missing: $PYTHON -m pip install -e '.[packaging]'" >&2
  exit 1
fi
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing (Debian/Ubuntu only)" >&2; exit 1; }

version=$("$PYTHON" -c 'import poolnet_desktop; print(poolnet_desktop.__version__)')
arch=$(dpkg --print-architecture)
# The bundle carries libraries linked on this system: require at least its C library.
libc=$(dpkg-query -W -f='${Version}' libc6 | cut -d- -f1)

"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST_DIR" --workpath "$WORK_DIR/pyinstaller" packaging/poolnet.spec

stage=$WORK_DIR/deb/poolnet_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications"
cp -a "$DIST_DIR/poolnet" "$stage/opt/poolnet"
ln -s /opt/poolnet/poolnet "$stage/usr/bin/poolnet"
ln -s /opt/poolnet/poolnet-desktop "$stage/usr/bin/poolnet-desktop"
install -m 644 packaging/linux/poolnet.desktop "$stage/usr/share/applications/poolnet.desktop"
for png in resources/icons/poolnet-*.png; do
  size=${png##*-}; size=${size%.png}
  install -D -m 644 "$png" "$stage/usr/share/icons/hicolor/${size}x${size}/apps/poolnet.png"
done
install -D -m 644 resources/icons/poolnet.svg "$stage/usr/share/icons/hicolor/scalable/apps/poolnet.svg"
chmod -R u+rwX,go+rX,go-w "$stage"

cat >"$stage/DEBIAN/control" <<CONTROL
Package: poolnet
Version: $version
Architecture: $arch
Maintainer: PoolNet developers <poolnet@example.org>
Section: net
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: libc6 (>= $libc), $DEPENDS
Description: pool the computers on your LAN and run work on them
 PoolNet shares the CPU, GPU, memory and storage of every machine that runs it; one of
 them hosts the pool, the others find it on the LAN. Task files dropped on the window (or
 submitted with \`poolnet submit\`) are split into shards and run across the pool. Python
 task scripts run on the bundled interpreter: no separate Python is needed.
CONTROL

deb=$DIST_DIR/poolnet_${version}_${arch}.deb
# zstd: 5 s where xz takes 90 s, for a package about a third larger.
dpkg-deb --root-owner-group -Zzstd --build "$stage" "$deb" >/dev/null
printf 'bundle  %s  %s\n' "$(du -sh "$DIST_DIR/poolnet" | cut -f1)" "$DIST_DIR/poolnet"
printf 'deb     %s  %s\n' "$(du -sh "$deb" | cut -f1)" "$deb"
printf 'built in %d s\n' "$SECONDS"
