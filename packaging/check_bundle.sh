#!/usr/bin/env bash
# The installed-app checks tests/packaging/test_deb.py makes on Linux, for a bundle CI does not
# install (Windows, macOS): the bundle's own Python runs task code that imports numpy, its uv runs, and the
# app starts without a screen and shows its Dashboard's tiles and charts (dashboard_probe.py).
#   packaging/check_bundle.sh dist/poolnet/poolnet.exe
#   packaging/check_bundle.sh dist/PoolNet.app/Contents/MacOS/poolnet
# The console executable runs the probe: a windowed one may have no stdout to report on.
set -euo pipefail
poolnet=$1
probe=$(dirname "$0")/dashboard_probe.py
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

"$poolnet" --version
"$poolnet" --poolnet-run-python -c "import sys, statistics; assert sys.frozen; print(sys.executable)"
"$poolnet" --poolnet-run-python -c "
import numpy
det = numpy.linalg.det(numpy.diag([1.0, 2.0, 3.0, 4.0]))
assert round(float(det), 6) == 24.0, det
print('numpy', numpy.__version__, 'computes', det)"
# The bundled uv, which builds tasks' Python environments, is found and runs.
"$poolnet" --poolnet-run-python -c "
import subprocess
from poolnet_desktop.runtime.uv_tool import uv_binary
print(subprocess.run([uv_binary(), '--version'], capture_output=True, text=True, check=True).stdout.strip())"
QT_QPA_PLATFORM=offscreen "$poolnet" --poolnet-run-python "$probe" --no-discovery \
  --data-dir "$scratch/data" --settings "$scratch/settings.ini" | tee "$scratch/probe.txt"
grep -qx "dashboard tiles=6 charts=5" "$scratch/probe.txt"
