"""Entry point of the frozen ``poolnet`` executable (the command line).

The frozen-interpreter check comes before any app import so a task start does not pay for them.
"""

from poolnet_desktop.frozen import run_python_if_asked

run_python_if_asked()

from poolnet_desktop.cli import main  # noqa: E402 - only after the check above

raise SystemExit(main())
