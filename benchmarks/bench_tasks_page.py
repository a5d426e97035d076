"""How fast the window's Tasks page shows a shard finishing, in a pool holding 100,000 shards.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_tasks_page.py [--tasks 50] [--shards 2000]

A host's task store is filled directly (SQLite, through ``TaskStore``) with ``tasks - 1`` ended
tasks of ``shards`` shards each (49 x 2,000 by default), as a pool that has run them would hold them. The real bridge
then hosts that pool (loading the store), joins this machine as a member, and feeds a real
``TasksPage`` from its observer link, as the window does. One more task is submitted whose
``live`` shards each run ``true`` (or sleep ``nap`` seconds): 2,000 by default, for 100,000
shards in 50 tasks. Every
time the host records one more succeeded shard, the time until the page's row shows that
count is measured.

Reported: the latency from a shard's result recorded on the host to the page showing it
(median, 95th percentile, worst; target within a second: the pool pushes changes on its
1 s batch beat), the sizes of the replies the window reads (the subscription's pages and the
pushed change frames), the reply a poll of every task with a line per shard would have been
(what the window asked every 2 s before), and how long the host took to load the store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import qasync  # type: ignore[import-untyped]  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from poolnet_desktop.core.manifest import TaskSpec  # noqa: E402
from poolnet_desktop.core.protocol import encode  # noqa: E402
from poolnet_desktop.core.task_protocol import ShardSummary, TaskList, task_summary  # noqa: E402
from poolnet_desktop.core.tasks import ShardState, Task  # noqa: E402
from poolnet_desktop.gui.bridge import DiscoverySettings, PoolBridge  # noqa: E402
from poolnet_desktop.gui.settings_model import SettingsStore  # noqa: E402
from poolnet_desktop.gui.tasks_page import TasksPage  # noqa: E402
from poolnet_desktop.runtime.datadir import resolve_data_dir  # noqa: E402
from poolnet_desktop.runtime.host.session import Session  # noqa: E402
from poolnet_desktop.runtime.host.task_store import TaskStore  # noqa: E402

DAY = 86_400.0


def ended_task(number: int, shards: int, now: float) -> Task:
    """A task that ran ``shards`` shards on four members and succeeded, days ago."""
    submitted = now - (number + 1) * 3600.0
    spec = TaskSpec(name=f"past-{number:03}", command=("true",), shards=shards, retries=0)
    task = Task(f"past-{number:03}-{number:010x}", spec, submitted_at=submitted, submitter="bench")
    for index in range(shards):
        task.assign(index, f"pn-member{index % 4}", (), now=submitted + 1)
        task.record_result(index, 1, ShardState.SUCCEEDED, now=submitted + 2)
    return task


async def fill_store(path: Path, tasks: int, shards: int) -> tuple[float, int]:
    """Write ``tasks`` ended tasks; the seconds it took, and the size of a poll of them all
    with a line per shard (the reply the window used to ask for every 2 s)."""
    started = time.perf_counter()
    store = TaskStore(path)
    now = time.time()
    poll_bytes = 0
    for number in range(tasks):
        task = ended_task(number, shards, now)
        store.save_task(task, files_ready=True)
        for shard in task.shards:
            store.save_shard(task.id, shard)
        lines = [ShardSummary(index=s.index, state=s.state.value, attempt=s.attempt, device_id=s.device_id,
                              exit_code=s.exit_code, reason=s.reason) for s in task.shards]
        poll_bytes += len(encode(task_summary(task))) + len(msgspec.json.encode(lines))
    await store.committed(urgent=True)
    await store.close()
    return time.perf_counter() - started, poll_bytes


class Watch:
    """When the host recorded each succeeded shard of the live task, when the page showed each
    count, and the size of every frame of tasks the host sent the window."""

    def __init__(self) -> None:
        self.recorded: list[float] = []  # the host's clock at the k-th success
        self.shown: dict[int, float] = {}  # succeeded count -> when the page first showed it
        self.frames: list[tuple[str, int]] = []  # (type, bytes) of task frames to observers

    def latencies(self) -> list[float]:
        out = []
        for count, at in enumerate(self.recorded, start=1):
            seen = min((t for c, t in self.shown.items() if c >= count), default=None)
            if seen is not None:
                out.append(seen - at)
        return out


def count_frames(watch: Watch) -> None:
    """Note the size of every task list and task change the host sends."""
    post_many = Session.post_many

    def counting(session: Session, messages) -> None:  # noqa: ANN001
        for message in messages:
            if message.startswith(b'{"type":"tasks_changed"'):
                watch.frames.append(("tasks_changed", len(message)))
        post_many(session, messages)

    Session.post_many = counting  # type: ignore[method-assign,assignment]
    original_send = Session.send

    async def sending(session: Session, message) -> None:  # noqa: ANN001
        if isinstance(message, TaskList):
            watch.frames.append(("task_list", len(encode(message))))
        await original_send(session, message)

    Session.send = sending  # type: ignore[method-assign,assignment]


def follow_results(bridge: PoolBridge, page: TasksPage, watch: Watch, live_name: str) -> None:
    """Note when the host records each success of the live task, and when the page shows it."""
    host = bridge.host
    assert host is not None
    service = host.tasks
    changed = service.changes.changed

    def on_change(task_id: str) -> None:  # the hook TaskService calls at every change
        task = service.tasks.get(task_id)
        if task is not None and task.spec.name == live_name:
            count = task.count(ShardState.SUCCEEDED)
            while len(watch.recorded) < count:
                watch.recorded.append(time.perf_counter())
        changed(task_id)

    service.changes.changed = on_change  # type: ignore[method-assign,assignment]

    def on_rows(*_args: object) -> None:
        for task in page.model.tasks:
            if task.name == live_name and task.succeeded not in watch.shown:
                watch.shown[task.succeeded] = time.perf_counter()

    page.model.dataChanged.connect(on_rows)
    page.model.rowsInserted.connect(on_rows)


async def run(args: argparse.Namespace, folder: Path) -> None:
    store_settings = SettingsStore(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    store_settings.update(host_port=0, discovery=False, data_dir=str(folder / "data"), device_name="bench",
                          pause_on_battery=False, pause_when_in_use=False)
    data_dir = resolve_data_dir(store_settings.prefs.data_path)
    past = args.tasks - 1
    fill_seconds, poll_bytes = await fill_store(data_dir / "tasks" / "tasks.sqlite3", past, args.shards)
    print(f"store: {past} ended tasks x {args.shards} shards written in {fill_seconds:.1f} s")

    bridge = PoolBridge(store_settings, bind="127.0.0.1", discovery=DiscoverySettings(enabled=False))
    page = TasksPage(device_name=lambda device_id: device_id)
    bridge.tasks_changed.connect(page.apply_changes)
    watch = Watch()
    count_frames(watch)
    started = time.perf_counter()
    await bridge.start()
    store_settings.update(host_pool=True)
    async with asyncio.timeout(120):
        while bridge.host is None or page.model.rowCount() < past:
            await asyncio.sleep(0.05)
    print(f"host up and page filled with {page.model.rowCount()} tasks in {time.perf_counter() - started:.1f} s")
    live_name = "live"
    follow_results(bridge, page, watch, live_name)
    async with asyncio.timeout(60):
        while not bridge.host.tasks._members:  # noqa: SLF001 (this machine's member, ready for shards)
            await asyncio.sleep(0.05)

    manifest = folder / "live.pool.toml"
    command = '["true"]' if args.nap == 0 else f'["sleep", "{args.nap}"]'
    manifest.write_text(f'name = "{live_name}"\ncommand = {command}\nshards = {args.live}\n'
                        "retries = 0\n[resources]\ncpu = 0.5\n")
    bridge.submit([manifest])
    async with asyncio.timeout(300):
        while args.live not in watch.shown:
            await asyncio.sleep(0.02)
    held = bridge.host.tasks.tasks.values()
    print(f"pool: {len(held)} tasks, {sum(len(t.shards) for t in held):,} shards")
    await bridge.stop()

    latencies = sorted(watch.latencies())
    print(f"shard result recorded -> page shows it, over {len(latencies)} results: "
          f"median {statistics.median(latencies):.3f} s, "
          f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.3f} s, worst {latencies[-1]:.3f} s "
          f"(target: within 1 s)")
    lists = [size for kind, size in watch.frames if kind == "task_list"]
    changes = [size for kind, size in watch.frames if kind == "tasks_changed"]
    print(f"subscription pages: {len(lists)}, largest {max(lists, default=0):,} B, all {sum(lists):,} B")
    print(f"pushed change frames: {len(changes)}, largest {max(changes, default=0):,} B, "
          f"median {statistics.median(changes) if changes else 0:,.0f} B")
    print(f"one poll of every task with a line per shard (before): {poll_bytes:,} B (cap 1,048,576 B)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--shards", type=int, default=2000, help="shards of each ended task")
    parser.add_argument("--live", type=int, default=2000, help="shards of the live task")
    parser.add_argument("--nap", type=float, default=0.0, help="seconds each live shard sleeps (0: runs true)")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory(prefix="bench-tasks-page-") as folder:
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            runner.run(run(args, Path(folder)))


if __name__ == "__main__":
    main()
