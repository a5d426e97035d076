"""Find and run ``uv``, the resolver and installer behind per-task Python environments.

Why uv: it resolves for another platform than its own (``--python-platform``), writes a lock
(``pylock.toml``) that names each wheel with its sha256, installs wheels without running any
of their code, works offline from a folder of wheels, and ships as one binary inside its PyPI
package (a dependency of PoolNet; the installers bundle it beside the executables).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from poolnet_desktop.core.environment import EnvironmentFailure, platform_target

UV_TIMEOUT = 600.0


class UvMissing(EnvironmentFailure):
    """No uv binary here: not installed with PoolNet, not on the PATH."""


def uv_binary() -> str:
    """The uv executable: bundled beside a frozen build, else the PyPI package's, else PATH."""
    bundled = Path(getattr(sys, "_MEIPASS", "")) / ("uv.exe" if os.name == "nt" else "uv")
    if getattr(sys, "frozen", False) and bundled.is_file():
        return str(bundled)
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise UvMissing("uv is not installed: reinstall PoolNet (it ships uv)") from None
        return found


def run_uv(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``uv ARGS`` to the end (blocking) and return it, whatever its exit status;
    ``EnvironmentFailure`` when it cannot run or hangs. ``--no-progress`` keeps its error
    output to what went wrong."""
    try:
        return subprocess.run(
            [uv_binary(), *args, "--no-progress"], cwd=cwd, capture_output=True, text=True,
            timeout=UV_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"uv {args[0]} took longer than {UV_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise EnvironmentFailure(f"uv cannot run: {exc.strerror or exc}") from None


def this_platform_target() -> str | None:
    """This machine as a uv target (``x86_64-manylinux_2_36``), or None where unsupported."""
    glibc: tuple[int, int] | None = None
    if sys.platform.startswith("linux"):
        name, version = platform.libc_ver()
        parts = version.split(".")
        if name == "glibc" and len(parts) >= 2 and all(p.isdigit() for p in parts[:2]):
            glibc = (int(parts[0]), int(parts[1]))
    return platform_target(sys.platform, platform.machine(), glibc)


def this_python() -> str:
    """This interpreter's ``major.minor``: the default Python of a task's environment."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
