"""Parameter sweeps: ``[matrix]`` in a manifest, one shard per combination, and each shard's
values in its command and environment."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.manifest import (
    MAX_SHARDS,
    ManifestError,
    TaskSpec,
    expand_command,
    parse_manifest,
)
from poolnet_desktop.core.matrix import (
    MatrixAxis,
    describe_values,
    param_env,
    shard_values,
)

SWEEP = b"""
command = ["{python}", "mc.py", "--rate", "{rate}", "--seed={seed}", "{shard}/{shards}"]
[matrix]
rate = [0.1, 0.2, 0.4]
seed = [1, 2, 3]
"""


def test_one_shard_per_combination_in_a_stable_order() -> None:
    spec = parse_manifest(SWEEP, "mc.pool.toml").spec
    assert spec.shards == 9
    assert spec.matrix == (MatrixAxis("rate", (0.1, 0.2, 0.4)), MatrixAxis("seed", (1, 2, 3)))
    got = [shard_values(spec.matrix, shard) for shard in range(spec.shards)]
    # The last axis changes fastest: what itertools.product and HTCondor's queue give.
    assert got == [{"rate": r, "seed": s} for r, s in itertools.product((0.1, 0.2, 0.4), (1, 2, 3))]


def test_each_shard_sees_its_values_in_the_command_and_as_variables() -> None:
    spec = parse_manifest(SWEEP, "mc.pool.toml").spec
    values = shard_values(spec.matrix, 5)
    assert expand_command(spec.command, 5, spec.shards, values) == [
        "{python}", "mc.py", "--rate", "0.2", "--seed=3", "5/9"
    ]
    assert param_env(values) == {"POOLNET_PARAM_RATE": "0.2", "POOLNET_PARAM_SEED": "3"}
    assert describe_values(values) == "rate=0.2 seed=3"


def test_strings_ints_floats_and_booleans_keep_their_type_and_read_as_toml_writes_them() -> None:
    spec = parse_manifest(b"""
        command = ["run", "{mode}", "{n}", "{x}", "{fast}"]
        [matrix]
        mode = ["a b", "c"]
        n = [3]
        x = [2.0, 1e-3]
        fast = [true, false]
    """, "t.pool.toml").spec
    assert spec.shards == 8
    last = shard_values(spec.matrix, 7)
    assert last == {"mode": "c", "n": 3, "x": 1e-3, "fast": False}
    assert type(last["n"]) is int and type(last["fast"]) is bool
    assert expand_command(spec.command, 0, 8, shard_values(spec.matrix, 0)) == [
        "run", "a b", "3", "2.0", "true"
    ]
    assert param_env(last)["POOLNET_PARAM_X"] == "0.001"


def test_expansion_is_one_pass_over_known_names_only() -> None:
    """A value holding ``{shard}`` stays as it is; JSON and unknown braces pass through."""
    values = {"tag": "{shard}", "n": 1}
    got = expand_command(['{"k": {n}}', "{tag}", "{other}", "{shard}"], 2, 3, values)
    assert got == ['{"k": 1}', "{shard}", "{other}", "2"]


def test_the_matrix_survives_the_wire_and_is_checked_again_there() -> None:
    spec = parse_manifest(SWEEP, "mc.pool.toml").spec
    assert msgspec.json.decode(msgspec.json.encode(spec), type=TaskSpec) == spec
    wire = msgspec.to_builtins(spec)
    for bad in (
        {**wire, "shards": 8},  # does not match the combinations
        {**wire, "matrix": [["shard", [1]]], "shards": 1},  # PoolNet's own placeholder
        {**wire, "matrix": [["rate", []]], "shards": 1},
        {**wire, "matrix": [["a", [1]], ["A", [2]]], "shards": 1},  # same variable
        {**wire, "matrix": [["x", ["a\x00"]]], "shards": 1},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(bad), type=TaskSpec)


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        (b"shards = 4\n[matrix]\nseed = [1, 2]", "shards", "add an axis such as seed"),
        (b"[matrix]\n'2x' = [1]", "matrix.2x", "identifier"),
        (b"[matrix]\nrate-x = [1]", "matrix.rate-x", "identifier"),
        (b"[matrix]\nshards = [1, 2]", "matrix.shards", "taken by PoolNet"),
        (b"[matrix]\nPython = [1]", "matrix.Python", "taken by PoolNet"),
        (b"[matrix]\nrate = []", "matrix.rate", "non-empty list"),
        (b"[matrix]\nrate = 0.1", "matrix.rate", "non-empty list"),
        (b"[matrix]\nrate = [[0.1]]", "matrix.rate", "strings, numbers or booleans"),
        (b"[matrix]\nrate = [{a = 1}]", "matrix.rate", "strings, numbers or booleans"),
        (b"[matrix]\nrate = [nan]", "matrix.rate", "finite"),
        (b"[matrix]\nrate = [1]\nRATE = [2]", "matrix", "differ only in case"),
        (b"matrix = 3", "matrix", "must be a table"),
        (b"[matrix]", "matrix", "is empty"),
    ],
)
def test_bad_matrices_are_refused_naming_the_key(body: bytes, key: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(b'command = ["run"]\n' + body, "m.pool.toml")
    assert caught.value.key == key
    assert fragment in caught.value.message


def test_too_many_combinations_are_refused_with_the_product() -> None:
    body = b'command = ["run"]\n[matrix]\na = [%s]\nb = [%s]' % (
        ", ".join(map(str, range(400))).encode(), ", ".join(map(str, range(300))).encode()
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(body, "m.pool.toml")
    assert caught.value.message == f"makes 400 x 300 = 120000 shards, more than {MAX_SHARDS}"


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_every_combination_exactly_once(sizes: list[int]) -> None:
    axes = [MatrixAxis(f"a{i}", tuple(range(size))) for i, size in enumerate(sizes)]
    total = 1
    for size in sizes:
        total *= size
    seen = [tuple(shard_values(axes, shard).values()) for shard in range(total)]
    assert seen == list(itertools.product(*(range(size) for size in sizes)))
    with pytest.raises(ValueError):
        shard_values(axes, total)
