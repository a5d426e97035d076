"""PoolModel: batches in, the right signals and history out."""

from __future__ import annotations

import msgspec
import pytest
from pytestqt.qtbot import QtBot

from poolnet_desktop.core.devices import PoolTotals
from poolnet_desktop.gui.pool_model import DEVICE_CHANNELS, PoolModel, Resource
from tests.gui.conftest import MakeDevice, MakeState


class Recorder:
    """Every signal the model emits, in order, as (name, argument) pairs."""

    def __init__(self, model: PoolModel) -> None:
        self.events: list[tuple[str, str | None]] = []
        model.device_added.connect(lambda i: self.events.append(("added", i)))
        model.device_changed.connect(lambda i: self.events.append(("changed", i)))
        model.device_removed.connect(lambda i: self.events.append(("removed", i)))
        model.totals_changed.connect(lambda: self.events.append(("totals", None)))
        model.history_changed.connect(lambda: self.events.append(("history", None)))

    def take(self) -> list[tuple[str, str | None]]:
        events, self.events = self.events, []
        return events


def test_first_full_batch_adds_every_device(make_device: MakeDevice, make_state: MakeState) -> None:
    model = PoolModel()
    seen = Recorder(model)
    a, b = make_device("a", "Alpha"), make_device("b", "Beta", cores=4)
    assert model.apply(make_state(1, [a, b], full=True, tasks={"queued": 2}), now=100.0)
    assert seen.take() == [("added", "a"), ("added", "b"), ("totals", None), ("history", None)]
    assert len(model) == 2
    assert model.device("a") == a
    assert model.totals.total_cpu_cores == 12
    assert model.tasks == {"queued": 2}
    assert model.seq == 1


def test_partial_batches_signal_only_real_changes(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    model = PoolModel()
    a, b = make_device("a"), make_device("b")
    model.apply(make_state(1, [a, b], full=True), now=0.0)
    seen = Recorder(model)

    busier = make_device("a", cpu=90.0)
    model.apply(make_state(2, [busier, b]), now=1.0)
    assert seen.take() == [("changed", "a"), ("totals", None), ("history", None)]
    assert model.device("a") == busier

    # Same devices, same totals, same tasks: only the history ticks.
    model.apply(make_state(3, [busier, b]), now=2.0)
    assert seen.take() == [("history", None)]

    model.apply(make_state(4, [make_device("c")], removed=["b"]), now=3.0)
    assert seen.take() == [("removed", "b"), ("added", "c"), ("totals", None), ("history", None)]
    assert sorted(d.id for d in model.devices()) == ["a", "c"]
    assert model.device_history("b") is None


def test_a_full_batch_replaces_everything(make_device: MakeDevice, make_state: MakeState) -> None:
    model = PoolModel()
    model.apply(make_state(1, [make_device("a"), make_device("b")], full=True), now=0.0)
    seen = Recorder(model)
    # A reconnect: the new session starts again at seq 1 with a full batch.
    model.apply(make_state(1, [make_device("b"), make_device("c")], full=True), now=1.0)
    assert seen.take() == [("removed", "a"), ("added", "c"), ("totals", None), ("history", None)]
    assert [d.id for d in model.devices()] == ["b", "c"]


def test_a_full_snapshot_in_parts_removes_only_what_no_part_listed(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    """A snapshot of more than 500 devices comes as parts (as the coordinator splits it): a
    device in a later part keeps its card and history; one absent from every part goes at
    the end."""
    model = PoolModel()
    devices = [make_device(f"d{i:04}") for i in range(1_200)]
    model.apply(make_state(1, [*devices, make_device("gone")], full=True), now=0.0)
    histories = {d.id: model.device_history(d.id) for d in devices}
    seen = Recorder(model)

    # A reconnect: the new session's snapshot no longer lists "gone".
    chunks = [devices[:500], devices[500:1_000], devices[1_000:]]
    for seq, chunk in enumerate(chunks, start=1):
        part = msgspec.structs.replace(
            make_state(seq, chunk, full=seq == 1), more=seq < len(chunks)
        )
        assert model.apply(part, now=float(seq))
        cards = [event for event in seen.take() if event[0] in ("added", "removed")]
        assert cards == ([("removed", "gone")] if seq == len(chunks) else [])

    assert len(model) == 1_200 and model.device("gone") is None
    assert all(model.device_history(i) is h for i, h in histories.items())


def test_stale_partial_batches_are_ignored(make_device: MakeDevice, make_state: MakeState) -> None:
    model = PoolModel()
    model.apply(make_state(5, [make_device("a")], full=True), now=0.0)
    seen = Recorder(model)
    assert model.apply(make_state(5, [make_device("a", cpu=99.0)]), now=1.0) is False
    assert model.apply(make_state(3, [make_device("z")]), now=1.0) is False
    assert seen.take() == []
    assert model.device("a") is not None and model.device("a").resources.cpu_usage == 25.0  # type: ignore[union-attr]
    assert model.device("z") is None


def test_removing_an_unknown_id_is_harmless(make_state: MakeState) -> None:
    model = PoolModel()
    seen = Recorder(model)
    model.apply(make_state(1, removed=["ghost"]), now=0.0)
    assert ("removed", "ghost") not in seen.take()


def test_history_records_pooled_use_against_total(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    model = PoolModel(history_seconds=5, sample_interval=1.0)
    for t in range(8):
        device = make_device("a", cpu=10.0 * t, cores=10, gpu=50.0, memory_used=1000.0 + t)
        model.apply(make_state(t + 1, [device], full=t == 0), now=float(t))
    history = model.history
    assert len(history) == 5  # bounded: the ring keeps the last 5 seconds
    assert history.times() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert history.series(Resource.CPU.used) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert history.series(Resource.CPU.total) == [10.0] * 5
    assert history.series(Resource.MEMORY.used) == [1003.0, 1004.0, 1005.0, 1006.0, 1007.0]
    assert history.series(Resource.MEMORY.total) == [16384.0] * 5

    per_device = model.device_history("a")
    assert per_device is not None and per_device.channels == DEVICE_CHANNELS
    assert per_device.series(Resource.CPU.used) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert per_device.series(Resource.GPU.used) == [0.5] * 5


def test_pooled_gpu_in_use_is_busy_share_times_count(make_state: MakeState) -> None:
    model = PoolModel()
    pool = PoolTotals(total_g_p_us=4, gpu_usage=25.0, devices=2)
    model.apply(make_state(1, full=True, pool=pool), now=0.0)
    assert model.history.latest(Resource.GPU.used) == 1.0
    assert model.history.latest(Resource.GPU.total) == 4.0


def test_offline_devices_count_as_nothing_in_use(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    model = PoolModel()
    model.apply(make_state(1, [make_device("a", cpu=50.0)], full=True), now=0.0)
    model.apply(make_state(2, [make_device("a", cpu=50.0, online=False)]), now=1.0)
    per_device = model.device_history("a")
    assert per_device is not None
    assert per_device.series(Resource.CPU.used) == [4.0, 0.0]
    assert model.history.series(Resource.CPU.total) == [8.0, 0.0]


def test_batches_faster_than_the_interval_share_one_sample(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    model = PoolModel(sample_interval=1.0)
    for i, now in enumerate([0.0, 0.25, 0.5, 0.75, 1.0]):
        model.apply(make_state(i + 1, [make_device("a", cpu=10.0 * i)], full=i == 0), now=now)
    assert model.history.times() == [0.75, 1.0]
    assert model.history.series(Resource.CPU.used) == [2.4, 3.2]


def test_within_a_sample_only_the_batch_devices_are_rewritten(
    make_device: MakeDevice, make_state: MakeState
) -> None:
    """Every device takes a slot when a sample starts; between, only the batch's devices
    (the others have not changed), so a 5,000-device pool costs one part's records."""
    model = PoolModel(sample_interval=1.0)
    model.apply(make_state(1, [make_device("a"), make_device("b")], full=True), now=0.0)
    model.apply(make_state(2, [make_device("a", cpu=50.0)]), now=0.5)
    a, b = model.device_history("a"), model.device_history("b")
    assert a is not None and b is not None
    assert a.times() == [0.5] and a.series(Resource.CPU.used) == [4.0]
    assert b.times() == [0.0]

    model.apply(make_state(3, [make_device("a", cpu=75.0)]), now=1.0)
    assert a.times() == [0.5, 1.0] and a.series(Resource.CPU.used) == [4.0, 6.0]
    assert b.times() == [0.0, 1.0] and b.series(Resource.CPU.used) == [2.0, 2.0]


def test_signals_carry_ids_to_qt_slots(
    qtbot: QtBot, make_device: MakeDevice, make_state: MakeState
) -> None:
    model = PoolModel()
    with qtbot.waitSignal(model.device_added) as blocker:
        model.apply(make_state(1, [make_device("only")], full=True), now=0.0)
    assert blocker.args == ["only"]


def test_bad_history_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_interval"):
        PoolModel(history_seconds=10, sample_interval=0)
    with pytest.raises(ValueError, match="sample_interval"):
        PoolModel(history_seconds=1, sample_interval=2)
