"""Reading pickles a member sent back, without letting the member run code here.

Unpickling calls whatever callable the data names: a crafted result from any member of the pool
(a device that was let in, not one trusted with the submitter's own computer) could otherwise
run a command in the caller's process. ``loads`` allows only plain data: numbers, strings,
bytes, containers, the standard library's value types, numpy arrays and scalars, and the
built-in exceptions; anything else is refused with a ``PickleRefused`` naming the type, so a
caller can say what to return instead, or choose to trust the pool's members with this process.
"""

from __future__ import annotations

import builtins
import io
import pickle
from typing import Any

# module -> the names a pickle of plain data may ask for.
_VALUE_TYPES: dict[str, frozenset[str]] = {
    "builtins": frozenset({"complex", "set", "frozenset", "bytearray", "slice", "range"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "deque", "Counter"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "pathlib": frozenset({"PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}


class PickleRefused(pickle.UnpicklingError):
    """The pickle names something other than plain data."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name} is not plain data")
        self.type_name = f"{module}.{name}"


def _allowed(module: str, name: str) -> bool:
    if "." in name:  # pickle would follow the dots through attributes of an allowed name
        return False
    if name in _VALUE_TYPES.get(module, ()):
        return True
    if module == "builtins":  # the built-in exceptions, so a remote ValueError stays one
        found = getattr(builtins, name, None)
        return isinstance(found, type) and issubclass(found, BaseException)
    return module == "numpy.dtypes" and name.endswith("DType")  # numpy 2's dtype classes


def _bytearray_of(data: Any = b"", *args: Any) -> bytearray:
    """``bytearray`` of existing bytes only: ``bytearray(10**12)`` is a few bytes of pickle
    that would allocate a terabyte here."""
    if isinstance(data, int):
        raise PickleRefused("builtins", "bytearray of a size")
    return bytearray(data, *args)


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise PickleRefused(module, name)
        if (module, name) == ("builtins", "bytearray"):
            return _bytearray_of
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    """Unpickle ``data`` if it holds plain data only; else raise ``PickleRefused``."""
    return _PlainDataUnpickler(io.BytesIO(data)).load()
