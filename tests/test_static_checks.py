"""The static checks run with the suite, so the README's test command (and CI) fails on a type
error or on an import that breaks the layers, like any other failing test.

Both tools read their settings from pyproject.toml (``[tool.mypy]``, ``[tool.importlinter]``)
and write no cache into the work tree. Each runs in a process of its own: mypy imports nothing
it checks, and import-linter must see the package as installed, not as this process loaded it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop, which the runtime imports where it exists, has no "
                    "Windows build: mypy checks the Linux view (platform = linux), on Linux and macOS")
def test_the_package_type_checks_with_mypy(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_imports_keep_to_the_layers() -> None:
    lint_imports = shutil.which("lint-imports", path=sysconfig.get_path("scripts"))
    assert lint_imports is not None, "import-linter is part of the test extra: pip install -e '.[test]'"
    result = _run([lint_imports, "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


# Python's Unix-only modules the member's lane code uses: a member on Windows (unsandboxed, no
# lanes) must still import it. Played here by faking the platform once the stdlib is loaded.
WINDOWS_IMPORT = """
import asyncio, selectors, shutil, signal, socket, subprocess, sys
import psutil
for name in ("fcntl", "termios", "resource"):
    sys.modules[name] = None
sys.platform = "win32"
import poolnet_desktop.runtime.member.task_executor
"""


def test_the_member_imports_where_unix_only_modules_are_missing() -> None:
    """The lanes' launcher and pipes (fcntl, termios, resource) broke the member's import on
    Windows, where those modules do not exist."""
    result = _run([sys.executable, "-c", WINDOWS_IMPORT])
    assert result.returncode == 0, result.stderr
