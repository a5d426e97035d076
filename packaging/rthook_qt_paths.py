"""Run-time hook that takes the place of PyInstaller's ``pyi_rth_pyside6``.

That hook imports ``PySide6.QtCore`` at every start, 0.5 s here, to write a ``qt.conf`` that
PySide6's wheels do not need (the bundle keeps the wheel's layout, so Qt finds its prefix next
to its own library). Every task script the bundle runs as its own Python would pay it, and so
would the headless ``poolnet``. What stays: pointing Qt at the bundle's plugins.
"""

import os
import sys


def _point_qt_at_plugins() -> None:
    qt_dir = ("PySide6",) if sys.platform == "win32" else ("PySide6", "Qt")
    os.environ["QT_PLUGIN_PATH"] = os.path.join(sys._MEIPASS, *qt_dir, "plugins")


_point_qt_at_plugins()
del _point_qt_at_plugins
