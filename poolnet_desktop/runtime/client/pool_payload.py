"""The files of a ``poolnet.Pool`` task and the outcomes that come back, on the caller's side.

Going: the function and each shard's calls pickled with ``cloudpickle`` into a task folder,
with the worker (``runtime.client.pool_worker``) and the spec (``core.pool_calls``). Coming back:
each shard's ``result.pkl`` read into one outcome per call, and each outcome set on its
``concurrent.futures.Future``: a value, the call's own exception (its remote traceback as
``__cause__``), or a ``PoolError`` saying why its shard did not succeed.

Blocking (files, pickling): the pool's loop calls the readers through ``asyncio.to_thread``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import linecache
import pickle
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from poolnet_desktop.core.environment import EnvironmentFailure, EnvironmentRequest, EnvironmentSpec
from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.pool_calls import (
    FUNCTION_FILE,
    RESULT_FILE,
    WORKER_FILE,
    call_spec,
    calls_file,
    restore_sources,
)
from poolnet_desktop.runtime.client import pool_worker, safe_pickle
from poolnet_desktop.runtime.client.env_resolve import ResolvedEnvironment, ResolveOptions, resolve_environment
from poolnet_desktop.runtime.client.task_files import LoadedTask, file_sha256

Call = tuple[tuple[Any, ...], dict[str, Any]]

_BY_VALUE_LOCK = threading.Lock()


class PoolError(Exception):
    """The pool could not run a call: unreachable, refused, or its shard failed (not the
    call's own exception, which is re-raised as it was)."""


class RemoteTraceback(Exception):
    """The traceback of a call that raised on a member, as ``__cause__`` of the re-raised
    exception (the shape ``ProcessPoolExecutor`` gives its workers' tracebacks)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class RemoteError(Exception):
    """A remote exception that could not be pickled back: its repr, with its traceback."""


def resolve_requirements(requirements: Sequence[str], options: ResolveOptions) -> ResolvedEnvironment:
    """The task environment for ``requirements``, resolved once for a ``Pool``'s calls.
    Raises ``PoolError`` naming a package that cannot be had (and the platform)."""
    try:
        with tempfile.TemporaryDirectory(prefix="poolnet-pool-") as scratch:
            return resolve_environment(EnvironmentRequest(requirements=tuple(requirements)), Path(scratch), options)
    except (EnvironmentFailure, ValueError) as exc:
        raise PoolError(f"requirements: {exc}") from None


def fixed_files(environment: ResolvedEnvironment | None) -> dict[str, tuple[Path, FileEntry]]:
    """The files every task of a ``Pool`` ships, hashed once for all its calls: the worker,
    this process's own cloudpickle (so a member's shard unpickles with the very version that
    pickled, whichever Python runs it), and the environment's wheels."""
    local = {WORKER_FILE: Path(pool_worker.__file__), **_cloudpickle_files()}
    if environment is not None:
        local.update(environment.local_wheels)
    return {name: (path, _entry(name, path)) for name, path in local.items()}


def write_task(
    folder: Path, fn: Callable[..., Any], calls: list[Call], chunks: list[range],
    fixed: Mapping[str, tuple[Path, FileEntry]], environment: EnvironmentSpec | None = None,
) -> LoadedTask:
    """The task's files on disk (the function and one calls file per shard, beside the
    ``fixed`` ones) and its spec; with ``environment`` the calls run on its Python."""
    (folder / "calls").mkdir(parents=True)
    written: dict[str, Path] = {}
    with _module_by_value(fn):
        (folder / FUNCTION_FILE).write_bytes(cloudpickle.dumps(fn))
        written[FUNCTION_FILE] = folder / FUNCTION_FILE
        for shard, chunk in enumerate(chunks):
            name = calls_file(shard)
            (folder / name).write_bytes(cloudpickle.dumps([calls[i] for i in chunk]))
            written[name] = folder / name
    entries = [entry for _, entry in fixed.values()] + [_entry(n, p) for n, p in written.items()]
    local = {**{name: path for name, (path, _) in fixed.items()}, **written}
    spec = call_spec(getattr(fn, "__name__", type(fn).__name__), len(chunks), entries, environment)
    return LoadedTask(spec, folder, folder, local)


def _entry(name: str, path: Path) -> FileEntry:
    size, digest = file_sha256(path)
    return FileEntry(path=name, size=size, sha256=digest)


def _cloudpickle_files() -> dict[str, Path]:
    """cloudpickle's source files (pure Python), as task files beside the worker."""
    package = Path(cloudpickle.__file__).parent
    return {f"cloudpickle/{source.name}": source for source in sorted(package.glob("*.py"))}


@contextlib.contextmanager
def _module_by_value(fn: Callable[..., Any]) -> Iterator[None]:
    """While pickling ``fn`` and its calls, the caller's own code (``fn``'s module, if it is
    not part of an installed package or the standard library) goes by value, as a script's
    ``__main__`` does, since no member can import it; installed packages go by name."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    with _BY_VALUE_LOCK:  # cloudpickle's registry is global: one caller at a time changes it
        if module is None or not _is_own_code(module) or module.__name__ in cloudpickle.list_registry_pickle_by_value():
            yield
            return
        cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            cloudpickle.unregister_pickle_by_value(module)


def code_files(fn: Callable[..., Any]) -> dict[str, str]:
    """Function name -> file, for ``fn``, the functions nested in it, and the functions
    of its module it may call: the frames a remote traceback names ``<dynamic-code>``."""
    files: dict[str, str] = {}
    code = getattr(fn, "__code__", None)
    codes = [code] if isinstance(code, CodeType) else []
    codes += [value.__code__ for value in getattr(fn, "__globals__", {}).values() if isinstance(value, FunctionType)]
    while codes:
        code = codes.pop()
        files.setdefault(code.co_name, code.co_filename)
        codes.extend(const for const in code.co_consts if isinstance(const, CodeType))
    return files


def _is_own_code(module: ModuleType) -> bool:
    if module.__name__ == "__main__":
        return False  # cloudpickle sends ``__main__`` by value already
    source = getattr(module, "__file__", None)
    if source is None:
        return False
    installed = {sysconfig.get_path(key) for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    where = Path(source).resolve()
    return not any(where.is_relative_to(Path(p).resolve()) for p in installed if p)


def read_outcomes(results: Path, chunks: list[range], failed: dict[int, str]) -> list[tuple[Any, ...]]:
    """Every call's outcome in call order: from its shard's result file, else the reason its
    shard did not succeed. The file is a member's: it is read as plain data (each value
    inside stays pickled until ``resolve``), and one that is not plain data fails its shard."""
    outcomes: list[tuple[Any, ...]] = []
    for shard, chunk in enumerate(chunks):
        path = results / str(shard) / RESULT_FILE
        try:
            loaded = safe_pickle.loads(path.read_bytes())
        except (pickle.UnpicklingError, ValueError, EOFError) as exc:
            loaded = [(None, f"shard {shard} sent back a result that is not plain data ({exc})")] * len(chunk)
        except FileNotFoundError:
            reason = failed.get(shard, "it brought back no result")
            loaded = [(None, f"shard {shard} did not succeed ({reason}); its output above says why")] * len(chunk)
        if len(loaded) != len(chunk):
            raise PoolError(f"shard {shard} returned {len(loaded)} results for {len(chunk)} calls")
        outcomes.extend(loaded)
    return outcomes


def resolve(
    future: concurrent.futures.Future[Any], outcome: tuple[Any, ...], sources: dict[str, str], trust_members: bool
) -> None:
    """Set the call's outcome on its future. A member sent the value: unless the caller
    trusts every member with this process, it is unpickled as plain data only (a crafted
    pickle could run code here), and a value of another type fails the call, saying which."""
    if not future.set_running_or_notify_cancel():
        return
    load = cloudpickle.loads if trust_members else safe_pickle.loads
    if outcome[0] is True:
        try:
            future.set_result(load(outcome[1]))
        except safe_pickle.PickleRefused as refused:
            future.set_exception(PoolError(
                f"the result holds {refused.type_name}, which a member may not send back to this process:"
                " return plain data (numbers, text, lists, dicts, numpy arrays), or use"
                " Pool(trust_members=True) if every member of the pool may run code here"
            ))
        except Exception as unreadable:  # noqa: BLE001 - a class this process lacks, a broken pickle
            future.set_exception(PoolError(f"the result cannot be read here: {unreadable}"))
    elif outcome[0] is None:
        future.set_exception(PoolError(outcome[1]))
    else:
        _, pickled, text, shown = outcome
        try:
            raised = load(pickled) if pickled is not None else RemoteError(shown)
        except Exception:  # noqa: BLE001 - a class refused or lacking here: its repr stands in
            raised = RemoteError(shown)
        if not isinstance(raised, BaseException):  # a member's pickle of something else
            raised = RemoteError(shown)
        raised.__cause__ = RemoteTraceback(restore_sources(text, sources, linecache.getline))
        future.set_exception(raised)
