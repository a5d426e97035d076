"""A task's Python environment: built on first use vs reused (issue 16: reuse must add under
50 ms to a shard's start).

1. Resolve the requirements as a submitter does (``load_task``): by default two tiny wheels
   built here with ``uv build`` (no index needed); ``--requirement numpy --index-url URL``
   measures a real package from an index instead.
2. First use: the member's ``EnvironmentCache.acquire`` builds the environment from the
   wheels (``uv venv`` + ``uv pip install --offline --no-index``, bytecode compiled).
3. Reuse: ``acquire`` again, N times (the cost of a hit).
4. A shard's start: ``{python} -c pass`` run N times in the member's sandbox (bwrap where
   it can be made) with PoolNet's own interpreter and with the environment's (acquire
   included), medians side by side; the difference is what the environment adds.

    .venv/bin/python benchmarks/bench_env.py [--shards 30] [--hits 1000]
        [--requirement numpy --index-url file:///path/to/simple]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poolnet_desktop.runtime.client.env_resolve import ResolveOptions  # noqa: E402
from poolnet_desktop.runtime.client.task_files import LoadedTask, load_task  # noqa: E402
from poolnet_desktop.runtime.member.environments import EnvironmentCache  # noqa: E402
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec  # noqa: E402
from poolnet_desktop.runtime.member.sandbox import Sandbox, probe  # noqa: E402
from poolnet_desktop.runtime.uv_tool import run_uv  # noqa: E402


def tiny_wheels(root: Path) -> Path:
    wheels = root / "wheels"
    for name, needs in (("benchb", "[]"), ("bencha", '["benchb"]')):
        folder = root / name
        (folder / "src" / name).mkdir(parents=True)
        (folder / "src" / name / "__init__.py").write_text("VALUE = 1\n")
        (folder / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = {needs}\n'
            '[build-system]\nrequires = ["uv_build>=0.5,<1"]\nbuild-backend = "uv_build"\n'
        )
        done = run_uv(["build", "--offline", "--wheel", "--quiet", "-o", str(wheels), str(folder)])
        if done.returncode != 0:
            raise SystemExit(done.stderr)
    return wheels


def load(root: Path, requirement: str, options: ResolveOptions) -> LoadedTask:
    task = root / "task"
    task.mkdir()
    (task / "job.pool.toml").write_text(f'command = ["{{python}}", "-c", "pass"]\nrequirements = ["{requirement}"]\n')
    return load_task(task, options)


async def shard_seconds(spec: ShardSpec) -> float:
    started = time.perf_counter()
    outcome = await ShardRunner(spec).run()
    if outcome.reason != "succeeded":
        raise SystemExit(f"the shard failed: {outcome.message}")
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-env-"))
    try:
        if args.index_url:
            os.environ["UV_INDEX_URL"] = args.index_url
            options = ResolveOptions()
            requirement = args.requirement
        else:
            options = ResolveOptions(find_links=(tiny_wheels(root),), no_index=True, offline=True)
            requirement = "bencha"
        began = time.perf_counter()
        loaded = load(root, requirement, options)
        resolve_s = time.perf_counter() - began
        wheels = [e for e in loaded.spec.files if e.path.endswith(".whl")]
        blobs = root / "blobs"
        blobs.mkdir()

        async def fetch(entries: object) -> None:  # the pool's transfer, here a local copy
            for entry in wheels:
                shutil.copyfile(loaded.local_path(entry), blobs / entry.sha256)

        cache = EnvironmentCache(root / "envs", blobs, limit=10 * 1000**3)
        assert loaded.spec.environment is not None
        began = time.perf_counter()
        ready = await cache.acquire(loaded.spec.environment, loaded.spec.files, fetch)
        build_s = time.perf_counter() - began
        cache.release(ready.key)

        began = time.perf_counter()
        for _ in range(args.hits):
            hit = await cache.acquire(loaded.spec.environment, loaded.spec.files, fetch)
            cache.release(hit.key)
        hit_us = (time.perf_counter() - began) / args.hits * 1e6

        available, why = probe()
        sandbox = Sandbox(network=False, hidden=(Path.home(), cache.root)) if available else None
        workdir = root / "work"
        workdir.mkdir()
        own, in_env = [], []
        for _ in range(args.shards):  # interleaved, so drifting load hits both alike
            own.append(await shard_seconds(ShardSpec(["{python}", "-c", "pass"], workdir, sandbox=sandbox)))
            began = time.perf_counter()
            hit = await cache.acquire(loaded.spec.environment, loaded.spec.files, fetch)
            spec = ShardSpec(["{python}", "-c", "pass"], workdir, sandbox=sandbox,
                             python=hit.interpreter, python_visible=hit.visible)
            await shard_seconds(spec)
            in_env.append(time.perf_counter() - began)
            cache.release(hit.key)
        own_ms, env_ms = statistics.median(own) * 1e3, statistics.median(in_env) * 1e3
        size_mb = cache.built()[0].size / 1e6

        print(f"requirement: {requirement} ({len(wheels)} wheel(s), {sum(w.size for w in wheels) / 1e6:.1f} MB)")
        print(f"sandbox: {'bwrap' if sandbox else 'none (' + why + ')'}")
        print(f"resolve at submission (uv pip compile): {resolve_s * 1e3:.0f} ms")
        print(f"first use, environment built: {build_s * 1e3:.0f} ms ({size_mb:.1f} MB on disk)")
        print(f"reuse, cache hit: {hit_us:.0f} us per acquire (mean of {args.hits})")
        print(f"shard start, PoolNet's Python: {own_ms:.1f} ms (median of {args.shards})")
        print(f"shard start, task environment (hit included): {env_ms:.1f} ms")
        print(f"added by the environment on reuse: {env_ms - own_ms:+.1f} ms (goal: under 50 ms)")
        print(f"first use vs reuse: {build_s * 1e3 / env_ms:.0f}x a reused shard start")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=30)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--requirement", default="numpy")
    parser.add_argument("--index-url", help="measure --requirement from this index (default: tiny local wheels)")
    asyncio.run(main(parser.parse_args()))
