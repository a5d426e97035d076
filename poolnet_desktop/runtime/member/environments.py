"""The member's Python environments for tasks: built once from shipped wheels, reused after.

Each environment is a folder ``ROOT/KEY`` (``core.environment.environment_key``: the Python
version, this member's platform and the wheels' sha256s), built with ``uv venv`` and
``uv pip install --offline --no-index --find-links WHEELS --only-binary :all:``: no network,
no index, no source builds, and uv installs wheels without running any of their code. Its
marker file (``MARKER``, written last) says it is complete and holds its size; its mtime is
when a shard last used it, for the least-recently-used eviction past the owner's limit.
Bytecode is compiled at build time, because shards see the environment read-only.

The member installs the shipped wheel files, never the task's requirement lines: those came
from a submitter, and a line such as ``-r /home/me/secret`` would make uv read a file of the
member's and quote it in its error. Dependencies between the wheels are still checked, from
the same folder only, so a wheel missing from the shipment fails naming its package.

A key already built costs a dict look-up and one ``utime`` per shard start.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from poolnet_desktop.core.environment import (
    BuiltEnvironment,
    EnvironmentFailure,
    EnvironmentSpec,
    environment_key,
    explain_uv_failure,
    lru_victims,
    pick_platform,
)
from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.runtime.uv_tool import run_uv, this_platform_target, this_python

log = logging.getLogger(__name__)

MARKER = ".poolnet-env.json"
FetchBlobs = Callable[[Sequence[FileEntry]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReadyEnvironment:
    """A built environment: its key, the interpreter ``{python}`` means in it, and the
    folders a sandboxed shard must see read-only to run it (the environment and the Python
    it was made from)."""

    key: str
    interpreter: Path
    visible: tuple[Path, ...]


class EnvironmentCache:
    """The environments under ``root``, at most ``limit`` bytes of those not in use.

    ``acquire`` before a shard starts, ``release`` when it ended; ``blobs`` is the member's
    content-addressed file cache that ``fetch`` fills with missing wheels.
    """

    def __init__(self, root: Path, blobs: Path, limit: int, target: str | None = None) -> None:
        self.root = root
        self.blobs = blobs
        self.limit = limit
        self.target = target if target is not None else this_platform_target()
        self._ready: dict[str, ReadyEnvironment] = {}
        self._building: dict[str, asyncio.Future[ReadyEnvironment]] = {}
        self._users: Counter[str] = Counter()

    async def acquire(
        self, spec: EnvironmentSpec, files: Sequence[FileEntry], fetch: FetchBlobs
    ) -> ReadyEnvironment:
        """The environment ``spec`` asks for on this member, built now if it is not yet.
        Raises ``EnvironmentFailure`` naming the platform or package at fault."""
        chosen = pick_platform(spec, self.target)
        by_path = {entry.path: entry for entry in files}
        wheels = [by_path[path] for path in chosen.wheels]
        key = environment_key(spec.python, chosen.target, (w.sha256 for w in wheels))
        ready = self._ready.get(key)
        if ready is None:
            building = self._building.get(key)
            if building is None:
                building = asyncio.ensure_future(self._make(key, spec, chosen.target, wheels, fetch))
                self._building[key] = building
                building.add_done_callback(functools.partial(self._built, key))
            ready = await asyncio.shield(building)
        else:
            _touch(self.root / key / MARKER)
        self._users[key] += 1
        return ready

    def _built(self, key: str, building: asyncio.Future[ReadyEnvironment]) -> None:
        """A build ended: the next shard that wants its key finds it ready, or builds anew
        after a failure (whose error each waiting shard has reported; marked as seen here
        for when every one of them was cancelled)."""
        if not building.cancelled():
            building.exception()
        del self._building[key]

    def remove_unfinished(self) -> None:
        """Blocking: delete what builds cut short by a kill left (no marker). Only at the
        member's start, when no build runs."""
        try:
            folders = list(self.root.iterdir())
        except OSError:
            return
        for folder in folders:
            if not (folder / MARKER).is_file():
                shutil.rmtree(folder, ignore_errors=True)

    def release(self, key: str) -> None:
        self._users[key] -= 1
        if self._users[key] <= 0:
            del self._users[key]

    async def _make(
        self, key: str, spec: EnvironmentSpec, target: str, wheels: list[FileEntry],
        fetch: FetchBlobs,
    ) -> ReadyEnvironment:
        folder = self.root / key
        if not (folder / MARKER).is_file():  # not built by an earlier run of this member
            await fetch(wheels)
            await asyncio.to_thread(self._build, folder, spec, target, wheels)
            await asyncio.to_thread(self.evict, {key})
        else:
            _touch(folder / MARKER)
        ready = ReadyEnvironment(key, _interpreter(folder), _visible(folder))
        self._ready[key] = ready
        return ready

    def _build(self, folder: Path, spec: EnvironmentSpec, target: str, wheels: list[FileEntry]) -> None:
        """Blocking: make the environment in ``folder`` from the wheels in the blob cache."""
        shutil.rmtree(folder, ignore_errors=True)  # a build cut short (no marker)
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix=".wheels-", dir=folder.parent) as scratch:
            links = Path(scratch)
            files = [links / PurePosixPath(wheel.path).name for wheel in wheels]
            for wheel, file in zip(wheels, files):  # uv reads a wheel's tags from its name
                _link_or_copy(self.blobs / wheel.sha256, file)
            common = ["--no-config", "--offline", "--no-python-downloads"]
            self._uv(["venv", "--relocatable", "--quiet", *common, "--python", _base_python(spec.python),
                      str(folder)], folder, target)
            # Read before any wheel lands: a wheel may overwrite pyvenv.cfg and bin/python.
            home, base = _home(folder), _interpreter(folder).resolve()
            self._uv(["pip", "install", "--quiet", *common, "--no-index", "--find-links", str(links),
                      "--only-binary", ":all:", "--no-cache", "--link-mode", "copy",
                      "--python", str(_interpreter(folder)), *(str(file) for file in files)], folder, target)
        # Bytecode, compiled by the base interpreter with no site (-S) and no user paths (-I):
        # compiling runs nothing, while any Python started on the environment (uv's
        # --compile-bytecode) would run the wheels' .pth lines here, outside the sandbox.
        subprocess.run([str(base), "-I", "-S", "-m", "compileall", "-q", "-j", "0", str(folder)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600, check=False)
        size = _folder_size(folder)
        (folder / MARKER).write_text(json.dumps(
            {"size": size, "python": spec.python, "target": target, "home": str(home) if home else None}
        ))
        log.info("built a Python environment for tasks (%s, %.1f MB)", folder.name, size / 1e6)

    @staticmethod
    def _uv(args: list[str], folder: Path, target: str) -> None:
        done = run_uv(args)
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise EnvironmentFailure(
                f"could not build the Python environment: {explain_uv_failure(done.stderr, target)}"
            )

    def evict(self, keep: AbstractSet[str] = frozenset()) -> list[str]:
        """Blocking: delete the least recently used environments past the limit (never one in
        use or in ``keep``); return their keys."""
        victims = lru_victims(self.built(), self.limit, keep | set(self._users) | set(self._building))
        for key in victims:
            self._ready.pop(key, None)
            shutil.rmtree(self.root / key, ignore_errors=True)
            log.info("removed the Python environment %s (least recently used)", key)
        return victims

    def usage(self) -> tuple[int, int]:
        """Blocking: how many environments are built here, and their bytes."""
        built = self.built()
        return len(built), sum(env.size for env in built)

    def built(self) -> list[BuiltEnvironment]:
        """Blocking: every complete environment under the root, with size and last use."""
        found = []
        try:
            folders = list(self.root.iterdir())
        except OSError:
            return []
        for folder in folders:
            marker = folder / MARKER
            try:
                size = int(json.loads(marker.read_text())["size"])
                found.append(BuiltEnvironment(folder.name, size, marker.stat().st_mtime))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found


def _touch(marker: Path) -> None:
    try:
        os.utime(marker)
    except OSError:
        pass  # evicted meanwhile by another build's eviction: it is rebuilt next time


def _interpreter(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _visible(folder: Path) -> tuple[Path, ...]:
    """The environment and the prefix of the Python it was made from, as the build recorded
    it in the marker (never the environment's own pyvenv.cfg, which a wheel may rewrite)."""
    visible = [folder.resolve()]
    try:
        home = json.loads((folder / MARKER).read_text()).get("home")
    except (OSError, ValueError, AttributeError):
        home = None
    if isinstance(home, str) and home:
        visible.append(Path(home).resolve().parent)
    return tuple(visible)


def _home(folder: Path) -> str | None:
    """``home`` of the pyvenv.cfg uv wrote (read before any wheel is installed)."""
    try:
        for line in (folder / "pyvenv.cfg").read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "home":
                return value.strip()
    except OSError:
        pass
    return None


def _base_python(version: str) -> str:
    """The interpreter to build on: PoolNet's own when its version is the one asked (no
    search), else the version for uv to find on this machine (never downloaded)."""
    if version == this_python() and not getattr(sys, "frozen", False):
        return sys.executable
    return version


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _folder_size(folder: Path) -> int:
    total = 0
    for current, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(current, name)).st_size
            except OSError:
                continue
    return total
