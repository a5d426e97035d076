"""The one door between the Qt window and the asyncio runtime.

``PoolBridge`` turns the window's settings into an ``InstanceConfig`` and runs one
``runtime.instance.Instance`` (the composition root ``poolnet host``/``join`` use too: the host,
this computer's member, the pause policy, the observer and task links, the LAN browser), and
turns the instance's events into Qt signals (devices and task changes are both pushed to it on
the observer link: nothing is polled). Everything runs as asyncio tasks on the Qt thread's
qasync loop, so nothing here needs a lock against Qt.

The rest of the GUI never imports the runtime: it calls the bridge's methods (each returns at
once and schedules its work) and listens to its signals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from PySide6.QtCore import QObject, Signal

from poolnet_desktop.core.log_lines import LineJoiner
from poolnet_desktop.core.manifest import ManifestError
from poolnet_desktop.core.permissions import Permission
from poolnet_desktop.core.pool_url import PoolAddressError, normalise_pool_url
from poolnet_desktop.core.protocol import Forget, PoolState, ProtocolError
from poolnet_desktop.core.task_protocol import ShardOutput, TaskSummary
from poolnet_desktop.gui.settings_model import Preferences, SettingsStore
from poolnet_desktop.runtime.client.env_resolve import ResolveOptions
from poolnet_desktop.runtime.client.task_client import ENDED, TaskClient
from poolnet_desktop.runtime.client.task_files import for_platforms, load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS
from poolnet_desktop.runtime.instance import Instance, InstanceConfig, InstanceEvents, describe
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member
from poolnet_desktop.runtime.net.discovery import DiscoveryError, DiscoverySettings, FoundPool, addresses_to_show
from poolnet_desktop.runtime.security.auth import PendingApproval
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.trust import ApprovedDevice

log = logging.getLogger(__name__)

SUBMIT_WAIT = 15.0  # seconds a submission waits for the pool link before giving up

T = TypeVar("T")


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


class _Relay(InstanceEvents):
    """The instance's events, emitted as the bridge's signals."""

    def __init__(self, bridge: PoolBridge) -> None:
        self._bridge = bridge

    def member_state(self, state: str, detail: str) -> None:
        self._bridge.member_changed.emit(state, detail)

    def host_started(self, host: PoolHost) -> None:
        addresses = tuple(addresses_to_show(host.options.bind))
        self._bridge.host_changed.emit(
            HostInfo(host.coordinator.config.pool_name, host.server.port, addresses, host.pairing_code,
                     host.identity.cert_fingerprint)
        )

    def host_stopped(self) -> None:
        self._bridge.host_changed.emit(None)

    def host_failed(self, reason: str) -> None:
        self._bridge.host_changed.emit(None)
        self._bridge.host_failed.emit(f"Not hosting: {reason}")
        self._bridge.settings_store.update(host_pool=False)  # the box shows what is true: no pool hosted here

    def approvals_changed(self, pending: list[PendingApproval]) -> None:
        self._bridge.approvals_changed.emit(pending)

    def trusted_changed(self, devices: list[ApprovedDevice]) -> None:
        self._bridge.trusted_changed.emit(devices)

    def paused_changed(self, reason: str) -> None:
        self._bridge.paused_changed.emit(reason)

    def link_changed(self, state: str, detail: str) -> None:
        self._bridge.link_changed.emit(state, detail)

    def pool_state(self, state: PoolState) -> None:
        self._bridge.pool_state.emit(state)

    def tasks_changed(self, changed: list[TaskSummary], removed: list[str]) -> None:
        self._bridge.take_tasks(changed, removed)

    def pools_found(self, pools: list[FoundPool]) -> None:
        self._bridge.pools_found.emit(pools)

    def problem(self, text: str) -> None:
        self._bridge.problem.emit(text)


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
    tasks_changed = Signal(list, list)  # list[TaskSummary] changed or new, list[str] forgotten
    task_submitted = Signal(str, str)  # task id, the file it came from
    task_finished = Signal(object)  # TaskSummary of a task that just ended
    task_log = Signal(str, str)  # task id, text
    task_shards = Signal(str, list)  # task id, list[ShardSummary] (its submitter and the owner)
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
        activity_interval: float = 5.0,  # how often the pause rules sample the computer
        preview_interval: float = 1.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings_store = store
        self._bind = bind
        self._discovery_override = discovery
        self._data_dir = resolve_data_dir(store.prefs.data_path)
        self._code: str | None = None
        self._log_follower: asyncio.Task[None] | None = None
        self._task_states: dict[str, str] = {}
        self._sources: dict[str, Path] = {}
        self._instance = Instance(
            self._config(store.prefs), _Relay(self), observe=True,
            activity_interval=activity_interval, preview_interval=preview_interval,
        )
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
        return self._instance.host

    @property
    def member(self) -> Member | None:
        return self._instance.member

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the instance (host, member, observer and its task changes, browser, pause)."""
        await self._instance.start()

    async def stop(self) -> None:
        """Stop the instance in order (safe to call twice)."""
        await self._instance.stop()

    # ---- what the window asks for (each returns at once) ------------------------------------

    def join(self, address: str, code: str) -> None:
        """Leave any hosted pool and join the one at ``address`` with its pairing ``code``
        (an address that cannot name a pool is said at once, and nothing changes)."""
        try:
            url = normalise_pool_url(address.strip())
        except PoolAddressError as exc:
            self.member_changed.emit("none", str(exc))
            return
        self._code = code.strip() or None
        before = self.settings_store.prefs
        after = self.settings_store.update(pool_address=url, host_pool=False)
        if after == before:  # same settings (a new code, perhaps): nothing signalled, so apply here
            config = self._config(after)
            if config == self._instance.config:
                self._instance.rejoin()
            else:
                self._instance.configure(config)

    def set_manual_pause(self, paused: bool) -> None:
        self._instance.set_manual_pause(paused)

    def approve(self, device_id: str, allow: bool) -> None:
        self._instance.approve(device_id, allow)

    def set_permission(self, device_id: str, permission: str, allow: bool) -> None:
        """Grant or take away a permission of an approved device (hosting only)."""
        self._instance.set_permission(device_id, cast(Permission, permission), allow)

    def new_pairing_code(self) -> None:
        """Replace the hosted pool's pairing code (``host_changed`` shows the new one)."""
        self._instance.new_pairing_code()

    def forget_device(self, device_id: str) -> None:
        link = self._instance.observer_link
        if link is None:
            self.problem.emit("not connected to the pool: cannot forget the device now")
            return
        self._instance.spawn(link.send(Forget(device_id=device_id)))

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

    def forget(self, task_id: str) -> None:
        """Delete an ended task from the pool (its records, logs, results), as ``poolnet forget``."""
        self._spawn(self._task_call(lambda client: client.forget(task_id)))

    def load_shards(self, task_id: str) -> None:
        """Read one task's shards (a page at a time) and pass them on as ``task_shards``."""

        async def load() -> None:
            shards = await self._task_call(lambda client: client.shards(task_id))
            if shards is not None:
                self.task_shards.emit(task_id, shards)

        self._spawn(load())

    def fetch_results(self, task_id: str) -> None:
        self._spawn(self._fetch_results(task_id))

    def follow_log(self, task_id: str | None) -> None:
        """Stream ``task_id``'s log as ``task_log`` (stored output first); None stops it."""
        if self._log_follower is not None:
            self._log_follower.cancel()
            self._log_follower = None
        if task_id is not None:
            self._log_follower = self._spawn(self._follow_log(task_id))

    # ---- settings -----------------------------------------------------------------------------

    def _on_prefs_changed(self, prefs: Preferences) -> None:
        self._instance.configure(self._config(prefs))

    def _config(self, prefs: Preferences) -> InstanceConfig:
        """What the window's settings ask of this computer."""
        discovery = self._discovery(prefs)
        host = (
            HostOptions(data_dir=self._data_dir, bind=self._bind, port=prefs.host_port, discovery=discovery)
            if prefs.host_pool
            else None
        )
        return InstanceConfig(
            data_dir=self._data_dir,
            device_name=prefs.device_name,
            host=host,
            pool_url=prefs.pool_address or None,
            code=self._code,
            limits=prefs.limits,
            accept_tasks=prefs.accept_tasks,
            task_network=prefs.task_network,
            allow_unsandboxed=prefs.allow_unsandboxed,
            env_cache_limit=prefs.env_cache_limit,
            pause_rules=prefs.pause_rules,
            discovery=discovery,
        )

    def _discovery(self, prefs: Preferences) -> DiscoverySettings:
        if self._discovery_override is not None:
            return self._discovery_override
        try:
            return DiscoverySettings.from_env(base=DiscoverySettings(enabled=prefs.discovery))
        except DiscoveryError as exc:
            self.problem.emit(str(exc))
            return DiscoverySettings(enabled=False)

    # ---- tasks -----------------------------------------------------------------------------

    async def _task_call(self, call: Callable[[TaskClient], Awaitable[T]]) -> T | None:
        """One task conversation; a refusal is shown, a broken link is tried again next time."""
        try:
            return await self._instance.task_call(call)
        except ProtocolError as exc:
            self.task_problem.emit(exc.message)
            return None

    def take_tasks(self, changed: list[TaskSummary], removed: list[str]) -> None:
        for task in changed:
            before = self._task_states.get(task.id)
            if before is not None and before not in ENDED and task.state in ENDED:
                self.task_finished.emit(task)
            self._task_states[task.id] = task.state
        for task_id in removed:
            self._task_states.pop(task_id, None)
        self.tasks_changed.emit(changed, removed)

    async def _submit(self, path: Path) -> None:
        try:
            loaded = await asyncio.to_thread(load_task, path)
        except ManifestError as exc:
            self.task_problem.emit(str(exc))
            return
        except OSError as exc:
            self.task_problem.emit(f"cannot read {path.name}: {exc.strerror or exc}")
            return
        if not await self._instance.wait_connected(SUBMIT_WAIT):
            self.task_problem.emit(f"{path.name} was not sent: not connected to a pool")
            return
        if loaded.spec.environment is not None:  # its packages, for every member's platform too
            members = await self._instance.member_platforms()
            try:
                loaded = await asyncio.to_thread(for_platforms, loaded, ResolveOptions(), members)
            except ManifestError as exc:
                self.task_problem.emit(str(exc))
                return
        task_id = await self._task_call(lambda client: client.submit(loaded))
        if task_id is not None:
            self._sources[task_id] = path
            self._task_states.setdefault(task_id, "queued")
            self.task_submitted.emit(task_id, path.name)

    async def _fetch_results(self, task_id: str) -> None:
        folder = await self._task_call(lambda client: client.fetch_results(task_id, self.results_dir))
        if folder is not None:
            self.results_ready.emit(task_id, folder)

    async def _follow_log(self, task_id: str) -> None:
        try:
            link = await self._instance.open_link()
        except LINK_ERRORS as exc:
            self.task_log.emit(task_id, f"[cannot read the log: {describe(exc)}]\n")
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
            self.task_log.emit(task_id, f"[log ended: {describe(exc)}]\n")
        finally:
            await link.close()

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        return self._instance.spawn(work)


__all__ = ["AgentState", "DiscoverySettings", "HostInfo", "PendingApproval", "PoolBridge"]
