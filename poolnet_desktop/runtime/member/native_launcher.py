"""The lane launcher built from ``sandbox_launcher.c``: where its build is, and how it is made.

The launcher's own Python, paid per shard on the shard's own core, was the gap between
PoolNet and ``xargs -P 2`` (issue 14; ``benchmarks/bench_launcher.py`` compares the two). Its
C twin does the same steps. A member runs the build where there is one made from the C text
beside this file (its name carries the text's hash: a build of an older text is never run),
else the Python launcher (an install made with no compiler, or a build that does not run
here). ``./dev setup`` and the installers build it:
``python -m poolnet_desktop.runtime.member.native_launcher``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("sandbox_launcher.c")
BUILDS = Path(__file__).with_name("built")
_PREFIX = "poolnet-lane-launcher-"
# Hardened as distributions build their programs: it runs among a task's code.
COMPILER_FLAGS = ("-O2", "-Wall", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-fPIE", "-pie",
                  "-Wl,-z,relro,-z,now")


def build_path() -> Path:
    """Where the build of the C text as it is now lives (it may not be there)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return BUILDS / f"{_PREFIX}{digest}"


@functools.cache
def find() -> Path | None:
    """The build to run, or None where there is none, or where it does not run here (a noexec
    mount, an older C library): it is run once, with no arguments, and must say how it is used.
    Read once: a member keeps its choice."""
    if sys.platform != "linux":
        return None
    try:
        path = build_path()
        if not os.access(path, os.X_OK):
            return None
        tried = subprocess.run([str(path)], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if tried.returncode == 2 and tried.stderr.startswith(b"usage: sandbox_launcher") else None


def build(compiler: str | None = None) -> Path:
    """Build it, unless a build of this text is there; older builds go. Raises ``OSError`` with
    the compiler's own words when it cannot be built."""
    path = build_path()
    if os.access(path, os.X_OK):
        return path
    compiler = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc) here")
    BUILDS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILDS) as scratch:
        partial = Path(scratch) / path.name
        made = subprocess.run([compiler, *COMPILER_FLAGS, "-o", str(partial), str(SOURCE)],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise OSError(f"{compiler} failed: {made.stderr.strip() or made.returncode}")
        os.replace(partial, path)  # whole or not at all: a member may look for it meanwhile
    for older in BUILDS.glob(f"{_PREFIX}*"):
        if older != path:
            older.unlink(missing_ok=True)
    return path


def main() -> int:
    try:
        path = build()
    except OSError as exc:
        print(f"the native lane launcher was not built ({exc}); lanes will use the Python one", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
