"""The submitter's side of task environments: resolve the requirements once per target
platform with uv, and gather the wheels to ship.

``uv pip compile --format pylock.toml`` resolves for a target (``--python-platform``,
``--python-version``), wheels only (``--only-binary :all:``: a source distribution would run
its build code on every member), and names each wheel with its URL and sha256. Wheels come
from the user's own index or find-links folders (uv's configuration, plus
``ResolveOptions.find_links``); one on a remote index is downloaded once into PoolNet's
wheel cache and checked against the lock's sha256. The wheels then ship as ordinary task
files under ``WHEEL_FOLDER``, content-addressed like any input.

Blocking (subprocesses, downloads, hashing): run it off the event loop, as ``load_task`` is.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from poolnet_desktop.core.environment import (
    EnvironmentFailure,
    EnvironmentRequest,
    EnvironmentSpec,
    PlatformWheels,
    explain_uv_failure,
    requirement_lines,
    wheel_path,
)
from poolnet_desktop.runtime.datadir import user_cache
from poolnet_desktop.runtime.uv_tool import run_uv, this_platform_target, this_python

log = logging.getLogger(__name__)
T = TypeVar("T")

DOWNLOAD_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class ResolveOptions:
    """Where wheels may come from besides uv's own configuration, and for which platforms.

    ``targets`` None: this machine's platform. ``no_index``/``offline``: only the
    ``find_links`` folders (and uv's cache), no index at all.
    """

    find_links: tuple[Path, ...] = ()
    no_index: bool = False
    offline: bool = False
    targets: tuple[str, ...] | None = None
    wheel_cache: Path = field(default_factory=lambda: user_cache() / "wheels")


@dataclass(frozen=True, slots=True)
class ResolvedEnvironment:
    """The environment for the ``TaskSpec`` and where each of its wheels lies here."""

    spec: EnvironmentSpec
    local_wheels: Mapping[str, Path]


def resolve_environment(
    request: EnvironmentRequest, root: Path, options: ResolveOptions
) -> ResolvedEnvironment:
    """Resolve ``request`` (its requirements file relative to ``root``) for every target.
    Raises ``EnvironmentFailure`` naming the package and platform that could not be had."""
    python = request.python or this_python()
    targets = options.targets if options.targets is not None else _own_target()
    with tempfile.TemporaryDirectory(prefix="poolnet-resolve-") as scratch:
        requirements_in = Path(scratch) / "requirements.in"
        if request.requirements_file is not None:
            lines = _read_requirements_file(root, request.requirements_file)
        else:
            lines = request.requirements
        requirements_in.write_text("\n".join(lines) + "\n")
        platforms, local = [], {}
        for target in targets:
            wheels = _resolve_target(requirements_in, python, target, options, Path(scratch))
            paths = []
            for filename, sha256, source in wheels:
                path = wheel_path(filename)
                local[path] = _obtain(source, filename, sha256, options.wheel_cache)
                paths.append(path)
            platforms.append(PlatformWheels(target, tuple(paths)))
    spec = EnvironmentSpec(requirements=tuple(lines), python=python, platforms=tuple(platforms))
    return ResolvedEnvironment(spec, local)


def _own_target() -> tuple[str, ...]:
    target = this_platform_target()
    if target is None:
        raise EnvironmentFailure("PoolNet cannot resolve Python packages for this machine's platform")
    return (target,)


def _read_requirements_file(root: Path, name: str) -> tuple[str, ...]:
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise EnvironmentFailure(f"requirements file {name!r} leads outside the task folder")
    try:
        return requirement_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentFailure(f"cannot read the requirements file {name!r}: {exc}") from None


def _resolve_target(
    requirements_in: Path, python: str, target: str, options: ResolveOptions, scratch: Path
) -> list[tuple[str, str, str]]:
    """``(wheel file name, sha256, url)`` of every wheel uv chose for ``target``."""
    lock = scratch / f"pylock.{target.replace('.', '_')}.toml"
    args = [
        "pip", "compile", str(requirements_in), "--quiet", "--format", "pylock.toml",
        "-o", str(lock), "--only-binary", ":all:", "--python-version", python,
        "--python-platform", target,
    ]
    for folder in options.find_links:
        args += ["--find-links", str(folder)]
    if options.no_index:
        args.append("--no-index")
    if options.offline:
        args.append("--offline")
    done = run_uv(args)
    if done.returncode != 0:
        raise EnvironmentFailure(explain_uv_failure(done.stderr, target))
    return _wheels(tomllib.loads(lock.read_text()), target)


def _wheels(lock: Mapping[str, Any], target: str) -> list[tuple[str, str, str]]:
    found = []
    for package in lock.get("packages", []):
        wheels = package.get("wheels") or []
        if not wheels:
            raise EnvironmentFailure(
                f"package {package.get('name')!r} has no wheel for {target} (only source, "
                "which PoolNet does not build: it would run its code on every member)"
            )
        for wheel in wheels:
            url = wheel.get("url") or wheel.get("path", "")
            filename = wheel.get("name") or urllib.parse.unquote(url.rsplit("/", 1)[-1])
            found.append((filename, wheel["hashes"]["sha256"], url))
    return found


def _obtain(url: str, filename: str, sha256: str, cache: Path) -> Path:
    """A local file holding the wheel: the find-links or file-index file itself (its hash is
    taken again when the task's files are), or a download kept in ``cache``, checked against
    the lock's sha256 as it arrives."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(urllib.request.url2pathname(parsed.path))
    local = cache / sha256 / filename
    if not local.is_file():
        _download(url, local, sha256)
    return local


def _download(url: str, target: Path, sha256: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(partial, "wb") as out:
            while chunk := response.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise EnvironmentFailure(f"cannot download {url}: {exc}") from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise EnvironmentFailure(f"{target.name} from {url} does not match the lock's sha256")
    partial.replace(target)


def for_members_if_possible(
    resolve: Callable[[tuple[str, ...]], T], required: tuple[str, ...], members: Sequence[str],
    failure: type[Exception], fallback: Callable[[], T],
) -> T:
    """``resolve`` for the ``required`` targets and each of the ``members``' platforms that can
    be had. The members' are best effort: a member reports its own, and one naming a platform
    few packages have wheels for must not fail every submission (its shards fail instead,
    naming both platforms). ``fallback``: the result for ``required`` alone."""
    if not members:
        return fallback()
    try:
        return resolve((*required, *members))
    except failure:
        pass
    fitting = []
    for target in members:
        try:
            resolve((*required, target))
        except failure as exc:
            log.warning("the task's requirements are not resolved for a member platform: %s", exc)
        else:
            fitting.append(target)
    return resolve((*required, *fitting)) if fitting else fallback()
