"""The one door between the Qt window and the asyncio runtime.

``PoolBridge`` owns every live runtime object of the desktop app: this machine's ``Member``, the
optional ``PoolHost`` (Host pool on), the window's observer link and its reconnects, a second
link for task conversations, the LAN browser, and the pause-while-busy watcher. Everything runs
as asyncio tasks on the Qt thread's qasync loop, so nothing here needs a lock against Qt.

The rest of the GUI never imports the runtime: it calls the bridge's methods (each returns at
once and schedules its work) and listens to its signals. Every task the bridge starts is kept in
one set and cancelled by ``stop()``, which shuts things down in order and is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QObject, Signal
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from poolnet_desktop.commands.running import addresses_to_show
from poolnet_desktop.core.devices import DeviceView, iso8601, pool_totals
from poolnet_desktop.core.log_lines import LineJoiner
from poolnet_desktop.core.manifest import ManifestError
from poolnet_desktop.core.permissions import Permission
from poolnet_desktop.core.protocol import Error, Forget, PoolState, ProtocolError
from poolnet_desktop.core.task_protocol import ShardOutput, TaskSummary
from poolnet_desktop.gui.settings_model import Preferences, SettingsStore
from poolnet_desktop.runtime.access import PoolAccess
from poolnet_desktop.runtime.agent import AgentState
from poolnet_desktop.runtime.auth import AuthRefused, PendingApproval
from poolnet_desktop.runtime.backoff import Backoff
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.discovery import DiscoveryError, DiscoverySettings, FoundPool, PoolBrowser
from poolnet_desktop.runtime.identity import Identity
from poolnet_desktop.runtime.link import PoolLink, open_link
from poolnet_desktop.runtime.node import HostOptions, Member, MemberOptions, PoolHost, normalise_pool_url
from poolnet_desktop.runtime.pause import PauseWatcher
from poolnet_desktop.runtime.sampler import ResourceSampler
from poolnet_desktop.runtime.task_client import ENDED, TaskClient
from poolnet_desktop.runtime.task_files import load_task
from poolnet_desktop.runtime.tls import InsecureConnection

log = logging.getLogger(__name__)

# What may break a link to the pool; the loops below show it and try again.
LINK_ERRORS = (
    OSError, TimeoutError, ProtocolError, AuthRefused, InsecureConnection, InvalidHandshake, InvalidURI,
    ConnectionClosed,
)


SUBMIT_WAIT = 15.0  # seconds a submission waits for the pool link before giving up
THIS_COMPUTER = "this-computer"  # the device id of this computer shown alone, before any pool


@dataclass(frozen=True)
class HostInfo:
    """The pool this app hosts, as the host panel shows it."""

    pool_name: str
    port: int
    addresses: tuple[str, ...]
    pairing_code: str | None
    fingerprint: str  # the host's certificate, as members pin it

    @property
    def join_address(self) -> str:
        return f"{self.addresses[0]}:{self.port}"


class PoolBridge(QObject):
    """See the module docstring. ``bind`` and ``discovery`` let tests stay on loopback."""

    pool_state = Signal(object)  # PoolState, from the observer link
    link_changed = Signal(str, str)  # "connected" | "connecting" | "offline" | "none" (no pool), detail
    member_changed = Signal(str, str)  # AgentState value or "none", detail
    host_changed = Signal(object)  # HostInfo | None
    approvals_changed = Signal(list)  # list[PendingApproval]
    trusted_changed = Signal(list)  # list[ApprovedDevice] but the owner, while hosting
    pools_found = Signal(list)  # list[FoundPool]
    paused_changed = Signal(str)  # why sharing is paused, "" when it is not
    tasks_changed = Signal(list)  # list[TaskSummary], all the pool's tasks
    task_submitted = Signal(str, str)  # task id, the file it came from
    task_finished = Signal(object)  # TaskSummary of a task that just ended
    task_log = Signal(str, str)  # task id, text
    results_ready = Signal(str, object)  # task id, Path of its results folder
    task_problem = Signal(str)  # a task that could not be sent, cancelled or fetched, and why
    host_failed = Signal(str)  # why Host pool could not start (its port taken, ...)
    problem = Signal(str)  # anything else the user should read

    def __init__(
        self,
        store: SettingsStore,
        *,
        bind: str = "0.0.0.0",
        discovery: DiscoverySettings | None = None,
        task_poll_interval: float = 2.0,
        activity_interval: float = 5.0,  # how often the pause rules sample the computer
        preview_interval: float = 1.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._bind = bind
        self._discovery_override = discovery
        self._task_poll_interval = task_poll_interval
        self._data_dir = resolve_data_dir(store.prefs.data_path)
        self._prefs = store.prefs
        self._host: PoolHost | None = None
        self._member: Member | None = None
        self._member_task: asyncio.Task[None] | None = None
        self._code: str | None = None
        self._observer: asyncio.Task[None] | None = None
        self._preview: asyncio.Task[None] | None = None
        self._preview_interval = preview_interval
        self._link: PoolLink | None = None
        self._connected = asyncio.Event()  # set while the observer link is open
        self._task_link: PoolLink | None = None
        self._task_lock = asyncio.Lock()
        self._config_lock = asyncio.Lock()
        self._log_follower: asyncio.Task[None] | None = None
        self._browser: PoolBrowser | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task_states: dict[str, str] = {}
        self._sources: dict[str, Path] = {}
        self._pause = PauseWatcher(store.prefs.pause_rules, self._on_pause_changed, interval=activity_interval)
        self._stopped = False
        store.changed.connect(self._on_prefs_changed)

    # ---- what the window reads ---------------------------------------------------------------

    @property
    def device_id(self) -> str:
        """This computer's device id in a pool it joins, for the owner to compare."""
        return Identity.load_or_create(self._data_dir).device_id

    @property
    def data_dir(self) -> Path:
        """This instance's data folder (its identity, stores and results)."""
        return self._data_dir

    @property
    def results_dir(self) -> Path:
        return self._data_dir / "results"

    @property
    def host(self) -> PoolHost | None:
        """The hosted pool, for tests that connect to its port; the window uses ``host_changed``."""
        return self._host

    @property
    def member(self) -> Member | None:
        return self._member

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Host (if set), join, observe, browse and watch activity; returns once started."""
        await self._apply_membership()
        self._spawn(self._restart_browser())
        self._spawn(self._poll_tasks())
        self._spawn(self._pause.run())

    async def stop(self) -> None:
        """Stop in order: background loops, links, the member, the host, the browser."""
        if self._stopped:
            return
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._config_lock:
            await self._stop_member()
            await self._stop_host()
        if self._browser is not None:
            await self._browser.close()
            self._browser = None

    # ---- what the window asks for (each returns at once) ------------------------------------

    def join(self, address: str, code: str) -> None:
        """Leave any hosted pool and join the one at ``address`` with its pairing ``code``."""
        self._code = code.strip() or None
        before = self._store.prefs
        after = self._store.update(pool_address=normalise_pool_url(address.strip()), host_pool=False)
        if after == before:  # same pool again (a new code): nothing signalled, so rejoin here
            self._spawn(self._apply_membership())

    def set_manual_pause(self, paused: bool) -> None:
        self._pause.set_manual(paused)

    def approve(self, device_id: str, allow: bool) -> None:
        if self._host is not None and self._host.access is not None:
            authenticator = self._host.access.authenticator
            (authenticator.approve if allow else authenticator.deny)(device_id)

    def set_permission(self, device_id: str, permission: str, allow: bool) -> None:
        """Grant or take away a permission of an approved device (hosting only)."""
        host = self._host
        if host is None or host.access is None:
            self.problem.emit("only the pool's host changes what devices may do")
            return
        self._spawn(self._set_permission(host.access, device_id, permission, allow))

    async def _set_permission(self, access: PoolAccess, device_id: str, permission: str, allow: bool) -> None:
        try:
            await access.set_permission(device_id, cast(Permission, permission), allow)
        except ProtocolError as exc:
            self.problem.emit(exc.message)
            self._refresh_trusted(access)

    def _refresh_trusted(self, access: PoolAccess) -> None:
        """Show the approved devices but the owner, with their permissions."""

        async def read() -> None:
            devices = await access.store.devices()
            if self._host is not None and self._host.access is access:
                self.trusted_changed.emit([d for d in devices if d.device_id != access.coordinator.owner_id])

        self._spawn(read())

    def new_pairing_code(self) -> None:
        """Replace the hosted pool's pairing code (``host_changed`` shows the new one)."""
        if self._host is not None and self._host.access is not None:
            self._host.access.authenticator.new_pairing_code()

    def forget_device(self, device_id: str) -> None:
        link = self._link
        if link is None:
            self.problem.emit("not connected to the pool: cannot forget the device now")
            return
        self._spawn(link.send(Forget(device_id=device_id)))

    def submit(self, paths: list[Path]) -> None:
        for path in paths:
            self._spawn(self._submit(path))

    def submit_again(self, task_id: str) -> None:
        """Submit the file a task came from again, as a new task."""
        source = self._sources.get(task_id)
        if source is None:
            self.task_problem.emit("only tasks added from this window can be submitted again from it")
            return
        self._spawn(self._submit(source))

    def retry(self, task_id: str) -> None:
        """Run the task's failed, cancelled and lost shards again, as ``poolnet retry`` does."""
        self._spawn(self._task_call(lambda client: client.retry(task_id)))

    def cancel(self, task_id: str) -> None:
        self._spawn(self._task_call(lambda client: client.cancel(task_id)))

    def fetch_results(self, task_id: str) -> None:
        self._spawn(self._fetch_results(task_id))

    def follow_log(self, task_id: str | None) -> None:
        """Stream ``task_id``'s log as ``task_log`` (stored output first); None stops it."""
        if self._log_follower is not None:
            self._log_follower.cancel()
            self._log_follower = None
        if task_id is not None:
            self._log_follower = self._spawn(self._follow_log(task_id))

    # ---- membership: host, member, observer ------------------------------------------------

    def _on_prefs_changed(self, prefs: Preferences) -> None:
        old, self._prefs = self._prefs, prefs
        membership = ("host_pool", "host_port", "pool_address", "device_name", "task_network", "allow_unsandboxed")
        if any(getattr(old, name) != getattr(prefs, name) for name in membership):
            self._spawn(self._apply_membership())
        if old.limits != prefs.limits and self._member is not None:
            self._member.agent.set_limits(prefs.limits)
        self._pause.set_rules(prefs.pause_rules)
        if old.accept_tasks != prefs.accept_tasks:
            self._spawn(self._apply_accepting())
        if old.discovery != prefs.discovery:
            self._spawn(self._restart_browser())

    def _discovery(self) -> DiscoverySettings:
        if self._discovery_override is not None:
            return self._discovery_override
        try:
            return DiscoverySettings.from_env(base=DiscoverySettings(enabled=self._prefs.discovery))
        except DiscoveryError as exc:
            self.problem.emit(str(exc))
            return DiscoverySettings(enabled=False)

    async def _apply_membership(self) -> None:
        """Make the host and the member match the settings (serialised: toggles can race)."""
        async with self._config_lock:
            if self._stopped:
                return
            prefs = self._prefs
            await self._stop_member()
            if self._host is not None and (not prefs.host_pool or self._host.options.port not in (0, prefs.host_port)):
                await self._stop_host()
            if prefs.host_pool and self._host is None:
                await self._start_host(prefs)
            url = self._host.local_url if self._host is not None else prefs.pool_address or None
            if url is None:
                self.member_changed.emit("none", "host one here, or join one")
                self.link_changed.emit("none", "")
                self._preview = self._spawn(self._show_this_computer())
                return
            await self._start_member(url, prefs)

    async def _start_host(self, prefs: Preferences) -> None:
        host = PoolHost(
            HostOptions(data_dir=self._data_dir, bind=self._bind, port=prefs.host_port, discovery=self._discovery())
        )
        try:
            await host.start()
        except OSError as exc:
            with contextlib.suppress(Exception):
                await host.stop()
            self.host_changed.emit(None)
            self.host_failed.emit(f"Not hosting: {exc.strerror or exc}")
            self._store.update(host_pool=False)  # the box shows what is true: no pool hosted here
            return
        assert host.access is not None
        host.access.authenticator.on_pending_changed = self.approvals_changed.emit
        access = host.access
        access.on_devices_changed = lambda: self._refresh_trusted(access)
        # A new code (on demand, or after a revoke) is shown at once.
        access.authenticator.on_code_changed = lambda _code: self._show_host(host)
        self._host = host
        self._refresh_trusted(access)
        self._show_host(host)

    def _show_host(self, host: PoolHost) -> None:
        addresses = tuple(addresses_to_show(self._bind))
        self.host_changed.emit(
            HostInfo(host.coordinator.config.pool_name, host.server.port, addresses, host.pairing_code,
                     host.identity.cert_fingerprint)
        )

    async def _stop_host(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.stop()
            self.host_changed.emit(None)
            self.approvals_changed.emit([])
            self.trusted_changed.emit([])

    async def _start_member(self, url: str, prefs: Preferences) -> None:
        # Hosting, this computer's member gets an identity of its own, never the owner's.
        data_dir = await self._host.prepare_own_member() if self._host is not None else self._data_dir
        member = Member(
            MemberOptions(
                url=url,
                data_dir=data_dir,
                name=prefs.device_name,
                limits=prefs.limits,
                accept_tasks=self._accepting(),
                task_network=prefs.task_network,
                allow_unsandboxed=prefs.allow_unsandboxed,
                hidden_from_tasks=(self._data_dir,),
                code=self._code,
                discovery=self._discovery(),
            )
        )
        member.agent.state_listeners.append(lambda state: self.member_changed.emit(state, member.agent.last_error or ""))
        member.executor.set_paused(bool(self._pause.reason))
        self._member = member
        self._member_task = self._spawn(member.run())
        self._observer = self._spawn(self._observe())

    async def _show_this_computer(self) -> None:
        """Until this computer is in a pool, the window shows it alone, live: its own card and
        charts, not a dashboard of zeros. Each sample is a full snapshot of one device, so the
        pool's first snapshot replaces it once this computer joins."""
        sampler = ResourceSampler(self._data_dir)
        try:
            for seq in itertools.count():
                resources = await asyncio.to_thread(sampler.sample, self._prefs.limits)
                device = DeviceView(
                    id=THIS_COMPUTER, name=f"{self._prefs.device_name} (this computer, not in a pool)",
                    platform=sys.platform, ip_address="127.0.0.1", last_seen=iso8601(time.time()),
                    is_online=True, resources=resources, accept_tasks=False,
                )
                self.pool_state.emit(
                    PoolState(seq=seq, full=True, devices=[device], removed=[], pool=pool_totals([resources]))
                )
                await asyncio.sleep(self._preview_interval)
        finally:
            sampler.close()

    async def _stop_member(self) -> None:
        for task in (self._preview, self._observer, self._log_follower):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._preview = self._observer = self._log_follower = None
        await self._close_task_link()
        member, running = self._member, self._member_task
        self._member = self._member_task = None
        if member is not None:
            await member.stop()
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)

    def _pool_url(self) -> str | None:
        return self._member.agent.config.url if self._member is not None else None

    async def _open(self) -> PoolLink:
        if self._member is None:
            raise OSError("not in a pool")
        config = self._member.agent.config
        if self._host is not None:  # the window acts as the owner; its member is a plain member
            return await open_link(config.url, self._data_dir, "observer", self._prefs.device_name,
                                   identity=self._host.identity)
        return await open_link(config.url, self._data_dir, "observer", self._prefs.device_name, self._code,
                               identity=config.identity, pinned=config.pinned)

    async def _observe(self) -> None:
        """Keep the observer link open and pass every ``pool_state`` batch to the window."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            self.link_changed.emit("connecting", self._pool_url() or "")
            try:
                link = await self._open()
            except LINK_ERRORS as exc:
                self.link_changed.emit("offline", _describe(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._link = link
            self._connected.set()
            self.link_changed.emit("connected", link.welcome.pool_name)
            try:
                while True:
                    message = await link.recv()
                    if isinstance(message, PoolState):
                        self.pool_state.emit(message)
                    elif isinstance(message, Error):
                        self.problem.emit(message.message)
            except LINK_ERRORS as exc:
                self.link_changed.emit("offline", _describe(exc))
            finally:
                self._link = None
                self._connected.clear()
                await link.close()
            await asyncio.sleep(backoff.next_delay())

    async def _restart_browser(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        self._browser = None
        settings = self._discovery()
        if not settings.enabled:
            self.pools_found.emit([])
            return
        browser = PoolBrowser(
            settings, on_added=self._pools_changed, on_updated=self._pools_changed, on_removed=self._pools_changed
        )
        self._browser = browser
        try:
            await browser.start()
        except DiscoveryError as exc:
            self.problem.emit(f"cannot look for pools on the network: {exc}")

    def _pools_changed(self, _pool: FoundPool) -> None:
        if self._browser is not None:
            self.pools_found.emit(list(self._browser.pools.values()))

    # ---- pausing -------------------------------------------------------------------------------

    def _accepting(self) -> bool:
        member = self._member
        contained = member is None or member.executor.may_take_tasks
        return self._prefs.accept_tasks and not self._pause.reason and contained

    def _on_pause_changed(self, reason: str) -> None:
        self.paused_changed.emit(reason)
        if self._member is not None:
            self._member.executor.set_paused(bool(reason))
        self._spawn(self._apply_accepting())

    async def _apply_accepting(self) -> None:
        member = self._member
        if member is not None and member.agent.config.accept_tasks != self._accepting():
            await member.agent.set_accept_tasks(self._accepting())

    # ---- tasks -----------------------------------------------------------------------------

    async def _task_call(self, call: Any) -> Any:
        """Run one task conversation on the (lazily opened) task link; None if it failed."""
        async with self._task_lock:
            try:
                if self._task_link is None:
                    self._task_link = await self._open()
                return await call(TaskClient(self._task_link))
            except ProtocolError as exc:
                self.task_problem.emit(exc.message)
            except LINK_ERRORS as exc:
                log.info("task link failed: %s", _describe(exc))
                await self._close_task_link()
        return None

    async def _close_task_link(self) -> None:
        link, self._task_link = self._task_link, None
        if link is not None:
            await link.close()

    async def _poll_tasks(self) -> None:
        while True:
            if self._link is not None:
                tasks = await self._task_call(lambda client: client.list(detail=True))
                if tasks is not None:
                    self._take_tasks(tasks)
            await asyncio.sleep(self._task_poll_interval)

    def _take_tasks(self, tasks: list[TaskSummary]) -> None:
        for task in tasks:
            before = self._task_states.get(task.id)
            if before is not None and before not in ENDED and task.state in ENDED:
                self.task_finished.emit(task)
            self._task_states[task.id] = task.state
        self.tasks_changed.emit(tasks)

    async def _submit(self, path: Path) -> None:
        try:
            loaded = await asyncio.to_thread(load_task, path)
        except ManifestError as exc:
            self.task_problem.emit(str(exc))
            return
        except OSError as exc:
            self.task_problem.emit(f"cannot read {path.name}: {exc.strerror or exc}")
            return
        try:  # just after start or a switch of pool, the link may be moments away
            async with asyncio.timeout(SUBMIT_WAIT):
                await self._connected.wait()
        except TimeoutError:
            self.task_problem.emit(f"{path.name} was not sent: not connected to a pool")
            return
        task_id = await self._task_call(lambda client: client.submit(loaded))
        if task_id is not None:
            self._sources[task_id] = path
            self._task_states[task_id] = "queued"
            tasks = await self._task_call(lambda client: client.list(detail=True))
            if tasks is not None:
                self._take_tasks(tasks)
            self.task_submitted.emit(task_id, path.name)

    async def _fetch_results(self, task_id: str) -> None:
        folder = await self._task_call(lambda client: client.fetch_results(task_id, self.results_dir))
        if folder is not None:
            self.results_ready.emit(task_id, folder)

    async def _follow_log(self, task_id: str) -> None:
        try:
            link = await self._open()
        except LINK_ERRORS as exc:
            self.task_log.emit(task_id, f"[cannot read the log: {_describe(exc)}]\n")
            return
        joiner = LineJoiner()

        def show(output: ShardOutput) -> None:
            if lines := joiner.feed(output.shard.shard, output.stream, output.data):
                self.task_log.emit(task_id, "".join(line.labelled() for line in lines))

        try:
            await TaskClient(link).logs(task_id, show, follow=True)
            if tails := joiner.rest():
                self.task_log.emit(task_id, "".join(line.labelled() for line in tails))
        except LINK_ERRORS as exc:
            self.task_log.emit(task_id, f"[log ended: {_describe(exc)}]\n")
        finally:
            await link.close()

    # ---- owning tasks ------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bridge task failed", exc_info=task.exception())
            self.problem.emit(f"internal error: {task.exception()}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (AuthRefused, ProtocolError)):
        return exc.message
    return str(exc) or type(exc).__name__


__all__ = ["AgentState", "DiscoverySettings", "HostInfo", "PendingApproval", "PoolBridge"]
