"""runtime.security.trust on real files: the coordinator's SQLite store and a member's pins."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from poolnet_desktop.core.wire import StorageError
from poolnet_desktop.runtime.security.trust import ApprovedDevice, PinnedHosts, TrustStore
from tests.conftest import posix_only


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[TrustStore]:
    s = await TrustStore.open(tmp_path / "trust.db")
    yield s
    await s.close()


def device(n: int) -> ApprovedDevice:
    return ApprovedDevice(f"pn-{n}", f"box {n}", f"key{n}", 1000.0 + n)


@pytest.mark.asyncio
@posix_only("POSIX file modes")
async def test_approved_devices_persist_across_reopen(tmp_path: Path, store: TrustStore) -> None:
    await store.approve(device(1))
    await store.approve(device(2))
    assert await store.approved("pn-1") == device(1)
    assert await store.approved("pn-9") is None
    await store.close()
    await store.close()  # twice is fine
    reopened = await TrustStore.open(tmp_path / "trust.db")
    try:
        assert await reopened.devices() == [device(1), device(2)]
    finally:
        await reopened.close()
    assert stat.S_IMODE((tmp_path / "trust.db").stat().st_mode) == 0o600
    with sqlite3.connect(tmp_path / "trust.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.asyncio
async def test_revoked_devices_are_removed_and_kept_out(store: TrustStore) -> None:
    await store.approve(device(1))
    assert await store.revoke("pn-1", at=5.0, reason="stolen") is True
    assert await store.approved("pn-1") is None
    assert await store.is_revoked("pn-1")
    with pytest.raises(ValueError, match="revoked"):
        await store.approve(device(1))
    # A device never seen can be revoked in advance.
    assert await store.revoke("pn-7", at=6.0) is False
    assert await store.revoked() == ["pn-1", "pn-7"]
    assert not await store.is_revoked("pn-2")


@pytest.mark.asyncio
async def test_audit_log_is_queried_newest_first_with_filters(store: TrustStore) -> None:
    await store.record("join", at=1.0, device_id="pn-1", address="10.0.0.1", detail="member")
    await store.record("refused", at=2.0, device_id="pn-2", address="10.0.0.2", detail="auth_failed: wrong code")
    await store.record("submit", at=3.0, device_id="pn-1", address="10.0.0.1", detail="task t1")
    everything = await store.audit_log()
    assert [e.event for e in everything] == ["submit", "refused", "join"]
    assert [e.event for e in await store.audit_log(device_id="pn-1")] == ["submit", "join"]
    refused = await store.audit_log(event="refused")
    assert [(e.device_id, e.address, e.detail) for e in refused] == [("pn-2", "10.0.0.2", "auth_failed: wrong code")]
    assert [e.time for e in await store.audit_log(since=2.0)] == [3.0, 2.0]
    assert len(await store.audit_log(limit=1)) == 1


@pytest.mark.asyncio
async def test_audit_refuses_unknown_events(store: TrustStore) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        await store.record("hack", at=1.0)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_closed_store_says_so(store: TrustStore) -> None:
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.devices()


@posix_only("POSIX file modes")
def test_pins_persist_privately_and_never_change_silently(tmp_path: Path) -> None:
    path = tmp_path / "member" / "pinned_hosts.json"
    pins = PinnedHosts.load(path)
    assert pins.get("pool-1") is None
    pins.pin("pool-1", "aa" * 32)
    pins.pin("pool-1", "aa" * 32)  # the same pin again is a no-op
    with pytest.raises(ValueError, match="pinned to another certificate"):
        pins.pin("pool-1", "bb" * 32)
    again = PinnedHosts.load(path)
    assert again.all() == {"pool-1": "aa" * 32}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.forget("pool-1") is True
    assert again.forget("pool-1") is False
    assert PinnedHosts.load(path).all() == {}


@pytest.mark.parametrize("content", ["{not json", json.dumps({"hosts": {"p": 3}}), json.dumps([1, 2])])
def test_a_corrupt_pin_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "pinned_hosts.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="pinned hosts file"):
        PinnedHosts.load(path)


@pytest.mark.asyncio
async def test_a_store_made_before_permissions_gains_them_and_keeps_its_devices(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE devices (device_id TEXT PRIMARY KEY, name TEXT NOT NULL, public_key TEXT NOT NULL,"
        " approved_at REAL NOT NULL);"
        "INSERT INTO devices VALUES ('pn-1', 'box 1', 'key1', 1001.0);"
    )
    old.commit()
    old.close()
    store = await TrustStore.open(path)
    try:
        # What every device could do before, until the owner takes something away.
        assert await store.approved("pn-1") == device(1)
        assert (await store.approved("pn-1")).permissions == {"member", "observer", "submit"}
        assert await store.set_permissions("pn-1", frozenset({"observer"}))
        assert not await store.set_permissions("pn-9", frozenset({"observer"}))
    finally:
        await store.close()
    reopened = await TrustStore.open(path)
    try:
        assert (await reopened.approved("pn-1")).permissions == {"observer"}
    finally:
        await reopened.close()


@pytest.mark.asyncio
async def test_forgetting_all_approvals_keeps_only_the_one_named(store: TrustStore) -> None:
    for n in (1, 2, 3):
        await store.approve(device(n))
    assert sorted(await store.forget_all_except("pn-2")) == ["pn-1", "pn-3"]
    assert [d.device_id for d in await store.devices()] == ["pn-2"]
    assert await store.revoked() == []  # dropped, not revoked: they may pair again


@pytest.mark.asyncio
async def test_a_full_store_logs_the_audit_entries_it_cannot_keep_and_refuses_other_writes(
    store: TrustStore, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's page limit makes the file full (SQLITE_FULL, what a full disk answers): a
    login's audit entry must never refuse the login, an approval must say it was not kept."""
    pages = await store._run(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    await store._run(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
    for n in range(50):
        await store.record("join", at=1.0, device_id=f"pn-{n}", detail="x" * 1000)  # never raises
    assert "audit entry not stored" in caplog.text and "pn-49" in caplog.text
    with pytest.raises(StorageError, match="database or disk is full"):
        for n in range(50):
            await store.approve(ApprovedDevice(f"pn-{n}", "box", "k" * 1000, 1.0))

    await store._run(lambda db: db.execute("PRAGMA max_page_count = 1000000"))  # room again
    await store.record("join", at=2.0, device_id="pn-back")
    assert (await store.audit_log(limit=1))[0].device_id == "pn-back"
