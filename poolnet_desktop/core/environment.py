"""Per-task Python environments: what a task asks for, what the submitter resolved, and the
member's decisions about them (which wheels fit this machine, the cache key, what to evict).

A manifest asks for packages (``requirements = ["numpy>=2"]`` or a shipped
``requirements.txt``) and optionally a Python version. The submitter resolves them once per
target platform with ``uv`` and ships the wheels as ordinary inputs under ``WHEEL_FOLDER``
(content-addressed: each crosses the network once per member). ``EnvironmentSpec`` travels in
the ``TaskSpec`` and names, per platform, which of the task's files are its wheels. A member
builds one environment per (Python, platform, wheel set) and reuses it for every later shard.

Pure: no file system, no subprocess, no clock (times are passed in).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence, Set as AbstractSet
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated

import msgspec

# Wheels travel as task files under this folder; the member keeps them in its blob cache and
# never copies them into a shard's working folder.
WHEEL_FOLDER = ".poolnet/wheels"
MAX_REQUIREMENTS = 1000
MAX_REQUIREMENT_LENGTH = 1000
MAX_PLATFORMS = 16
MAX_WHEELS = 2000
DEFAULT_CACHE_LIMIT = 10 * 1000**3  # 10 GB, the member owner's default

PythonVersion = Annotated[str, msgspec.Meta(pattern=r"^3\.\d{1,2}$")]
# A uv ``--python-platform`` value (``x86_64-manylinux_2_28``, ``aarch64-apple-darwin``).
Target = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,20}-[a-z0-9_.-]{1,40}$")]

# The manylinux levels uv accepts as targets (``--python-platform``), oldest first.
_MANYLINUX_LEVELS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
_MANYLINUX = re.compile(r"^(?P<arch>x86_64|aarch64)-manylinux_2_(?P<level>\d+)$")
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_WHEEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+!-]{0,250}\.whl")
_MISSING = re.compile(
    r"Because (?P<name>[A-Za-z0-9._-]+)(?:[=<>!~]=?\S+)? (?P<why>was not found|has no usable wheels)"
)


class EnvironmentFailure(ValueError):
    """An environment that cannot be made; ``str()`` names the package or platform at fault."""


class PlatformWheels(msgspec.Struct, frozen=True, array_like=True):
    """The wheels resolved for one target platform: ``[target, [path, ...]]`` on the wire,
    each path one of the task's files (under ``WHEEL_FOLDER``)."""

    target: Target
    wheels: Annotated[tuple[str, ...], msgspec.Meta(max_length=MAX_WHEELS)]


class EnvironmentSpec(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A task's Python environment as resolved by its submitter."""

    requirements: Annotated[tuple[str, ...], msgspec.Meta(max_length=MAX_REQUIREMENTS)]
    python: PythonVersion
    platforms: Annotated[tuple[PlatformWheels, ...], msgspec.Meta(max_length=MAX_PLATFORMS)]

    def __post_init__(self) -> None:
        check_requirements(self.requirements)
        for entry in self.platforms:
            for path in entry.wheels:
                check_wheel_path(path)


@dataclass(frozen=True, slots=True)
class EnvironmentRequest:
    """What a manifest asks for, before resolution: a list of requirement lines or the name
    of a shipped requirements file (exactly one of the two), and a Python version or None
    (the submitter's own)."""

    requirements: tuple[str, ...] = ()
    requirements_file: str | None = None
    python: str | None = None


def check_requirements(lines: Sequence[str]) -> None:
    if len(lines) > MAX_REQUIREMENTS:
        raise ValueError(f"more than {MAX_REQUIREMENTS} requirements")
    for line in lines:
        if not line.strip() or "\x00" in line or "\n" in line:
            raise ValueError(f"requirement {line!r} is empty or holds a NUL or a line break")
        if len(line) > MAX_REQUIREMENT_LENGTH:
            raise ValueError(f"a requirement is longer than {MAX_REQUIREMENT_LENGTH} characters")


def check_wheel_path(path: str) -> None:
    """A wheel's task path: ``WHEEL_FOLDER/NAME.whl``, nothing deeper, and a name as wheels
    have (it becomes a file name and a uv argument on the member)."""
    pure = PurePosixPath(path)
    if str(pure.parent) != WHEEL_FOLDER or not _WHEEL_NAME.fullmatch(pure.name):
        raise ValueError(f"{path!r} is not a wheel under {WHEEL_FOLDER}/")


def wheel_path(filename: str) -> str:
    """The task path a wheel file ships under."""
    path = f"{WHEEL_FOLDER}/{filename}"
    check_wheel_path(path)
    return path


def is_wheel_path(path: str) -> bool:
    return path.startswith(WHEEL_FOLDER + "/")


def requirement_lines(text: str) -> tuple[str, ...]:
    """The requirement lines of a ``requirements.txt``: comments and blank lines dropped
    (uv reads options such as ``--index-url`` in them too)."""
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def platform_target(system: str, machine: str, glibc: tuple[int, int] | None) -> str | None:
    """The uv target that names this machine (``sys.platform``, ``platform.machine()``, the
    glibc version on Linux), or None for one PoolNet cannot resolve wheels for. Linux names
    the newest manylinux level its glibc runs, so wheels resolved for it install here."""
    arch = _MACHINES.get(machine.lower())
    if arch is None:
        return None
    if system.startswith("linux"):
        if glibc is None or glibc[0] != 2:
            return None  # musl or unknown: no manylinux wheel is sure to run
        fitting = [level for level in _MANYLINUX_LEVELS if level <= glibc[1]]
        return f"{arch}-manylinux_2_{fitting[-1]}" if fitting else None
    if system == "darwin":
        return f"{arch}-apple-darwin"
    if system == "win32":
        return f"{arch}-pc-windows-msvc"
    return None


def target_runs_on(target: str, member: str) -> bool:
    """Whether wheels resolved for ``target`` install on a ``member`` machine: the same
    target, or an older manylinux level of the same architecture."""
    if target == member:
        return True
    offered, own = _MANYLINUX.match(target), _MANYLINUX.match(member)
    return bool(
        offered and own and offered["arch"] == own["arch"]
        and int(offered["level"]) <= int(own["level"])
    )


def is_platform_target(text: str) -> bool:
    """Whether ``text`` is a target ``platform_target`` could name (and so a value uv takes):
    a member reports its own, and a member's word is no argument for the submitter's uv."""
    arch, _, system = text.partition("-")
    if arch not in _MACHINES.values():
        return False
    manylinux = _MANYLINUX.match(text)
    if manylinux is not None:
        return int(manylinux["level"]) in _MANYLINUX_LEVELS
    return system in ("apple-darwin", "pc-windows-msvc")


def targets_to_resolve(base: Iterable[str | None], members: Iterable[str]) -> tuple[str, ...]:
    """The platforms to resolve a task's requirements for: ``base`` (this machine's, or those
    resolved already), then each member platform in the pool that none of those serves (a
    newer manylinux level of the same architecture is served by an older one, not the other
    way round). A member's report that names no real target is left out."""
    chosen = [target for target in base if target]
    for member in sorted(set(members)):
        if is_platform_target(member) and not any(target_runs_on(target, member) for target in chosen):
            chosen.append(member)
    return tuple(chosen)


def pick_platform(spec: EnvironmentSpec, member: str | None) -> PlatformWheels:
    """The wheels this member installs: the newest resolved target that runs here.
    Raises ``EnvironmentFailure`` naming this member's platform and the ones resolved."""
    fitting = [entry for entry in spec.platforms if member and target_runs_on(entry.target, member)]
    if fitting:
        return max(fitting, key=lambda entry: _manylinux_level(entry.target))
    offered = ", ".join(entry.target for entry in spec.platforms) or "none"
    raise EnvironmentFailure(
        f"no wheels for this member's platform ({member or 'unsupported'}): the task's "
        f"requirements were resolved for {offered}"
    )


def _manylinux_level(target: str) -> int:
    found = _MANYLINUX.match(target)
    return int(found["level"]) if found else 0


def environment_key(python: str, target: str, wheel_sha256s: Iterable[str]) -> str:
    """The cache key of a built environment: what was installed, for which Python, where.
    Order-free, so the same wheel set resolved twice maps to one environment."""
    text = "\n".join([python, target, *sorted(set(wheel_sha256s))])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BuiltEnvironment:
    """One environment in a member's cache, as the eviction sees it."""

    key: str
    size: int
    last_used: float


def lru_victims(built: Iterable[BuiltEnvironment], limit: int, keep: AbstractSet[str]) -> list[str]:
    """The environments to delete, least recently used first, until the rest fit in
    ``limit`` bytes; those in ``keep`` (in use, or just built) are never chosen, so the cache
    may stay above the limit while they run."""
    ordered = sorted(built, key=lambda env: env.last_used)
    total = sum(env.size for env in ordered)
    victims = []
    for env in ordered:
        if total <= limit:
            break
        if env.key in keep:
            continue
        victims.append(env.key)
        total -= env.size
    return victims


def explain_uv_failure(stderr: str, target: str) -> str:
    """A one-line reason from uv's error output: the package it could not find for
    ``target`` when it says so, else uv's own last line."""
    found = _MISSING.search(stderr)
    if found and found["why"] == "was not found":
        return f"package {found['name']!r} is not available for {target}"
    if found:
        return (f"package {found['name']!r} has no wheel for {target}, only source code, which "
                "PoolNet does not build (its build would run on every member)")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"{lines[-1] if lines else 'uv failed'} (for {target})"
