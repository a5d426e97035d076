"""``poolnet_desktop.frozen``: the bundle's executable acting as ``python``. Run here through
this interpreter with the same flag, as a frozen bundle's entry point would receive it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from poolnet_desktop import frozen
from poolnet_desktop.runtime.member.runner import FROZEN_PYTHON_FLAG

ENTRY = "from poolnet_desktop.frozen import run_python_if_asked; run_python_if_asked(); print('app started')"


def as_frozen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The entry point's first line, then the flag and ``args``, in a fresh process."""
    return subprocess.run([sys.executable, "-c", ENTRY, frozen.FLAG, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def test_flag_matches_the_runner() -> None:
    assert frozen.FLAG == FROZEN_PYTHON_FLAG


def test_without_the_flag_the_app_starts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", ENTRY, "host"], capture_output=True, text=True, timeout=30)
    assert result.stdout == "app started\n"


def test_script_runs_as_main_with_its_folder_importable(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    script = tmp_path / "task.py"
    script.write_text("import sys, helper\nif __name__ == '__main__':\n    print(sys.argv, helper.VALUE)\n")
    result = as_frozen(str(script), "3", "8", cwd=Path("/"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{[str(script), '3', '8']} 42\n"


def test_exit_codes_and_tracebacks_match_python(tmp_path: Path) -> None:
    (tmp_path / "fails.py").write_text("def go():\n    raise ValueError('bad input')\ngo()\n")
    failed = as_frozen("fails.py", cwd=tmp_path)
    assert failed.returncode == 1
    assert "ValueError: bad input" in failed.stderr and "fails.py" in failed.stderr
    assert "app started" not in failed.stdout
    assert as_frozen("-c", "import sys; sys.exit(7)", cwd=tmp_path).returncode == 7


def test_module_and_code_forms(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text("import sys\nprint('tool', sys.argv[1:])\n")
    assert as_frozen("-m", "tool", "x", cwd=tmp_path).stdout == "tool ['x']\n"
    assert as_frozen("-c", "import sys; print(sys.argv)", "y", cwd=tmp_path).stdout == "['-c', 'y']\n"


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    for args in ((), ("-m",), ("-X", "dev", "task.py")):
        result = as_frozen(*args, cwd=tmp_path)
        assert result.returncode == 2 and frozen.FLAG in result.stderr, args
