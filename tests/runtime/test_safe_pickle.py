"""A member's pickled result is read as plain data only: it cannot run code in the caller."""

from __future__ import annotations

import datetime
import decimal
import os
import pickle
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest

from poolnet_desktop.runtime.client.safe_pickle import PickleRefused, loads


class RunsACommand:
    """What a hostile member would put in its result: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class CallersOwnValue:
    pass


def test_plain_data_comes_back_as_it_went() -> None:
    value = {
        "numbers": [1, 2.5, 3 + 4j, True, None],
        "text": ("é", b"\x00\xff", bytearray(b"ab")),
        "sets": ({1, 2}, frozenset({"a"})),
        "ordered": OrderedDict(a=1), "counted": Counter("aab"),
        "when": datetime.datetime(2026, 12, 5, 19, 0, tzinfo=datetime.timezone.utc),
        "money": decimal.Decimal("1.10"),
        "error": ValueError("bad input"),
    }
    back = loads(pickle.dumps(value, protocol=5))
    assert {k: v for k, v in back.items() if k != "error"} == {k: v for k, v in value.items() if k != "error"}
    assert isinstance(back["error"], ValueError) and back["error"].args == ("bad input",)


def test_numpy_arrays_and_scalars_come_back() -> None:
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    back = loads(pickle.dumps({"a": array, "s": np.int32(7), "o": np.array([1, "x"], dtype=object)}, protocol=5))
    assert np.array_equal(back["a"], array) and back["a"].dtype == np.float64
    assert back["s"] == 7 and back["s"].dtype == np.int32
    assert list(back["o"]) == [1, "x"]


def test_a_crafted_result_cannot_run_a_command(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    crafted = pickle.dumps([1, RunsACommand(marker)])
    with pytest.raises(PickleRefused) as refused:
        loads(crafted)
    assert refused.value.type_name in ("posix.system", "os.system", "nt.system")
    assert not marker.exists()
    pickle.loads(crafted)  # the same bytes through pickle itself: the command runs
    assert marker.exists()


def test_other_classes_are_refused_by_name() -> None:
    with pytest.raises(PickleRefused, match="CallersOwnValue"):
        loads(pickle.dumps(CallersOwnValue()))
    with pytest.raises(PickleRefused, match="builtins.eval"):
        loads(b"cbuiltins\neval\n(S'1+1'\ntR.")


def test_a_tiny_pickle_cannot_allocate_a_huge_buffer() -> None:
    """A member's few bytes of pickle that would allocate a terabyte here
    (``bytearray(10**12)``) are refused before anything is made; bytes still come back."""
    with pytest.raises(PickleRefused, match="bytearray"):
        loads(b"cbuiltins\nbytearray\n(L1000000000000L\ntR.")
    assert loads(pickle.dumps(bytearray(b"ok"), protocol=5)) == bytearray(b"ok")
