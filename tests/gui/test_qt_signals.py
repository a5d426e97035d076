"""qt_signals.emit: many emits from Python leave ``True``'s reference count where it was."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from poolnet_desktop.gui.qt_signals import emit


class Source(QObject):
    changed = Signal(str)


def test_emit_delivers_and_keeps_true_alive() -> None:
    source = Source()
    got: list[str] = []
    source.changed.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(5000):
        emit(source.changed, f"id-{i}")
    # Without the fix, PySide6 6.12.0 drops 5,000 references to True here (and, past its
    # count, aborts the interpreter).
    assert abs(sys.getrefcount(True) - before) < 50
    assert len(got) == 5000 and got[-1] == "id-4999"
