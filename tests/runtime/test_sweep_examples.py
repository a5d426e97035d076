"""The shipped examples that need third-party packages: the numpy Monte Carlo sweep over a
``[matrix]`` and the Pillow image batch.

Both manifests ask for their packages with ``requirements``, a key this branch's manifest
reader does not know yet (it comes with the environments work, issue 16 item 1): until then
the manifests are loaded without that line. A shard runs here only when its package is
importable by PoolNet's own Python, as a member without environments would run it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import py_compile
import shutil
import tomllib
from pathlib import Path

import pytest

from poolnet_desktop.core.matrix import shard_values
from poolnet_desktop.runtime.client.task_files import LoadedTask, load_task
from tests.runtime.test_task_files import EXAMPLES, run_shards


def load_without_requirements(example: str, work: Path) -> tuple[LoadedTask, list[str]]:
    """The example's task as this branch can load it, and the packages it asks for."""
    folder = EXAMPLES / example
    manifest = folder / f"{example}.pool.toml"
    requirements = tomllib.loads(manifest.read_text())["requirements"]
    copy = work / example
    shutil.copytree(folder, copy)
    lines = manifest.read_text().splitlines(keepends=True)
    (copy / manifest.name).write_text("".join(l for l in lines if not l.startswith("requirements")))
    return load_task(copy), requirements


def test_montecarlo_sweeps_volatility_by_seed(tmp_path: Path) -> None:
    loaded, requirements = load_without_requirements("montecarlo", tmp_path)
    assert requirements == ["numpy"]
    assert loaded.spec.shards == 9
    grid = list(itertools.product((0.1, 0.2, 0.4), (1, 2, 3)))
    assert [tuple(shard_values(loaded.spec.matrix, n).values()) for n in range(9)] == grid
    if importlib.util.find_spec("numpy") is None:
        pytest.skip("numpy is not importable here: the shards cannot run without environments")
    for shard, folder in zip([0, 8], run_shards(loaded, [0, 8], tmp_path / "run")):
        result = json.loads((folder / "out" / f"shard-{shard}.json").read_text())
        assert (result["volatility"], result["seed"]) == grid[shard]
        # Within six standard errors of the exact price: a fixed seed makes this certain.
        assert abs(result["estimate"] - result["exact"]) < 6 * result["standard_error"]
        assert result["standard_error"] < 0.05


def test_thumbnails_is_a_four_shard_pillow_batch(tmp_path: Path) -> None:
    loaded, requirements = load_without_requirements("thumbnails", tmp_path)
    assert requirements == ["pillow"]
    assert (loaded.spec.shards, loaded.spec.outputs) == (4, ("out/*.jpg", "out/*.json"))
    py_compile.compile(str(EXAMPLES / "thumbnails" / "thumbnails.py"), doraise=True,
                       cfile=str(tmp_path / "thumbnails.pyc"))
    if importlib.util.find_spec("PIL") is None:
        pytest.skip("Pillow is not importable here: the shards cannot run without environments")
    folders = run_shards(loaded, [0, 3], tmp_path / "run")
    for shard, folder in zip([0, 3], folders):
        summary = json.loads((folder / "out" / f"shard-{shard}.json").read_text())
        assert [p["picture"] for p in summary] == list(range(shard, 24, 4))
        for picture in summary:
            assert picture["size"] == [2400, 1600] and picture["thumbnail"] == [256, 171]
            assert (folder / "out" / f"thumb-{picture['picture']:02d}.jpg").stat().st_size > 0
