"""Entry point of the frozen ``poolnet-desktop`` executable (the window).

The frozen-interpreter check comes before any app import: Qt and pyqtgraph would otherwise be
loaded for every task this machine runs.
"""

from poolnet_desktop.frozen import run_python_if_asked

run_python_if_asked()

from poolnet_desktop.app import main  # noqa: E402 - only after the check above

raise SystemExit(main())
