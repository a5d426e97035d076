"""Lets a frozen (PyInstaller) PoolNet bundle act as its own Python interpreter.

A member that installed PoolNet from an installer has no Python beside it, yet tasks are ``.py``
scripts. In a frozen build ``runtime.member.runner.python_command()`` therefore starts the bundle's own
executable as ``EXE --poolnet-run-python SCRIPT ARGS...``. Each frozen entry point
(``packaging/entry_*.py``) calls :func:`run_python_if_asked` before importing anything else:
importing the CLI costs about 0.75 s and the window more, which every task start would pay.

Standard library only, for the same reason.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from collections.abc import Sequence

# Must equal runtime.member.runner.FROZEN_PYTHON_FLAG; tests/test_frozen.py holds the two together
# (importing the runner here would cost every task start its psutil and msgspec imports).
FLAG = "--poolnet-run-python"
USAGE = f"usage: {FLAG} (SCRIPT | -m MODULE | -c CODE) [ARG...]"


def run_python_if_asked(argv: Sequence[str] | None = None) -> None:
    """If ``argv[1]`` is :data:`FLAG`, run the rest as ``python`` would and exit; else return.

    The caller must call this first thing in an entry point, before the app's own imports.
    """
    argv = sys.argv if argv is None else argv
    if len(argv) >= 2 and argv[1] == FLAG:
        sys.exit(run_python(list(argv[2:])))


def run_python(args: list[str]) -> int:
    """Run ``python ARGS`` in this process; ``SCRIPT``, ``-m MODULE`` and ``-c CODE`` forms.

    Returns the exit code: 0, 1 after an uncaught exception (its traceback on stderr, as
    ``python`` prints it), 2 for bad arguments. ``sys.exit()`` in the script propagates.
    """
    if not args or (args[0] in ("-m", "-c") and len(args) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]  # runpy replaces argv[0] with the module's file
            sys.path.insert(0, os.getcwd())
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            sys.path.insert(0, "")
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif args[0].startswith("-"):
            print(f"unsupported option {args[0]!r}; {USAGE}", file=sys.stderr)
            return 2
        else:
            sys.argv = list(args)
            sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - python reports any uncaught exception
        # Print it ourselves rather than let it escape: a windowed bootloader (Windows, macOS)
        # would show an error dialog for an exception raised by a task script.
        traceback.print_exception(error)
        return 1
    return 0
