"""Who is trusted: the coordinator's ``TrustStore`` and a member's ``PinnedHosts``.

``TrustStore`` is one SQLite file (WAL) holding approved devices, revoked ids and the audit
log. Every statement runs on one dedicated thread, so the event loop never waits on the disk
and writes keep their order. Lookups read the database, not a cache, so a revocation written
by another process (``poolnet devices revoke ID``) takes effect at the next handshake.

A write the disk cannot take (it is full) raises ``StorageError`` for the request that needed
it, except an audit entry: that is logged instead, so a full disk never locks anyone out.

``PinnedHosts`` is a member's small JSON file: pool id -> certificate fingerprint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, get_args

from poolnet_desktop.core.permissions import ALL_PERMISSIONS, format_permissions, parse_permissions
from poolnet_desktop.core.wire import StorageError
from poolnet_desktop.runtime.security.identity import write_private_file

AuditEvent = Literal["join", "approve", "revoke", "refused", "submit", "permissions", "new_identity"]
AUDIT_EVENTS: frozenset[str] = frozenset(get_args(AuditEvent))
_T = TypeVar("_T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    approved_at REAL NOT NULL,
    permissions TEXT NOT NULL DEFAULT 'member,observer,submit'
);
CREATE TABLE IF NOT EXISTS revoked (
    device_id TEXT PRIMARY KEY,
    revoked_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    device_id TEXT NOT NULL,
    address TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
"""
# Stores made before permissions existed: their devices keep what every device could do then
# (the owner can take it away), so an upgrade locks nobody out of the pool they were in.
_ADD_PERMISSIONS = "ALTER TABLE devices ADD COLUMN permissions TEXT NOT NULL DEFAULT 'member,observer,submit'"
_DEVICE_COLUMNS = "device_id, name, public_key, approved_at, permissions"


def _migrate(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(devices)")}
    if "permissions" not in columns:
        db.execute(_ADD_PERMISSIONS)


@dataclass(frozen=True)
class ApprovedDevice:
    device_id: str
    name: str
    public_key: str  # base64 of the raw Ed25519 key
    approved_at: float  # wall-clock seconds
    permissions: frozenset[str] = ALL_PERMISSIONS  # ``core.permissions``

    @classmethod
    def from_row(cls, row: tuple) -> ApprovedDevice:
        device_id, name, public_key, approved_at, permissions = row
        return cls(device_id, name, public_key, approved_at, parse_permissions(permissions))


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: float
    event: str
    device_id: str
    address: str
    detail: str


class TrustStore:
    """The coordinator's record of trust. Open with ``await TrustStore.open(path)``; ``close``
    when done (safe to call twice)."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._db: sqlite3.Connection | None = db

    @classmethod
    async def open(cls, path: Path) -> TrustStore:
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolnet-trust")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # private from the first byte
            os.close(fd)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            _migrate(db)
            return db

        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._db
        if db is None:
            raise RuntimeError("the trust store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)
        except sqlite3.OperationalError as exc:  # "database or disk is full", an I/O error
            raise StorageError(f"the host could not write its trust records ({exc})") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            self._executor.shutdown(wait=True)

    # ---- devices

    async def approved(self, device_id: str) -> ApprovedDevice | None:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?",
                (device_id,),
            ).fetchall()
        )
        return ApprovedDevice.from_row(rows[0]) if rows else None

    async def devices(self) -> list[ApprovedDevice]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY approved_at"
            ).fetchall()
        )
        return [ApprovedDevice.from_row(r) for r in rows]

    async def approve(self, device: ApprovedDevice) -> None:
        """Remember ``device`` as approved. Raises ``ValueError`` for a revoked id: a revoked
        device stays out; it can come back only as a new identity."""

        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction: the check and the insert cannot interleave
                db.execute("BEGIN IMMEDIATE")
                if db.execute("SELECT 1 FROM revoked WHERE device_id = ?", (device.device_id,)).fetchone():
                    raise ValueError(f"device {device.device_id} is revoked")
                db.execute(
                    f"INSERT OR REPLACE INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (device.device_id, device.name, device.public_key, device.approved_at,
                     format_permissions(device.permissions)),
                )

        await self._run(write)

    async def set_permissions(self, device_id: str, permissions: frozenset[str]) -> bool:
        """Replace what an approved device may do (``core.permissions``); False if it is not
        approved. Read at its next handshake and applied to its live sessions by the caller."""
        stored = format_permissions(parse_permissions(permissions))
        changed = await self._run(
            lambda db: db.execute(
                "UPDATE devices SET permissions = ? WHERE device_id = ?", (stored, device_id)
            ).rowcount
        )
        return changed > 0

    async def forget_all_except(self, keep: str) -> list[str]:
        """Drop every approval but ``keep``'s (the pool's identity was replaced: everyone pairs
        again). Returns the ids dropped; they are not revoked and may pair with the new code."""

        def write(db: sqlite3.Connection) -> list[str]:
            with db:
                db.execute("BEGIN IMMEDIATE")
                gone = [r[0] for r in db.execute("SELECT device_id FROM devices WHERE device_id != ?", (keep,))]
                db.execute("DELETE FROM devices WHERE device_id != ?", (keep,))
            return gone

        return await self._run(write)

    async def is_revoked(self, device_id: str) -> bool:
        row = await self._run(
            lambda db: db.execute("SELECT 1 FROM revoked WHERE device_id = ?", (device_id,)).fetchone()
        )
        return row is not None

    async def revoked(self) -> list[str]:
        rows = await self._run(lambda db: db.execute("SELECT device_id FROM revoked ORDER BY revoked_at").fetchall())
        return [r[0] for r in rows]

    async def revoke(self, device_id: str, *, at: float, reason: str = "") -> bool:
        """Revoke ``device_id`` for good (also one never seen, to keep it out in advance).
        Returns True if it was an approved device."""

        def write(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                gone = db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount
                db.execute("INSERT OR IGNORE INTO revoked VALUES (?, ?, ?)", (device_id, at, reason))
            return gone > 0

        return await self._run(write)

    # ---- audit log

    async def record(self, event: AuditEvent, *, at: float, device_id: str = "", address: str = "", detail: str = "") -> None:
        """Append one line to the audit log (``at``: wall-clock seconds). A line the disk
        cannot take is written to the program's log instead: what it records (a login, a
        refusal) already happened, and refusing it over a full disk would lock everyone out."""
        if event not in AUDIT_EVENTS:
            raise ValueError(f"unknown audit event {event!r}; one of {sorted(AUDIT_EVENTS)}")
        try:
            await self._run(
                lambda db: db.execute(
                    "INSERT INTO audit (time, event, device_id, address, detail) VALUES (?, ?, ?, ?, ?)",
                    (at, event, device_id, address, detail[:1000]),
                )
            )
        except StorageError as exc:
            log.error("audit entry not stored (%s): %s device=%s address=%s %s",
                      exc, event, device_id, address, detail[:1000])

    async def audit_log(
        self,
        *,
        event: AuditEvent | None = None,
        device_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest entries first, filtered by any of event, device and time."""
        where, args = [], []
        for clause, value in (("event = ?", event), ("device_id = ?", device_id), ("time >= ?", since)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT id, time, event, device_id, address, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(0, limit))
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [AuditEntry(*r) for r in rows]


class PinnedHosts:
    """A member's pins: for each pool it joined, the fingerprint of its host's certificate.

    Small and rarely written; ``pin`` writes the whole file atomically (call it off the loop).
    """

    VERSION = 1

    def __init__(self, path: Path, pins: dict[str, str]) -> None:
        self.path = path
        self._pins = pins

    @classmethod
    def load(cls, path: Path) -> PinnedHosts:
        """Read ``path`` (a missing file means no pins). Raises ``ValueError`` for a corrupt
        file rather than silently forgetting every pin."""
        return cls(Path(path), read_string_map(Path(path), "hosts", "pinned hosts file", "pool id: fingerprint"))

    def get(self, pool_id: str) -> str | None:
        return self._pins.get(pool_id)

    def all(self) -> dict[str, str]:
        return dict(self._pins)

    def pin(self, pool_id: str, fingerprint: str) -> None:
        """Remember ``fingerprint`` for ``pool_id`` and save. Pinning another fingerprint over
        an existing pin raises ``ValueError``: only ``forget`` may change a pin."""
        current = self._pins.get(pool_id)
        if current == fingerprint:
            return
        if current is not None:
            raise ValueError(f"pool {pool_id} is pinned to another certificate; forget it first")
        self._pins[pool_id] = fingerprint
        self._save()

    def forget(self, pool_id: str) -> bool:
        """Drop the pin for ``pool_id`` (to pair again with a rebuilt host)."""
        if self._pins.pop(pool_id, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        write_string_map(self.path, "hosts", self.VERSION, self._pins)


def read_string_map(path: Path, key: str, what: str, shape: str) -> dict[str, str]:
    """The ``{key: {str: str}}`` map of a small JSON file (missing: empty). ``ValueError`` for
    a corrupt file rather than forgetting what it held, which would reopen trust on first use."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {what} is corrupt ({exc})") from None
    entries = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items()):
        raise ValueError(f"{path}: {what} is not {{'{key}': {{{shape}}}}}")
    return dict(entries)


def write_string_map(path: Path, key: str, version: int, entries: dict[str, str]) -> None:
    """Write the map whole and atomically, 0600 (call it off the event loop)."""
    body = {"version": version, key: entries}
    write_private_file(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
