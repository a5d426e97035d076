"""Tasks that bring their own Python packages (issue 16), end to end with real parts: real
``uv``, real wheels built here from tiny local projects, a real pool host and member on
127.0.0.1, shards in the real bwrap sandbox. No index and no network: the submitter resolves
from a local folder of wheels (``--no-index --offline``), the member installs only what was
shipped through the pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from poolnet_desktop.runtime.client.env_resolve import ResolveOptions
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.client.task_files import LoadedTask, TaskFileError, for_platforms, load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.environments import MARKER, EnvironmentCache, ReadyEnvironment
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.member.sandbox import probe
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.uv_tool import run_uv, this_platform_target
from tests.runtime.conftest import PAIRING_CODE

# What each shard prints: where its interpreter lives, what it imported, what it sees.
PROBE = """
import json, os, sys
import tinya
envs = os.path.dirname(sys.prefix)
try:
    open(os.path.join(sys.prefix, "planted.pth"), "w").write("import os; os.system('id')")
    wrote = True
except OSError:
    wrote = False
print(json.dumps({"value": tinya.VALUE, "prefix": sys.prefix, "envs": sorted(os.listdir(envs)),
                  "wrote": wrote, "here": sorted(os.listdir("."))}))
"""


def make_project(root: Path, name: str, version: str, body: str, needs: list[str]) -> Path:
    """A minimal pyproject project built with uv's own backend (no download needed)."""
    folder = root / f"{name}-{version}"
    (folder / "src" / name).mkdir(parents=True)
    (folder / "src" / name / "__init__.py").write_text(body)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "{name}"
        version = "{version}"
        dependencies = {json.dumps(needs)}
        [build-system]
        requires = ["uv_build>=0.5,<1"]
        build-backend = "uv_build"
    """))
    return folder


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real wheels: ``tinya`` (needs ``tinyb>=2``), ``tinyb`` and ``lonely``."""
    root = tmp_path_factory.mktemp("projects")
    wheels = root / "wheels"
    for name, version, body, needs in [
        ("tinya", "1.0", "VALUE = 42\n", ["tinyb>=2"]),
        ("tinyb", "2.1", "B = 1\n", []),
        ("lonely", "0.1", "VALUE = 7\n", []),
    ]:
        project = make_project(root, name, version, body, needs)
        done = run_uv(["build", "--offline", "--wheel", "--quiet", "-o", str(wheels), str(project)])
        assert done.returncode == 0, done.stderr
    return wheels


def offline(wheels: Path, **overrides: object) -> ResolveOptions:
    return ResolveOptions(find_links=(wheels,), no_index=True, offline=True, **overrides)  # type: ignore[arg-type]


def task_folder(root: Path, requirements: list[str], shards: int = 1, script: str = PROBE) -> Path:
    root.mkdir(parents=True)
    (root / "probe.py").write_text(script)
    (root / "job.pool.toml").write_text(textwrap.dedent(f"""
        command = ["{{python}}", "probe.py"]
        files = ["probe.py"]
        shards = {shards}
        requirements = {json.dumps(requirements)}
    """))
    return root


@pytest.fixture
async def member(pool: PoolHost, tmp_path: Path) -> AsyncIterator[Member]:
    async for joined in join(pool, tmp_path):
        yield joined


@pytest.fixture
async def member_caching_outside_home(
    pool: PoolHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Member]:
    """A member whose cache (work root and environments) is neither under the home nor
    under /tmp, both hidden from shards anyway: there only PoolNet's own hiding counts."""
    cache = Path(tempfile.mkdtemp(prefix="poolnet-test-cache-", dir="/var/cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    try:
        async for joined in join(pool, tmp_path):
            yield joined
    finally:
        shutil.rmtree(cache, ignore_errors=True)


async def join(pool: PoolHost, tmp_path: Path) -> AsyncIterator[Member]:
    joined = Member(MemberOptions(
        url=pool.local_url, data_dir=resolve_data_dir(tmp_path / "member"), name="alpha",
        code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    running = asyncio.create_task(joined.run())
    async with asyncio.timeout(20):
        while joined.agent.config.device_id not in pool.tasks._members:
            await asyncio.sleep(0.05)
    yield joined
    await joined.stop()
    await running



def shipped(tmp_path: Path, *tasks: LoadedTask) -> tuple[Path, Callable[[object], Awaitable[None]]]:
    """A blob folder and a fetch that fills it with the tasks' files, as a member fetches them."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()

    async def fetch(entries: object) -> None:
        for loaded in tasks:
            for entry in loaded.spec.files:
                shutil.copyfile(loaded.local_path(entry), blobs / entry.sha256)

    return blobs, fetch


async def built(loaded: LoadedTask, tmp_path: Path) -> tuple[EnvironmentCache, ReadyEnvironment, Path]:
    """``loaded``'s environment built in a cache of its own, outside any pool; and the blob
    folder its files were fetched into."""
    assert loaded.spec.environment is not None
    blobs, fetch = shipped(tmp_path, loaded)
    cache = EnvironmentCache(tmp_path / "envs", blobs, limit=10**10)
    return cache, await cache.acquire(loaded.spec.environment, loaded.spec.files, fetch), blobs


async def run_task(client: TaskClient, folder: Path, options: ResolveOptions) -> tuple[str, list[dict]]:
    """Submit, wait, and return the end state with each shard's printed JSON."""
    loaded = await asyncio.to_thread(load_task, folder, options)
    task_id = await client.submit(loaded)
    summary = await client.wait(task_id)
    lines: list[str] = []
    await client.logs(task_id, lambda out: lines.append(out.data))
    printed = [json.loads(line) for line in "".join(lines).splitlines() if line.startswith("{")]
    return summary.state, printed


needs_sandbox = pytest.mark.skipif(not probe()[0], reason="no bwrap sandbox here")


@needs_sandbox
async def test_the_first_shard_builds_the_environment_and_later_ones_reuse_it(
    pool: PoolHost, member: Member, client: TaskClient, wheelhouse: Path, tmp_path: Path
) -> None:
    state, printed = await run_task(client, task_folder(tmp_path / "one", ["tinya"], shards=3),
                                    offline(wheelhouse))
    assert state == "succeeded"
    assert [p["value"] for p in printed] == [42, 42, 42]
    # Three shards, one environment, built once; the wheels never landed in a shard's folder.
    cache = member.executor.environments
    assert len(cache.built()) == 1
    assert {p["prefix"] for p in printed} == {str(cache.root / cache.built()[0].key)}
    assert all(p["here"] == ["probe.py"] for p in printed)

    before = cache.built()[0]
    state, again = await run_task(client, task_folder(tmp_path / "two", ["tinya"]), offline(wheelhouse))
    assert state == "succeeded" and again[0]["prefix"] == printed[0]["prefix"]
    after = cache.built()
    assert [e.key for e in after] == [before.key] and after[0].last_used >= before.last_used


@needs_sandbox
async def test_an_offline_member_installs_only_from_the_wheels_shipped_through_the_pool(
    pool: PoolHost, member: Member, client: TaskClient, wheelhouse: Path, tmp_path: Path
) -> None:
    """The member's uv runs with no index, no configuration and ``--offline``; the
    submitter's own wheel folder is deleted once the task is submitted: the environment can
    only come from the wheels the pool shipped into the member's content-addressed cache."""
    own_wheels = tmp_path / "submitter-wheels"
    shutil.copytree(wheelhouse, own_wheels)
    loaded = await asyncio.to_thread(load_task, task_folder(tmp_path / "job", ["tinya"]), offline(own_wheels))
    task_id = await client.submit(loaded)
    shutil.rmtree(own_wheels)
    summary = await client.wait(task_id)
    assert summary.state == "succeeded"
    shipped = {entry.sha256 for entry in loaded.spec.files if entry.path.endswith(".whl")}
    assert len(shipped) == 2  # tinya and the tinyb it needs
    assert shipped <= {path.name for path in member.executor.cache.iterdir()}


def test_a_missing_package_fails_the_submission_with_its_name_and_platform(
    wheelhouse: Path, tmp_path: Path
) -> None:
    folder = task_folder(tmp_path / "job", ["tinya", "nosuchpackage>=1"])
    with pytest.raises(TaskFileError) as caught:
        load_task(folder, offline(wheelhouse, targets=("x86_64-manylinux_2_28",)))
    assert "'nosuchpackage' is not available for x86_64-manylinux_2_28" in str(caught.value)
    assert caught.value.key == "requirements"


def test_a_package_with_only_source_code_is_refused_at_submission(tmp_path: Path) -> None:
    """Building an sdist runs its code: members never do it, the submitter is told so."""
    project = make_project(tmp_path, "sourceonly", "1.0", "X = 1\n", [])
    done = run_uv(["build", "--offline", "--sdist", "--quiet", "-o", str(tmp_path / "sdists"), str(project)])
    assert done.returncode == 0, done.stderr
    with pytest.raises(TaskFileError, match="'sourceonly' has no wheel for .*only source code"):
        load_task(task_folder(tmp_path / "job", ["sourceonly"]), offline(tmp_path / "sdists"))


@needs_sandbox
async def test_a_member_of_another_platform_fails_the_shard_naming_it(
    pool: PoolHost, member: Member, client: TaskClient, wheelhouse: Path, tmp_path: Path
) -> None:
    folder = task_folder(tmp_path / "job", ["lonely"], script="import lonely\n")
    loaded = await asyncio.to_thread(load_task, folder, offline(wheelhouse, targets=("aarch64-apple-darwin",)))
    task_id = await client.submit(loaded)
    summary = await client.wait(task_id)
    shards = await client.shards(task_id)
    assert summary.state == "failed"
    reasons = {s.reason for s in shards}
    assert any("no wheels for this member's platform" in r and "aarch64-apple-darwin" in r
               for r in reasons), reasons


@needs_sandbox
async def test_a_shard_cannot_change_its_environment_nor_see_other_tasks_environments(
    pool: PoolHost, member_caching_outside_home: Member, client: TaskClient, wheelhouse: Path,
    tmp_path: Path,
) -> None:
    """The attack: plant a ``.pth`` file (code every later shard of any task using this
    environment would run at start) and look at the other environments on the member."""
    member = member_caching_outside_home
    state, _ = await run_task(client, task_folder(tmp_path / "other", ["lonely"],
                                                  script="import lonely\n"), offline(wheelhouse))
    assert state == "succeeded"
    state, printed = await run_task(client, task_folder(tmp_path / "attack", ["tinya"]), offline(wheelhouse))
    assert state == "succeeded"
    cache = member.executor.environments
    assert len(cache.built()) == 2
    own = Path(printed[0]["prefix"]).name
    assert printed[0]["wrote"] is False
    assert not (cache.root / own / "planted.pth").exists()
    assert printed[0]["envs"] == [own]



@needs_sandbox
async def test_a_submitter_cannot_make_a_member_read_its_files_through_the_requirements(
    pool: PoolHost, member: Member, client: TaskClient, wheelhouse: Path, tmp_path: Path
) -> None:
    """The attack: a hand-made spec whose requirement line includes a file of the member's
    (``-r PATH``); were the member's uv to read the requirements, the file's first line would
    come back in the shard's failure reason. The member installs the shipped wheel files
    only: the line is never read, and the secret goes nowhere."""
    secret = tmp_path / "member-secret.txt"
    secret.write_text("topsecret-token-0123\n")
    loaded = await asyncio.to_thread(load_task, task_folder(tmp_path / "job", ["tinya"]), offline(wheelhouse))
    assert loaded.spec.environment is not None
    forged = msgspec.structs.replace(loaded.spec.environment, requirements=(f"-r {secret}",))
    loaded = dataclasses.replace(loaded, spec=msgspec.structs.replace(loaded.spec, environment=forged))
    task_id = await client.submit(loaded)
    summary = await client.wait(task_id)
    told: list[str] = []
    await client.logs(task_id, lambda out: told.append(out.data))
    shards = await client.shards(task_id)
    told += [s.reason for s in shards]
    assert "topsecret" not in "".join(told)
    assert summary.state == "succeeded", told


@needs_sandbox
async def test_a_wheel_missing_from_the_shipment_fails_the_shard_naming_its_package(
    pool: PoolHost, member: Member, client: TaskClient, wheelhouse: Path, tmp_path: Path
) -> None:
    loaded = await asyncio.to_thread(load_task, task_folder(tmp_path / "job", ["tinya"]), offline(wheelhouse))
    assert loaded.spec.environment is not None
    (platform,) = loaded.spec.environment.platforms
    kept = tuple(path for path in platform.wheels if "tinyb" not in path)
    environment = msgspec.structs.replace(
        loaded.spec.environment, platforms=(msgspec.structs.replace(platform, wheels=kept),))
    spec = msgspec.structs.replace(
        loaded.spec, environment=environment,
        files=tuple(entry for entry in loaded.spec.files if "tinyb" not in entry.path))
    task_id = await client.submit(dataclasses.replace(loaded, spec=spec))
    assert (await client.wait(task_id)).state == "failed"
    shards = await client.shards(task_id)
    reasons = {s.reason for s in shards}
    assert any("package 'tinyb' is not available for x86_64-manylinux" in r for r in reasons), reasons


def test_requirements_may_come_from_a_shipped_requirements_file(wheelhouse: Path, tmp_path: Path) -> None:
    folder = task_folder(tmp_path / "job", ["unused"])
    (folder / "deps").mkdir()
    (folder / "deps" / "requirements.txt").write_text("# what the probe needs\ntinya>=1  # and tinyb\n")
    (folder / "job.pool.toml").write_text(
        'command = ["{python}", "probe.py"]\nfiles = ["probe.py"]\nrequirements = "deps/requirements.txt"\n')
    loaded = load_task(folder, offline(wheelhouse))
    assert loaded.spec.environment is not None
    assert loaded.spec.environment.requirements == ("tinya>=1",)
    assert sorted(Path(p).name.split("-")[0] for p in loaded.spec.environment.platforms[0].wheels) == [
        "tinya", "tinyb"]


async def test_environments_past_the_owners_limit_are_evicted_least_recently_used_first(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Real builds into one cache whose limit holds one environment: building a second
    removes the first (not in use); one in use is kept even above the limit."""
    tasks = {name: load_task(task_folder(tmp_path / name, [name]), offline(wheelhouse))
             for name in ("tinya", "lonely")}
    blobs, fetch = shipped(tmp_path, *tasks.values())
    cache = EnvironmentCache(tmp_path / "envs", blobs, limit=1)
    first = await cache.acquire(tasks["tinya"].spec.environment, tasks["tinya"].spec.files, fetch)  # type: ignore[arg-type]
    second = await cache.acquire(tasks["lonely"].spec.environment, tasks["lonely"].spec.files, fetch)  # type: ignore[arg-type]
    assert {env.key for env in cache.built()} == {first.key, second.key}  # both in use
    cache.release(first.key)
    assert cache.evict() == [first.key]
    assert not (cache.root / first.key).exists() and second.interpreter.exists()
    count, size = cache.usage()
    assert count == 1 and size > 0


def test_poolnet_submit_says_in_one_line_which_package_is_missing(wheelhouse: Path, tmp_path: Path) -> None:
    """Before any connection: the CLI resolves first and stops with one line, no traceback."""
    folder = task_folder(tmp_path / "job", ["tinya", "nosuchpackage"])
    done = subprocess.run(
        [sys.executable, "-m", "poolnet_desktop", "submit", str(folder), "--find-links", str(wheelhouse),
         "--no-index", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "'nosuchpackage' is not available for" in done.stderr, done.stderr


# One real wheel from PyPI, kept small (23 kB): MarkupSafe 3.0.3 (BSD-3-Clause), compiled for
# CPython 3.11 on manylinux x86_64, so the platform tags and a C extension are exercised.
REAL_WHEELS = Path(__file__).parent / "wheels"
real_wheel_fits = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11) or this_platform_target() is None
    or not str(this_platform_target()).startswith("x86_64-manylinux"),
    reason="the real wheel kept here is for CPython 3.11 on manylinux x86_64",
)


@needs_sandbox
@real_wheel_fits
async def test_a_real_compiled_wheel_from_pypi_runs_in_a_shard(
    pool: PoolHost, member: Member, client: TaskClient, tmp_path: Path
) -> None:
    script = "import markupsafe, markupsafe._speedups\nprint(markupsafe.escape('<b>&</b>'))\n"
    folder = task_folder(tmp_path / "job", ["markupsafe>=3"], script=script)
    loaded = await asyncio.to_thread(load_task, folder, offline(REAL_WHEELS))
    task_id = await client.submit(loaded)
    assert (await client.wait(task_id)).state == "succeeded"
    told: list[str] = []
    await client.logs(task_id, lambda out: told.append(out.data))
    assert "".join(told) == "&lt;b&gt;&amp;&lt;/b&gt;\n"


async def test_members_report_their_python_platform_and_a_submitter_reads_the_pools(
    pool: PoolHost, member: Member
) -> None:
    """What ``poolnet submit`` resolves a task's requirements for: the platforms of the
    members that take tasks, as their reports say (here, this machine's)."""
    async with await open_link(pool.local_url, pool.options.data_dir) as link:
        assert await TaskClient(link).member_platforms() == [t for t in [this_platform_target()] if t]


def test_a_task_is_resolved_again_only_for_member_platforms_its_wheels_do_not_serve(
    wheelhouse: Path, tmp_path: Path
) -> None:
    loaded = load_task(task_folder(tmp_path / "job", ["tinya"]), offline(wheelhouse))
    assert loaded.spec.environment is not None
    own = [entry.target for entry in loaded.spec.environment.platforms]
    assert for_platforms(loaded, offline(wheelhouse), own) is loaded  # nothing to add
    wider = for_platforms(loaded, offline(wheelhouse), [*own, "aarch64-apple-darwin"])
    assert wider.spec.environment is not None
    assert [entry.target for entry in wider.spec.environment.platforms] == [*own, "aarch64-apple-darwin"]


@needs_sandbox
async def test_poolnet_submit_resolves_for_the_pools_platforms_and_its_task_runs(
    pool: PoolHost, member: Member, wheelhouse: Path, tmp_path: Path
) -> None:
    """The CLI asks the pool for its members' platforms before it sends a task with
    requirements, and the task runs on its environment."""
    folder = task_folder(tmp_path / "job", ["tinya"])
    submitting = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "poolnet_desktop", "submit", str(folder), "--wait", "--results", str(tmp_path / "res"),
        "--find-links", str(wheelhouse), "--no-index", "--url", pool.local_url,
        "--data-dir", str(pool.options.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(submitting.communicate(), 120)
    assert submitting.returncode == 0, err.decode()
    assert b"1/1 shards succeeded" in out


def hostile_wheel(folder: Path, marker: Path, home: Path) -> Path:
    """What a submitter could ship: a wheel with a ``.pth`` line that runs when any Python
    starts on the environment, and a ``pyvenv.cfg`` that points the environment's ``home``
    into a folder the sandbox hides."""
    wheel = folder / "evil-1.0-py3-none-any.whl"
    files = {
        "evil/__init__.py": "",
        "evil.pth": f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran outside the sandbox')\n",
        "evil-1.0.data/data/pyvenv.cfg": f"home = {home}\ninclude-system-site-packages = false\n",
        "evil-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        "evil-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("evil-1.0.dist-info/RECORD", "".join(f"{name},,\n" for name in files)
                         + "evil-1.0.dist-info/RECORD,,\n")
    return wheel


async def test_a_shipped_wheel_runs_nothing_on_the_member_and_cannot_widen_the_sandbox(
    tmp_path: Path,
) -> None:
    """The member builds the environment outside the sandbox: nothing of a wheel may run
    there (a ``.pth`` runs whenever a Python starts on the environment; compiling its bytecode
    with that Python did), and the folders a shard sees come from the build, not from a
    ``pyvenv.cfg`` the wheel wrote (its ``home`` would have been bound back into the sandbox).
    Both held before the fix: the marker was written and the hidden folder made visible."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    marker, secret = tmp_path / "owned", tmp_path / "hidden-home" / "bin"
    hostile_wheel(wheels, marker, secret)
    cache, ready, _ = await built(load_task(task_folder(tmp_path / "job", ["evil"]), offline(wheels)), tmp_path)
    assert not marker.exists()
    assert (cache.root / ready.key / "evil.pth").exists() or any((cache.root / ready.key).rglob("evil.pth"))
    assert all(not folder.is_relative_to(secret.parent) for folder in ready.visible), ready.visible


async def test_a_build_cut_short_is_removed_at_start_and_built_again(wheelhouse: Path, tmp_path: Path) -> None:
    loaded = load_task(task_folder(tmp_path / "job", ["tinya"]), offline(wheelhouse))
    cache, ready, blobs = await built(loaded, tmp_path)
    (cache.root / ready.key / MARKER).unlink()  # as if the member was killed mid-build
    (cache.root / ".wheels-left").mkdir()
    restarted = EnvironmentCache(tmp_path / "envs", blobs, limit=10**10)
    restarted.remove_unfinished()
    assert list(restarted.root.iterdir()) == []
    assert loaded.spec.environment is not None

    async def fetched_already(entries: object) -> None:
        pass

    again = await restarted.acquire(loaded.spec.environment, loaded.spec.files, fetched_already)
    assert again.key == ready.key and again.interpreter.exists() and restarted.usage()[0] == 1



@real_wheel_fits
def test_a_member_platform_the_packages_have_no_wheels_for_does_not_stop_the_task(tmp_path: Path) -> None:
    """A member reports its own platform: one naming a platform the task's packages have no
    wheels for (MarkupSafe's wheel here is for manylinux x86_64 only) is left out, so the task
    still goes out, resolved for this machine and every member platform that can be had."""
    loaded = load_task(task_folder(tmp_path / "job", ["markupsafe>=3"]), offline(REAL_WHEELS))
    assert loaded.spec.environment is not None
    own = [entry.target for entry in loaded.spec.environment.platforms]
    assert for_platforms(loaded, offline(REAL_WHEELS), ["aarch64-apple-darwin"]) is loaded
    wider = for_platforms(loaded, offline(REAL_WHEELS), ["aarch64-apple-darwin", "x86_64-manylinux_2_28"])
    assert wider.spec.environment is not None
    assert [entry.target for entry in wider.spec.environment.platforms] == [*own, "x86_64-manylinux_2_28"]
