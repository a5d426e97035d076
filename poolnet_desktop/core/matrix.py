"""Parameter sweeps: a manifest's ``[matrix]`` of value lists, one shard per combination.

``rate = [0.1, 0.2]`` and ``seed = [1, 2, 3]`` make six shards, as HTCondor's
``queue rate, seed from ...``. The combinations run in a fixed order: the cartesian product of
the axes in the order the manifest names them, the last axis changing fastest, so shard 0 is
``rate=0.1, seed=1``, shard 1 ``rate=0.1, seed=2`` and shard 3 ``rate=0.2, seed=1``.

Nothing per shard travels: a member works out its shard's values from the shard index and the
task's axes (``shard_values``), and so do ``poolnet tasks`` and the window. Each value reaches
the shard twice: as ``{name}`` in the command (``core.manifest.expand_command``) and as the
variable ``POOLNET_PARAM_NAME`` (``param_env``).

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

import msgspec

MAX_AXES = 32
MAX_AXIS_VALUES = 10_000
MAX_VALUE_LENGTH = 4096
PARAM_ENV_PREFIX = "POOLNET_PARAM_"
# Placeholders PoolNet fills itself (``core.manifest``); an axis may not take their name.
RESERVED_NAMES = frozenset({"python", "shard", "shards"})

MatrixValue = bool | int | float | str
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MatrixAxis(msgspec.Struct, frozen=True, array_like=True):
    """One swept parameter: ``[name, [values...]]`` on the wire. Checked again when decoded,
    so an axis from the network is as safe as one read from a manifest."""

    name: str
    values: Annotated[tuple[MatrixValue, ...], msgspec.Meta(min_length=1, max_length=MAX_AXIS_VALUES)]

    def __post_init__(self) -> None:
        check_axis_name(self.name)
        if not 1 <= len(self.values) <= MAX_AXIS_VALUES:
            raise ValueError(f"matrix {self.name}: give 1 to {MAX_AXIS_VALUES} values")
        for value in self.values:
            check_value(self.name, value)


def check_axis_name(name: str) -> None:
    """An axis name is an identifier (it becomes ``{name}`` and ``POOLNET_PARAM_NAME``) and not
    one of PoolNet's own placeholders."""
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"matrix name {name!r} must be an identifier: letters, digits and '_', "
            "not starting with a digit, at most 64"
        )
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"matrix name {name!r} is taken by PoolNet's {{{name.lower()}}}")


def check_value(name: str, value: object) -> None:
    """A value is a string, a whole number, a finite number or a boolean."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"matrix {name}: {value} is not a finite number")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"matrix {name}: a value contains a NUL character")
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"matrix {name}: a value is longer than {MAX_VALUE_LENGTH} characters")
    elif not isinstance(value, (bool, int, float)):
        raise ValueError(f"matrix {name}: values must be strings, numbers or booleans")


def check_matrix(axes: Sequence[MatrixAxis]) -> None:
    """At most ``MAX_AXES`` axes whose names differ even ignoring case (two names that
    differ only in case would set the same ``POOLNET_PARAM_`` variable)."""
    if len(axes) > MAX_AXES:
        raise ValueError(f"a matrix has at most {MAX_AXES} names, not {len(axes)}")
    seen: dict[str, str] = {}
    for axis in axes:
        clash = seen.setdefault(axis.name.upper(), axis.name)
        if clash != axis.name:
            raise ValueError(f"matrix names {clash!r} and {axis.name!r} differ only in case")


def combinations(axes: Iterable[MatrixAxis]) -> int:
    """How many shards the matrix makes: the product of its axes' lengths (1 for none)."""
    return math.prod(len(axis.values) for axis in axes)


def shard_values(axes: Sequence[MatrixAxis], shard: int) -> dict[str, MatrixValue]:
    """The values of shard ``shard``: its combination, in the module docstring's order."""
    total = combinations(axes)
    if not 0 <= shard < total:
        raise ValueError(f"shard {shard} out of range 0..{total - 1}")
    values: dict[str, MatrixValue] = {}
    rest = shard
    for axis in reversed(axes):
        rest, position = divmod(rest, len(axis.values))
        values[axis.name] = axis.values[position]
    return {axis.name: values[axis.name] for axis in axes}


def format_value(value: MatrixValue) -> str:
    """A value as the command and the environment get it: booleans as TOML writes them
    (``true``), numbers in their shortest exact form (``0.1``, ``2.0``, ``3``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, str) else repr(value)


def param_env(values: Mapping[str, MatrixValue]) -> dict[str, str]:
    """The shard's ``POOLNET_PARAM_NAME`` variables (name upper-cased)."""
    return {PARAM_ENV_PREFIX + name.upper(): format_value(value) for name, value in values.items()}


def describe_values(values: Mapping[str, MatrixValue]) -> str:
    """``rate=0.1 seed=2``: a shard's values in one line, for lists and the window."""
    return " ".join(f"{name}={format_value(value)}" for name, value in values.items())
