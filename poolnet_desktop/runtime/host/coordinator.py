"""The coordinator: the pool's registry, its message handling, and its periodic work.

Transport-agnostic: ``server.py`` owns the sockets and hands each decoded message to
``handle_now`` (members' reports, handled as they arrive) or ``dispatch`` (the rest, in the
peer's turn). Fan-out is coalesced: observers receive at most one ``pool_state`` batch per
``batch_interval``, and seed clients at most one relayed ``resource_update`` per device per
interval (capped per client), so traffic does not grow with the square of the pool. Liveness is
one sweep per second over all devices, not a timer per device.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from poolnet_desktop.core.allocation import allocate
from poolnet_desktop.core.devices import Device, DeviceRegistry, iso8601
from poolnet_desktop.core.dialects import SEED_MESSAGES, SEED_ROLE, SeedAdmission, may_send, seed_id_refusal
from poolnet_desktop.core.permissions import Action
from poolnet_desktop.core.protocol import (
    PROTOCOL_VERSION,
    ClientMessage,
    DeviceJoined,
    DeviceLeft,
    Devices,
    Error,
    ErrorCode,
    Forget,
    Heartbeat,
    Hello,
    PoolState,
    ProtocolError,
    Register,
    ResourceAllocation,
    ResourceRequest,
    ResourceUpdate,
    SeedTaskOutcome,
    ServerShutdown,
    SetAcceptTasks,
    TaskResult,
    TaskSubmit,
    Welcome,
    encode,
)
from poolnet_desktop.core.wire import StorageError, message_type
from poolnet_desktop.runtime.host.session import Session

log = logging.getLogger(__name__)

Handler = Callable[[Session, Any], Awaitable[None]]
ImmediateHandler = Callable[[Session, Any], None]

# WebSocket close codes used by the coordinator (4000-4999 are for applications).
CLOSE_HEARTBEAT_TIMEOUT = 4000
CLOSE_REPLACED = 4001  # and session.CLOSE_TOO_SLOW, 4002
# Devices per pool_state frame: about 0.3 MB typical and well under MAX_CONTROL_MESSAGE at the
# longest names, so a 5,000-device pool never sends a frame its observers must refuse (1009).
POOL_STATE_PART = 500


@dataclass
class CoordinatorConfig:
    """Timings in seconds; the seed's are a 5 s heartbeat, 2 s resources and a 30 s timeout."""

    pool_id: str
    pool_name: str
    heartbeat_interval: float = 5.0
    resource_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    # A member silent this long (two heartbeats missed) is overdue: still in the pool, but its
    # shards run again elsewhere at once rather than at the timeout (a stopped or sleeping box).
    overdue_after: float = 12.0
    batch_interval: float = 1.0
    sweep_interval: float = 1.0
    # Observers send nothing on their own: each is pinged this often and closed when the last
    # ping got no pong by the next (members show they are alive by their heartbeats).
    observer_ping_interval: float = 20.0
    seed_relay_cap: int = 200
    max_errors_per_session: int = 20
    # The seed's task_submit runs shell commands: only when the host explicitly allows it.
    seed_may_submit: bool = False
    # How many seed devices are kept, how fast one address may register new ones, and how
    # long an offline one is remembered (seed clients are not authenticated).
    max_seed_devices: int = 500
    keep_offline_seed_devices: float = 600.0


class Coordinator:
    """Owns the device registry and every live session; safe to ``stop()`` twice."""

    def __init__(
        self,
        config: CoordinatorConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.registry = DeviceRegistry()
        self.seed_admission = SeedAdmission(
            max_devices=config.max_seed_devices, keep_offline=config.keep_offline_seed_devices
        )
        self.started_at = wall_clock()
        self._clock = clock
        self._wall = wall_clock
        self._sessions: set[Session] = set()
        # The introduced sessions each batch goes to, kept as they come and go: a batch or a
        # sweep never walks every member's session to find them.
        self._observers: set[Session] = set()
        self._seed_clients: set[Session] = set()
        self._by_device: dict[str, Session] = {}
        self._seq = 0
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._handlers: dict[type, Handler] = {
            Register: self._on_register,
            Hello: self._on_hello,
            ResourceRequest: self._on_resource_request,
            TaskSubmit: self._on_seed_task_submit,
            SetAcceptTasks: self._on_set_accept_tasks,
            Forget: self._on_forget,
        }
        # Members' reports, nearly all of a pool's traffic: handled as they arrive, never waiting.
        self._immediate: dict[type, ImmediateHandler] = {
            Heartbeat: self._on_heartbeat,
            ResourceUpdate: self._on_resource_update,
        }
        self.task_counts: Callable[[], dict[str, int]] = dict
        # Services that follow sessions and members (the task service) listen here instead
        # of polling. ``left_listeners``: a session ended, or stopped speaking for its member
        # (replaced by a newer connection, heartbeat timeout), with that member's id, else
        # None. ``share_listeners``: a member's resources or accept-tasks changed.
        # ``overdue_listeners``: a member became overdue (True) or was heard from again (False).
        self.left_listeners: list[Callable[[Session, str | None], None]] = []
        self.share_listeners: list[Callable[[str], None]] = []
        self.overdue_listeners: list[Callable[[str, bool], None]] = []
        self._overdue: set[str] = set()
        # Called at every batch, before the devices' changes go out: the task service's
        # changes are pushed on the same beat (``runtime.host.task_changes``).
        self.batch_listeners: list[Callable[[], None]] = []
        # Set by the task service: shards by state, for ``/metrics``.
        self.shard_counts: Callable[[], dict[str, int]] = dict
        # Set by ``runtime.host.metrics``: (message type, seconds spent handling it).
        self.observe_dispatch: Callable[[str, float], None] | None = None
        # Set by the host: proves who sent a hello. Returns False when the peer was refused
        # (the authenticator has already answered and closed the connection).
        self.authenticate: Callable[[Session, Hello], Awaitable[bool]] | None = None
        self.owner_id: str | None = None
        self.messages_in = 0
        self.messages_out = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic batch and liveness loops on the running event loop."""
        self._loops = [
            asyncio.create_task(self._every(self.config.batch_interval, self.flush_batch), name="batch"),
            asyncio.create_task(self._every(self.config.sweep_interval, self.sweep), name="sweep"),
        ]

    async def stop(self) -> None:
        """Tell every PoolNet peer the pool is stopping, close all sessions, end the loops."""
        if self._stopping:
            return
        self._stopping = True
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        notice = encode(ServerShutdown(reason="the pool's host is shutting down"))
        sessions = list(self._sessions)
        for session in sessions:
            if session.dialect == "poolnet":
                session.post(notice)
        await asyncio.gather(*(s.close(1001, "server shutting down") for s in sessions), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run a fire-and-forget coroutine while keeping a reference until it ends."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def add_handler(self, message_type: type, handler: Handler) -> None:
        """Let a service (tasks, security) handle a message type the coordinator does not."""
        self._handlers[message_type] = handler

    # ---- connections -------------------------------------------------------------------------

    def connected(self, session: Session) -> None:
        self._sessions.add(session)

    def disconnected(self, session: Session) -> None:
        """A connection ended: its device goes offline and seed clients hear ``device_left``."""
        self._sessions.discard(session)
        self._observers.discard(session)
        self._seed_clients.discard(session)
        device_id = session.device_id
        if device_id is None or self._by_device.get(device_id) is not session:
            self._tell_left(session, None)
            return
        del self._by_device[device_id]
        if self.registry.mark_offline(device_id):
            self._tell_seed_clients(DeviceLeft(device_id=device_id))
        self._tell_left(session, device_id)

    def _find_overdue(self, now: float) -> None:
        """Tell the listeners which members became overdue since the last sweep, and which
        overdue ones were heard from again (those gone offline are the left listeners')."""
        overdue = {d for d in self.registry.expired(now, self.config.overdue_after) if d in self._by_device}
        for device_id in sorted(overdue - self._overdue):
            log.info("member %s is overdue: no heartbeat for %.0f s", device_id, self.config.overdue_after)
            for listener in self.overdue_listeners:
                listener(device_id, True)
        for device_id in sorted(self._overdue - overdue):
            if device_id in self._by_device:
                for listener in self.overdue_listeners:
                    listener(device_id, False)
        self._overdue = overdue

    def _tell_left(self, session: Session, device_id: str | None) -> None:
        for listener in self.left_listeners:
            listener(session, device_id)

    def _tell_share(self, device_id: str) -> None:
        for listener in self.share_listeners:
            listener(device_id)

    def cut_off(self, peer_id: str, code: int, reason: str) -> None:
        """Close every connection of ``peer_id`` (its member link and any observers) now."""
        for session in list(self._sessions):
            if session.peer_id == peer_id:
                self._spawn(session.close(code, reason))

    def session_for(self, device_id: str) -> Session | None:
        return self._by_device.get(device_id)

    @property
    def sessions(self) -> frozenset[Session]:
        return frozenset(self._sessions)

    def is_connected(self, session: Session) -> bool:
        return session in self._sessions

    def session_kinds(self) -> Counter[tuple[str, str]]:
        """Open connections by (dialect, role), "none" where not introduced yet."""
        return Counter((s.dialect or "none", s.role or "none") for s in self._sessions)

    @property
    def session_count(self) -> int:
        """Open connections, without copying them (asked on every new connection)."""
        return len(self._sessions)

    def handle_now(self, session: Session, message: ClientMessage) -> bool:
        """Handle a heartbeat or a resource report from an introduced peer here and now; False
        for any other message (``dispatch`` it). A ``ProtocolError`` is answered in the background."""
        handler = self._immediate.get(type(message))
        if handler is None or not session.introduced:
            return False
        started = self._arrived(session)
        try:
            handler(session, message)
        except ProtocolError as exc:
            self.refuse(session, exc)
        finally:
            self._handled(message, started)
        return True

    async def dispatch(self, session: Session, message: ClientMessage) -> None:
        """Handle one validated message; a ``ProtocolError`` becomes an ``error`` reply."""
        if self.handle_now(session, message):
            return
        handler = self._handlers.get(type(message))
        started = self._arrived(session)
        try:
            tag = message_type(message)
            if not may_send(session.dialect, tag, self.config.seed_may_submit):
                if isinstance(message, TaskSubmit) and session.dialect == "seed":
                    # The seed's own answer to a submission: a failed task_result.
                    await self.refuse_task_submit(session, message, "seed clients may only observe this pool")
                    return
                raise self._dialect_refusal(session, tag)
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"{tag!r} is not accepted here")
            await handler(session, message)
        except ProtocolError as exc:
            self.refuse(session, exc)
        except StorageError as exc:
            # The host's disk, not the peer: answered, not counted against the session.
            log.warning("could not store what %s from %s needs: %s", tag, session.address, exc)
            session.post(encode(Error(code=ErrorCode.STORAGE_FAILED, message=str(exc))))
        finally:
            self._handled(message, started)

    @staticmethod
    def _dialect_refusal(session: Session, tag: str) -> ProtocolError:
        """The error for a message the session's dialect may not send (``core.dialects``);
        the reports handled at once (heartbeat, resource_update) are both dialects' own."""
        if session.dialect is None:
            return ProtocolError(ErrorCode.NOT_REGISTERED, "send 'register' (or 'hello') first")
        if session.dialect == "seed":
            allowed = ", ".join(sorted(SEED_MESSAGES))
            return ProtocolError(ErrorCode.FORBIDDEN, f"seed clients may send only {allowed}; not {tag!r}")
        return ProtocolError(ErrorCode.FORBIDDEN, f"{tag!r} is a seed-protocol message, not for PoolNet sessions")

    def _arrived(self, session: Session) -> float:
        """Count a message and note its device's sign of life; the time handling starts."""
        self.messages_in += 1
        if session.device_id is not None:
            self.registry.touch(session.device_id, self._clock(), self._wall())
        return time.perf_counter()

    def _handled(self, message: ClientMessage, started: float) -> None:
        if self.observe_dispatch is not None:
            self.observe_dispatch(message_type(message), time.perf_counter() - started)

    def refuse(self, session: Session, error: ProtocolError) -> None:
        """Answer a bad message without waiting; a peer that keeps sending them is closed
        (policy violation), once. Nothing waits here: a flood of bad reports handled as they
        arrive must not become a flood of tasks."""
        session.errors += 1
        log.info("refused from %s: %s (%s)", session.address, error.message, error.code)
        session.post(encode(Error(code=error.code, message=error.message)))
        if session.errors == self.config.max_errors_per_session:
            self._spawn(session.close(1008, "too many invalid messages"))

    # ---- seed dialect ------------------------------------------------------------------------

    async def _on_register(self, session: Session, message: Register) -> None:
        if session.introduced:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, "this connection is already registered")
        if "seed" not in session.accepts:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "seed-protocol clients connect on the pool's legacy port, if its host allows them"
            )
        self._check_seed_registration(session, message.device_id)
        session.dialect, session.role, session.peer_id = "seed", "member", message.device_id
        self._seed_clients.add(session)
        device = self._admit(session, message.device_id, message.device_name, message.platform, SEED_ROLE)
        # Seed clients never run PoolNet shards: they are shown, never given work.
        self.registry.set_accept_tasks(device.id, False)
        online = [d.view() for d in self.registry.online()]
        await session.send(Devices(devices=online))
        self._tell_seed_clients(DeviceJoined(device=device.view()), exclude=session)

    def _check_seed_registration(self, session: Session, device_id: str) -> None:
        """Refuse an id in PoolNet's namespace, a new device past the cap on seed devices, and
        an address registering new devices too fast (``core.dialects``)."""
        refusal = seed_id_refusal(device_id)
        if refusal is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, refusal)
        existing = self.registry.get(device_id)
        if existing is not None:
            if existing.role != SEED_ROLE:  # whatever form PoolNet's ids take
                raise ProtocolError(ErrorCode.FORBIDDEN, f"{device_id!r} is a PoolNet device's id")
            return  # a seed device coming back takes no new room
        seed_devices = sum(1 for d in self.registry.all() if d.role == SEED_ROLE)
        refusal = self.seed_admission.capacity_refusal(seed_devices)
        if refusal is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, refusal)
        refusal = self.seed_admission.rate_refusal(session.address, self._clock())
        if refusal is not None:
            raise ProtocolError(ErrorCode.RATE_LIMITED, refusal)

    def _on_heartbeat(self, session: Session, message: Heartbeat) -> None:
        self._check_own_id(session, message.device_id)

    def _on_resource_update(self, session: Session, message: ResourceUpdate) -> None:
        if session.role != "member":
            raise ProtocolError(ErrorCode.FORBIDDEN, "only members report resources")
        self._check_own_id(session, message.device_id)
        assert session.device_id is not None
        if self.registry.update_resources(session.device_id, message.resources):
            self._tell_share(session.device_id)

    async def _on_resource_request(self, session: Session, message: ResourceRequest) -> None:
        requester = session.device_id or message.device_id or ""
        allocation = allocate(
            self.registry.online(),
            requester,
            message.requirements,
            allocation_id=uuid.uuid4().hex,
            timestamp=iso8601(self._wall()),
        )
        await session.send(ResourceAllocation(allocation=allocation))

    async def _on_seed_task_submit(self, session: Session, message: TaskSubmit) -> None:
        """Without a task service, say so plainly: the seed's fake success is not repeated."""
        await self.refuse_task_submit(session, message, "this pool does not run tasks")

    async def refuse_task_submit(self, session: Session, message: TaskSubmit, reason: str) -> None:
        """Answer a seed ``task_submit`` with a failed ``task_result`` that says why."""
        await session.send(
            TaskResult(
                task_id=message.task.id,
                result=SeedTaskOutcome(success=False, error=reason),
            )
        )

    # ---- PoolNet dialect ---------------------------------------------------------------------

    async def _on_hello(self, session: Session, message: Hello) -> None:
        if session.introduced:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, "this connection already said hello")
        if "poolnet" not in session.accepts:
            raise ProtocolError(ErrorCode.FORBIDDEN, "PoolNet clients connect over wss:// on the pool's main port")
        if message.protocol != PROTOCOL_VERSION:
            await session.send_error(
                ErrorCode.UNSUPPORTED_PROTOCOL,
                f"this pool speaks protocol {PROTOCOL_VERSION}, the client {message.protocol}",
            )
            await session.close(1008, "unsupported protocol version")
            return
        if self.authenticate is not None and not await self.authenticate(session, message):
            return
        session.owner = message.device_id == self.owner_id
        await self.welcome(session, message)

    async def welcome(self, session: Session, hello: Hello) -> None:
        """Open a PoolNet session for an (authenticated) hello: members join, observers watch."""
        session.dialect, session.role, session.peer_id = "poolnet", hello.role, hello.device_id
        if hello.role == "member":
            self._admit(session, hello.device_id, hello.device_name, hello.platform, "member")
            self.registry.set_accept_tasks(hello.device_id, hello.accept_tasks)
            self.registry.set_sandbox(hello.device_id, hello.sandbox)
        else:
            session.device_id = None
        await session.send(
            Welcome(
                protocol=PROTOCOL_VERSION,
                pool_id=self.config.pool_id,
                pool_name=self.config.pool_name,
                device_id=hello.device_id,
                heartbeat_interval=self.config.heartbeat_interval,
                resource_interval=self.config.resource_interval,
                heartbeat_timeout=self.config.heartbeat_timeout,
            )
        )
        if hello.role == "observer":
            self._observers.add(session)
            # The parts are queued in one step, not sent with an await each: a batch broadcast
            # while one waited for the socket to drain would land inside the snapshot, and its
            # last part (``more`` false) would end the snapshot early for the observer.
            session.post_many([encode(part) for part in self._pool_states(True, self.registry.all(), [])])

    async def _on_set_accept_tasks(self, session: Session, message: SetAcceptTasks) -> None:
        if session.role != "member" or session.dialect != "poolnet" or session.device_id is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only PoolNet members run tasks")
        self.registry.set_accept_tasks(session.device_id, message.accept)
        self._tell_share(session.device_id)

    async def _on_forget(self, session: Session, message: Forget) -> None:
        session.require(Action.FORGET)
        device = self.registry.get(message.device_id)
        if device is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no device {message.device_id!r}")
        if device.online:
            raise ProtocolError(ErrorCode.FORBIDDEN, "an online device cannot be forgotten")
        self.registry.forget(message.device_id)

    # ---- helpers -----------------------------------------------------------------------------

    def _admit(self, session: Session, device_id: str, name: str, platform: str, role: str) -> Device:
        previous = self._by_device.get(device_id)
        if previous is not None and previous is not session:
            # The newest connection wins: the old one is usually a half-dead link.
            previous.device_id = None
            self._spawn(previous.close(CLOSE_REPLACED, "replaced by a newer connection"))
            self._tell_left(previous, device_id)
        session.device_id = device_id
        self._by_device[device_id] = session
        return self.registry.register(
            device_id, name or device_id, platform, session.address, role, self._clock(), self._wall()
        )

    @staticmethod
    def _check_own_id(session: Session, claimed: str | None) -> None:
        if claimed is not None and claimed != session.device_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "a connection may only speak for its own device")

    def _seed_sessions(self, exclude: Session | None = None) -> list[Session]:
        return [s for s in self._seed_clients if s is not exclude]

    def _tell_seed_clients(self, message: Any, exclude: Session | None = None) -> None:
        targets = self._seed_sessions(exclude)
        if targets:
            self._broadcast(targets, [encode(message)])

    def _broadcast(self, sessions: list[Session], messages: list[bytes]) -> None:
        """Queue text frames to many peers without waiting, in one write to each (peers too
        slow to drain are closed: ``Session.post_many``). The JSON goes out as the encoder's
        UTF-8 bytes: no ``str`` made to be encoded back (batches are hundreds of KB a second)."""
        for session in sessions:
            session.post_many(messages)
        self.messages_out += len(sessions) * len(messages)

    def _pool_states(self, full: bool, changed: list, removed: list[str]) -> list[PoolState]:
        """One batch as frames of at most ``POOL_STATE_PART`` devices, each with its own
        ``seq``. Only the first is ``full`` and only the first carries ``removed``; every part
        but the last has ``more``, so an observer removes the devices a full snapshot did not
        list only once it has every part. The totals are computed once for all of them."""
        pool, tasks = self.registry.totals(), self.task_counts()
        parts = []
        count = max(len(changed), 1)
        for start in range(0, count, POOL_STATE_PART):
            self._seq += 1
            parts.append(PoolState(
                seq=self._seq,
                full=full and start == 0,
                more=start + POOL_STATE_PART < count,
                devices=[d.view() for d in changed[start : start + POOL_STATE_PART]],
                removed=removed if start == 0 else [],
                pool=pool,
                tasks=tasks,
            ))
        return parts

    # ---- periodic work -----------------------------------------------------------------------

    async def _every(self, interval: float, work: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                work()
            except Exception:  # one bad tick must not end the loop for good
                log.exception("periodic work %s failed", getattr(work, "__name__", work))

    def flush_batch(self) -> None:
        """Send observers what changed since the last batch; relay resources to seed clients."""
        for listener in self.batch_listeners:
            listener()
        changed, removed = self.registry.take_changes()
        if not changed and not removed:
            return
        observers = list(self._observers)
        if observers:
            self._broadcast(observers, [encode(part) for part in self._pool_states(False, changed, removed)])
        seed_clients = self._seed_sessions()
        if seed_clients:
            relays = [
                encode(ResourceUpdate(device_id=d.id, resources=d.resources))
                for d in changed[: self.config.seed_relay_cap]
                if d.online
            ]
            if relays:
                self._broadcast(seed_clients, relays)

    def sweep(self) -> None:
        """Take offline every device silent for longer than the heartbeat timeout; ping the
        observers due for it; forget seed devices offline for long."""
        now = self._clock()
        offline_seed = (
            (d.id, d.last_seen_monotonic) for d in self.registry.all() if d.role == SEED_ROLE and not d.online
        )
        for device_id in self.seed_admission.to_prune(offline_seed, now):
            self.registry.forget(device_id)
        for session in self._observers:
            if not session.checking_alive and now - session.pinged_at >= self.config.observer_ping_interval:
                session.pinged_at = now
                self._spawn(session.check_alive(self.config.observer_ping_interval))
        self._find_overdue(now)
        for device_id in self.registry.expired(now, self.config.heartbeat_timeout):
            log.info("device %s missed its heartbeats: offline", device_id)
            self.registry.mark_offline(device_id)
            self._tell_seed_clients(DeviceLeft(device_id=device_id))
            gone = self._by_device.pop(device_id, None)
            if gone is not None:
                gone.device_id = None
                self._spawn(gone.close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                self._tell_left(gone, device_id)
