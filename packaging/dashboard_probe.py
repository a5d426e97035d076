"""Start PoolNet's desktop app, wait until its Dashboard has built and painted its tiles and
charts, report what it shows and exit.

Run it inside a bundle, so the installed app is what starts:
    /opt/poolnet/poolnet-desktop --poolnet-run-python dashboard_probe.py [poolnet-desktop options]
It prints ``dashboard tiles=N charts=M`` and exits 0 once the main window's dashboard is built
and painted. The charts are built in a Qt slot just after the window shows, so an exception
there (a bundled library that fails to load: the charts import pyqtgraph and numpy) reaches only
``sys.excepthook`` and leaves an empty dashboard: the probe prints that traceback and exits 1.
No dashboard within ``DEADLINE_MS``: exit 3.
"""

import os
import sys
import traceback
from types import TracebackType

import PySide6.QtWidgets as QtWidgets
from PySide6.QtCore import QTimer

DEADLINE_MS = 60_000
POLL_MS = 100


def _fail_on_any_exception(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    traceback.print_exception(kind, error, trace)
    sys.stderr.flush()
    os._exit(1)


def _report_dashboard_when_built() -> None:
    from poolnet_desktop.gui.main_window import MainWindow

    shown = [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if not shown or shown[0].charts is None or not shown[0].charts.isVisible():
        return  # not built yet, or built but not yet shown (Qt shows a new child a turn later)
    import pyqtgraph

    window, charts = shown[0], shown[0].charts
    charts.grab()  # paints every tile and plot, as a screen would
    tiles = [tile for tile in charts.tiles.values() if tile.isVisibleTo(window)]
    plots = charts.findChildren(pyqtgraph.PlotWidget)
    print(f"dashboard tiles={len(tiles)} charts={len(plots)}", flush=True)
    os._exit(0)


def _give_up() -> None:
    print(f"no dashboard within {DEADLINE_MS / 1000:.0f} s", file=sys.stderr, flush=True)
    os._exit(3)


class _ProbingApplication(QtWidgets.QApplication):
    """The app's QApplication, with the probe's timers started as soon as it exists."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._poll = QTimer(self)
        self._poll.timeout.connect(_report_dashboard_when_built)
        self._poll.start(POLL_MS)
        QTimer.singleShot(DEADLINE_MS, _give_up)


sys.excepthook = _fail_on_any_exception
QtWidgets.QApplication = _ProbingApplication

from poolnet_desktop.app import main  # noqa: E402 - must see the patched QApplication

sys.exit(main(sys.argv[1:]))
