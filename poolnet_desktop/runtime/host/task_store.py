"""The coordinator's task records in SQLite (WAL): tasks, shards, results and logs.

Writes never block the event loop and never cost a commit each: ``save_task``, ``save_shard``,
``append_log`` and ``forget`` only queue a row (a later save of the same shard replaces the queued one),
and one writer thread commits whatever has queued up in one transaction. ``committed()`` gives
a future that resolves once everything queued so far is on disk, which is what a result's
acknowledgement waits for: a member forgets a result only after it is stored.

A commit the disk cannot take (it is full) loses nothing: its rows stay queued (a newer save
of the same row still replaces them) and the writer tries again every ``RETRY_DELAY`` until the
disk has room, so the records catch up by themselves once space returns.

``synchronous=NORMAL`` under WAL survives the coordinator being killed (SIGKILL) at any
moment; only a power cut may lose the last transactions, which members then run again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.core.tasks import Shard, ShardState, Task
from poolnet_desktop.core.wire import StorageError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    submitter TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    cancel_requested INTEGER NOT NULL,
    files_ready INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    device_id TEXT,
    gpus BLOB NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL,
    queued_at REAL,
    reported BLOB NOT NULL,
    assigned_at REAL,
    started_at REAL,
    finished_at REAL,
    result BLOB,
    retry_base INTEGER NOT NULL DEFAULT 0,
    placed BLOB NOT NULL DEFAULT '{}',
    PRIMARY KEY (task_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    task_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    stream TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_task ON logs (task_id, shard);
"""
_TASK_SQL = "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?)"
_SHARD_SQL = "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LOG_SQL = "INSERT INTO logs VALUES (?, ?, ?, ?, ?)"
# The writer gathers this long after the first queued write before it commits: a stream of
# tiny shards then costs one commit per few milliseconds, not several per shard. Only
# acknowledgements wait for commits, and nothing waits for an acknowledgement; a placement
# waits too (a member is sent an attempt only once it is stored), and asks for no delay.
BATCH_DELAY = 0.02
# After a failed commit (a full disk), the writer waits this long before it tries again.
RETRY_DELAY = 0.5
# While commits fail, at most this many output rows wait in memory; older ones are dropped
# (said in the log) so that shards printing to a pool with a full disk cannot exhaust memory.
MAX_HELD_LOGS = 50_000

_json = msgspec.json.Encoder()
_ints = msgspec.json.Decoder(list[int])
_placed = msgspec.json.Decoder(dict[int, str])
_result = msgspec.json.Decoder(ShardResult)
_spec = msgspec.json.Decoder(TaskSpec)


@dataclass(slots=True)
class StoredTask:
    """A task as loaded at start-up: its records, whether its input files all arrived, and
    the recorded result of each finished shard."""

    task: Task
    files_ready: bool
    results: dict[int, ShardResult]


@dataclass(frozen=True, slots=True)
class LogRecord:
    shard: int
    attempt: int
    stream: str
    data: str


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


class TaskStore:
    """Open with ``TaskStore(path)`` (blocking: creates the schema), ``load()`` once at start,
    then queue writes from the loop. ``close()`` commits what is queued and stops the writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(path)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(shards)")}
        if "retry_base" not in columns:  # a store from before retries on request
            self._db.execute(
                "ALTER TABLE shards ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0"
            )
        if "placed" not in columns:  # a store from before attempts had owners
            # Only the current attempt's device is known: older attempts then have no owner,
            # and nobody may report them.
            self._db.executescript("""
                ALTER TABLE shards ADD COLUMN placed BLOB NOT NULL DEFAULT '{}';
                UPDATE shards SET placed = json_object(CAST(attempt AS TEXT), device_id)
                    WHERE device_id IS NOT NULL AND attempt > 0;
            """)
        # Output stored before this store was opened has rowids up to here; each task's
        # output appended since is counted, so a reader can take history up to a moment.
        self._opened_at_rowid: int = self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM logs").fetchone()[0]
        self._appended: dict[str, Counter[int]] = {}  # task -> shard -> chunks
        self._appended_by_task: Counter[str] = Counter()
        self._db_lock = threading.Lock()  # the connection: the writer, and rare reads
        self._lock = threading.Lock()  # the queues: held only for microseconds
        self._wake = threading.Condition(self._lock)
        self._tasks: dict[str, tuple[object, ...]] = {}
        self._shards: dict[tuple[str, int], tuple[object, ...]] = {}
        self._logs: list[tuple[object, ...]] = []
        self._forget: set[str] = set()
        self._waiters: list[_Waiter] = []
        self._closing = False
        self._closed = threading.Event()  # cuts a retry's wait short
        self._failing = False  # the last commit failed (the writer thread's own)
        self._hurry = threading.Event()  # an urgent ``committed``: cut the batch delay short
        self._writer = threading.Thread(target=self._run, name="task-store", daemon=True)
        self._writer.start()

    # ---- reading (blocking; call through asyncio.to_thread) ---------------------------------

    def load(self) -> list[StoredTask]:
        """Every stored task with its shards, oldest first."""
        with self._db_lock:
            rows = self._db.execute("SELECT * FROM tasks ORDER BY submitted_at").fetchall()
            shard_rows = self._db.execute("SELECT * FROM shards ORDER BY task_id, idx").fetchall()
        by_task: dict[str, list[tuple[object, ...]]] = {}
        for row in shard_rows:
            by_task.setdefault(str(row[0]), []).append(row)
        loaded = []
        for task_id, spec, submitter, submitted_at, cancel_requested, files_ready in rows:
            shards, results = [], {}
            for row in by_task.get(task_id, []):
                shard, result = _shard_from_row(row)
                shards.append(shard)
                if result is not None:
                    results[shard.index] = result
            task = Task(
                task_id,
                _spec.decode(spec),
                submitted_at=submitted_at,
                submitter=submitter,
                shards=shards,
                cancel_requested=bool(cancel_requested),
            )
            loaded.append(StoredTask(task, bool(files_ready), results))
        return loaded

    def logs(self, task_id: str, shard: int | None = None, appended: int | None = None) -> list[LogRecord]:
        """A task's stored output (one shard's, or all), in arrival order. ``appended`` (from
        ``appended_logs``, taken earlier) cuts it at that moment: later output is left out, so
        a watcher that gets later output live never sees a chunk twice."""
        query = "SELECT rowid, shard, attempt, stream, data FROM logs WHERE task_id = ?"
        args: tuple[object, ...] = (task_id,)
        if shard is not None:
            query += " AND shard = ?"
            args += (shard,)
        with self._db_lock:
            rows = self._db.execute(query + " ORDER BY rowid", args).fetchall()
        records, since_open = [], 0
        for rowid, *record in rows:
            if rowid > self._opened_at_rowid:
                since_open += 1
                if appended is not None and since_open > appended:
                    break
            records.append(LogRecord(*record))
        return records

    def appended_logs(self, task_id: str, shard: int | None = None) -> int:
        """How many output chunks of the task (or one shard) were appended since the store
        opened; ``logs(..., appended=)`` then reads the history up to this moment."""
        if shard is None:
            return self._appended_by_task[task_id]
        return self._appended.get(task_id, Counter())[shard]

    # ---- queued writes (from the event loop; never block) ------------------------------------

    def save_task(self, task: Task, files_ready: bool) -> None:
        row = (task.id, _json.encode(task.spec), task.submitter, task.submitted_at,
               int(task.cancel_requested), int(files_ready))
        with self._lock:
            self._tasks[task.id] = row
            self._wake.notify()

    def save_shard(self, task_id: str, shard: Shard, result: ShardResult | None = None) -> None:
        """Queue the shard's current record (a snapshot: later changes need another save)."""
        row = (
            task_id, shard.index, shard.state.value, shard.attempt, shard.device_id,
            _json.encode(shard.gpu_indices), shard.exit_code, shard.reason, shard.queued_at,
            _json.encode(sorted(shard.reported)), shard.assigned_at, shard.started_at,
            shard.finished_at, None if result is None else _json.encode(result),
            shard.retry_base, _json.encode(shard.placed),
        )
        with self._lock:
            self._shards[(task_id, shard.index)] = row
            self._wake.notify()

    def append_log(self, task_id: str, shard: int, attempt: int, stream: str, data: str) -> None:
        self._appended.setdefault(task_id, Counter())[shard] += 1
        self._appended_by_task[task_id] += 1
        with self._lock:
            self._logs.append((task_id, shard, attempt, stream, data))
            self._wake.notify()

    def forget(self, task_ids: Iterable[str]) -> None:
        """Queue the deletion of tasks with their shards and logs; writes of theirs still
        queued are dropped, and the deletion commits after every earlier write."""
        doomed = set(task_ids)
        for task_id in doomed:  # the event loop's own counts (``appended_logs``)
            self._appended.pop(task_id, None)
            self._appended_by_task.pop(task_id, None)
        with self._lock:
            for task_id in doomed:
                self._tasks.pop(task_id, None)
            self._shards = {key: row for key, row in self._shards.items() if key[0] not in doomed}
            self._logs = [row for row in self._logs if row[0] not in doomed]
            self._forget |= doomed
            self._wake.notify()

    def committed(self, urgent: bool = False, patient: bool = False) -> asyncio.Future[None]:
        """A future done once every write queued before this call is committed. ``urgent``:
        commit without waiting for more writes to join (someone is kept waiting on it).
        A commit that fails fails the future with ``StorageError`` (a request then says so),
        unless ``patient``: then it waits through failures until the writes are stored (what
        may go out only once stored, such as a placement or an acknowledgement)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append(_Waiter(loop, future, patient))
            if urgent:
                self._hurry.set()
            self._wake.notify()
        return future

    async def close(self) -> None:
        """Commit what is queued, stop the writer thread and close the database."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._closed.set()
        await asyncio.to_thread(self._writer.join)
        self._db.close()

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._tasks or self._shards or self._logs or self._forget
                           or self._waiters or self._closing):
                    self._wake.wait()
                closing = self._closing
            if not closing:
                self._hurry.wait(BATCH_DELAY)  # more writes join this transaction meanwhile
            with self._lock:
                self._hurry.clear()
                tasks, self._tasks = self._tasks, {}
                shards, self._shards = self._shards, {}
                logs, self._logs = self._logs, []
                forget, self._forget = self._forget, set()
                waiters, self._waiters = self._waiters, []
                closing = self._closing
            with self._db_lock:
                error = self._commit(tasks, shards, logs, forget)
            self._note(error, closing)
            if error is not None and not closing:
                self._hold(tasks, shards, logs, forget, [w for w in waiters if w.patient])
                waiters = [w for w in waiters if not w.patient]
            failure = None if error is None else StorageError(
                f"the host could not store its task records ({error}); they are kept and "
                "written once its disk has room")
            for waiter in waiters:
                waiter.loop.call_soon_threadsafe(_settle, waiter.future, failure)
            if error is not None and not closing:
                self._closed.wait(RETRY_DELAY)
                continue
            if closing:
                with self._lock:
                    if not (self._tasks or self._shards or self._logs or self._forget
                            or self._waiters):
                        return

    def _note(self, error: Exception | None, closing: bool) -> None:
        """Log when commits start failing and when they work again, not every retry."""
        if error is not None and closing:
            log.error("closing with task records not stored in %s: %s", self.path, error)
        elif error is not None and not self._failing:
            log.error("cannot store task records in %s: %s; trying again every %g s",
                      self.path, error, RETRY_DELAY)
        elif error is None and self._failing:
            log.warning("task records are stored in %s again", self.path)
        self._failing = error is not None

    def _hold(
        self,
        tasks: dict[str, tuple[object, ...]],
        shards: dict[tuple[str, int], tuple[object, ...]],
        logs: list[tuple[object, ...]],
        forget: set[str],
        patient: list[_Waiter],
    ) -> None:
        """Queue the rows of a failed commit again, under any newer save of the same row (a
        task forgotten meanwhile stays forgotten)."""
        with self._lock:
            self._forget |= forget
            tasks = {k: v for k, v in tasks.items() if k not in self._forget}
            shards = {k: v for k, v in shards.items() if k[0] not in self._forget}
            logs = [row for row in logs if row[0] not in self._forget]
            self._tasks = {**tasks, **self._tasks}
            self._shards = {**shards, **self._shards}
            held = logs + self._logs
            if len(held) > MAX_HELD_LOGS:
                log.error("dropped %d lines of shard output: %s cannot store them",
                          len(held) - MAX_HELD_LOGS, self.path)
                held = held[-MAX_HELD_LOGS:]
            self._logs = held
            self._waiters = patient + self._waiters

    def _commit(
        self,
        tasks: dict[str, tuple[object, ...]],
        shards: dict[tuple[str, int], tuple[object, ...]],
        logs: list[tuple[object, ...]],
        forget: set[str],
    ) -> Exception | None:
        if not (tasks or shards or logs or forget):
            return None
        try:
            self._db.execute("BEGIN")
            self._db.executemany(_TASK_SQL, tasks.values())
            self._db.executemany(_SHARD_SQL, shards.values())
            self._db.executemany(_LOG_SQL, logs)
            doomed = [(task_id,) for task_id in forget]
            for table in ("tasks WHERE id", "shards WHERE task_id", "logs WHERE task_id"):
                self._db.executemany(f"DELETE FROM {table} = ?", doomed)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return exc
        return None


@dataclass(frozen=True, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    patient: bool


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _shard_from_row(row: tuple[object, ...]) -> tuple[Shard, ShardResult | None]:
    (_, idx, state, attempt, device_id, gpus, exit_code, reason, queued_at, reported,
     assigned_at, started_at, finished_at, result, retry_base, placed) = row
    shard = Shard(
        index=int(idx),  # type: ignore[call-overload]
        state=ShardState(str(state)),
        attempt=int(attempt),  # type: ignore[call-overload]
        device_id=device_id,  # type: ignore[arg-type]
        gpu_indices=tuple(_ints.decode(gpus)),  # type: ignore[arg-type]
        exit_code=exit_code,  # type: ignore[arg-type]
        reason=str(reason),
        queued_at=queued_at,  # type: ignore[arg-type]
        reported=set(_ints.decode(reported)),  # type: ignore[arg-type]
        assigned_at=assigned_at,  # type: ignore[arg-type]
        started_at=started_at,  # type: ignore[arg-type]
        finished_at=finished_at,  # type: ignore[arg-type]
        retry_base=int(retry_base),  # type: ignore[call-overload]
        placed=_placed.decode(placed),  # type: ignore[arg-type]
    )
    return shard, None if result is None else _result.decode(result)  # type: ignore[arg-type]
