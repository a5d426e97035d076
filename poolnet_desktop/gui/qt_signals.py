"""``emit(signal, *args)``: emit a Qt signal from Python without corrupting ``True``.

PySide6 6.12.0 (the version pinned in this environment) returns ``True`` from
``SignalInstance.emit`` without taking a reference to it, so every emit from Python drops one
reference to the ``True`` singleton. After a few thousand emits its count reaches zero and the
interpreter aborts with "Fatal Python error: bool_dealloc" (seen here after 500 devices updated
three times). Signals emitted by Qt itself (clicks, timers) are not affected.

At import, a probe emits a private signal a few times and measures what ``True`` lost per emit;
``emit`` then gives exactly that many references back. With a fixed PySide6 the probe measures
zero and ``emit`` is a plain ``signal.emit``.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

_PROBE_EMITS = 16


class _Probe(QObject):
    fired = Signal()


def _references_lost_per_emit() -> int:
    """How many references to ``True`` one ``emit`` drops (0 on a correct PySide6)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBE_EMITS):
        probe.fired.emit()
    lost = before - sys.getrefcount(True)
    # Other threads can touch True meanwhile; only a whole multiple is believed.
    if lost > 0 and lost % _PROBE_EMITS == 0:
        per_emit = lost // _PROBE_EMITS
        _give_back(lost)
        return per_emit
    return 0


_incref = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_IncRef", ctypes.pythonapi))


def _give_back(count: int) -> None:
    for _ in range(count):
        _incref(True)


_LOST_PER_EMIT = _references_lost_per_emit()


def emit(signal: SignalInstance, *args: Any) -> None:
    """Emit ``signal`` with ``args``; use this instead of ``signal.emit(...)`` everywhere."""
    signal.emit(*args)
    if _LOST_PER_EMIT:
        _give_back(_LOST_PER_EMIT)
