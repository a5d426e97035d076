"""The installed Qt binding must not leak the interpreter's singletons (see conftest)."""

from __future__ import annotations

from tests.gui.conftest import BINDING_DEFECT


def test_qt_binding_keeps_reference_counts() -> None:
    assert BINDING_DEFECT is None, BINDING_DEFECT
