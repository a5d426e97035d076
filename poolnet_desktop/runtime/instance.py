"""One PoolNet on one computer: the composition root the window and the CLI share.

An ``Instance`` owns every live runtime object of a running PoolNet: the optional ``PoolHost``
(hosting a pool here), this computer's ``Member`` (sharing it), the pause policy that decides
whether the member takes tasks, and, for the window, the observer link that watches the pool,
a link for task conversations and the LAN browser. ``poolnet host``, ``poolnet join`` and the
desktop window all build one from an ``InstanceConfig`` and hear what happens through
``InstanceEvents``, so the rules (the host's own member gets its own identity, a paused or
unsandboxed member takes no tasks, a change of pool stops the old member first) are written once.

Everything runs as asyncio tasks of the loop it is started on (uvloop for the CLI, qasync in the
window); ``stop()`` shuts things down in order and is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


from poolnet_desktop.core.devices import DeviceView, iso8601, pool_totals
from poolnet_desktop.core.environment import DEFAULT_CACHE_LIMIT
from poolnet_desktop.core.pause import PauseRules
from poolnet_desktop.core.permissions import Permission
from poolnet_desktop.core.pool_url import PoolAddressError
from poolnet_desktop.core.protocol import Error, PoolState, ProtocolError
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.core.task_protocol import ListTasks, SubscribeTasks, TaskList, TasksChanged, TaskSummary
from poolnet_desktop.runtime.client.link import PoolLink, open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS
from poolnet_desktop.runtime.client.task_client import TaskClient, TaskListing, describe
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.host.server import ListenError
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.member.pause import PauseWatcher
from poolnet_desktop.runtime.member.sampler import ResourceSampler
from poolnet_desktop.runtime.net.backoff import Backoff
from poolnet_desktop.runtime.net.discovery import DiscoveryError, DiscoverySettings, FoundPool, PoolBrowser
from poolnet_desktop.runtime.security.auth import PendingApproval
from poolnet_desktop.runtime.security.trust import ApprovedDevice

log = logging.getLogger(__name__)

THIS_COMPUTER = "this-computer"  # the device id of this computer shown alone, before any pool

T = TypeVar("T")


@dataclass(frozen=True)
class InstanceConfig:
    """What this computer does: the window's settings and the CLI's flags each make one.

    ``host`` set: host a pool here (its own member joins it when ``share``). Else ``pool_url``
    set: join that pool. Neither: not in a pool (the window shows this computer alone).
    """

    data_dir: Path
    device_name: str
    host: HostOptions | None = None
    pool_url: str | None = None
    share: bool = True
    code: str | None = None  # the pairing code for ``pool_url``
    forget_pin: bool = False  # pair again with ``code`` (the host replaced its identity)
    limits: SharingLimits = field(default_factory=SharingLimits)
    accept_tasks: bool = True
    task_network: bool = True
    allow_unsandboxed: bool = False
    env_cache_limit: int = DEFAULT_CACHE_LIMIT  # room for tasks' Python environments, in bytes
    pause_rules: PauseRules = field(default_factory=PauseRules)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)

    def membership(self) -> tuple[object, ...]:
        """What, when changed, means stopping the member (and maybe the host) and starting over."""
        return (self.host, self.pool_url, self.share, self.code, self.forget_pin, self.device_name,
                self.task_network, self.allow_unsandboxed)


class InstanceEvents:
    """What an ``Instance`` tells its owner; every method does nothing unless overridden.

    The window's bridge turns each into a Qt signal; the CLI prints the ones a person needs.
    """

    def member_state(self, state: str, detail: str) -> None:
        """The member's ``AgentState`` changed, or "none": not in a pool."""

    def member_started(self, member: Member) -> None:
        """A new member was built and is about to join (``member.identity`` is its device)."""

    def host_started(self, host: PoolHost) -> None:
        """The pool hosted here is up (also sent again when its pairing code changes)."""

    def host_stopped(self) -> None: ...

    def host_failed(self, reason: str) -> None:
        """Hosting could not start (one line: its port taken, ...); nothing is hosted."""

    def approvals_changed(self, pending: list[PendingApproval]) -> None: ...

    def trusted_changed(self, devices: list[ApprovedDevice]) -> None:
        """The hosted pool's approved devices but the owner, with their permissions."""

    def paused_changed(self, reason: str) -> None:
        """Why sharing is paused, "" once it is not."""

    def link_changed(self, state: str, detail: str) -> None:
        """The observer link: "connected" | "connecting" | "offline" | "none" (no pool)."""

    def pool_state(self, state: PoolState) -> None: ...

    def tasks_changed(self, changed: list[TaskSummary], removed: list[str]) -> None:
        """Tasks new or changed (summaries), and ids of tasks the pool forgot."""

    def pools_found(self, pools: list[FoundPool]) -> None: ...

    def problem(self, text: str) -> None:
        """Anything else the user should read."""


class Instance:
    """See the module docstring. ``observe`` (the window) watches the pool, keeps a task link
    and browses the LAN; without it (the CLI) only the host, the member and the pause run."""

    def __init__(
        self,
        config: InstanceConfig,
        events: InstanceEvents | None = None,
        *,
        observe: bool = False,
        activity_interval: float = 5.0,  # how often the pause rules sample the computer
        preview_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.events = events or InstanceEvents()
        self._observe_pool = observe
        self._preview_interval = preview_interval
        self.host: PoolHost | None = None
        self.member: Member | None = None
        self._member_task: asyncio.Task[None] | None = None
        self._observer: asyncio.Task[None] | None = None
        self._preview: asyncio.Task[None] | None = None
        self._link: PoolLink | None = None
        self._connected = asyncio.Event()  # set while the observer link is open
        self._known_tasks: set[str] = set()  # the tasks the observer was told of
        self._task_link: PoolLink | None = None
        self._task_lock = asyncio.Lock()
        self._config_lock = asyncio.Lock()
        self._browser: PoolBrowser | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pause = PauseWatcher(config.pause_rules, self._on_pause_changed, interval=activity_interval)
        self._stopped = False

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Host (if set), join, watch activity (and observe and browse); returns once started."""
        await self._apply_membership()
        self.spawn(self._pause.run())
        if self._observe_pool:
            self.spawn(self._restart_browser())

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

    @property
    def member_task(self) -> asyncio.Task[None] | None:
        """The member's run: it ends by itself when the pool refuses this computer for good."""
        return self._member_task

    def configure(self, config: InstanceConfig) -> None:
        """Move to ``config``: restart only what changed (returns at once)."""
        old, self.config = self.config, config
        if old.membership() != config.membership():
            self.spawn(self._apply_membership())
            return
        if old.limits != config.limits and self.member is not None:
            self.member.agent.set_limits(config.limits)
        if old.env_cache_limit != config.env_cache_limit and self.member is not None:
            self.member.executor.environments.limit = config.env_cache_limit  # the next build evicts
        self._pause.set_rules(config.pause_rules)
        if old.accept_tasks != config.accept_tasks:
            self.spawn(self._apply_accepting())
        if old.discovery != config.discovery and self._observe_pool:
            self.spawn(self._restart_browser())

    def rejoin(self) -> None:
        """Start the member again on the same settings (a new code for the same pool)."""
        self.spawn(self._apply_membership())

    # ---- the hosted pool's administration -----------------------------------------------------

    def approve(self, device_id: str, allow: bool) -> None:
        if self.host is not None and self.host.access is not None:
            authenticator = self.host.access.authenticator
            (authenticator.approve if allow else authenticator.deny)(device_id)

    def set_permission(self, device_id: str, permission: Permission, allow: bool) -> None:
        """Grant or take away a permission of an approved device (hosting only)."""
        host = self.host
        if host is None or host.access is None:
            self.events.problem("only the pool's host changes what devices may do")
            return
        access = host.access

        async def change() -> None:
            try:
                await access.set_permission(device_id, permission, allow)
            except ProtocolError as exc:
                self.events.problem(exc.message)
                self._refresh_trusted()

        self.spawn(change())

    def new_pairing_code(self) -> None:
        """Replace the hosted pool's pairing code (``host_started`` shows the new one)."""
        if self.host is not None and self.host.access is not None:
            self.host.access.authenticator.new_pairing_code()

    def _refresh_trusted(self) -> None:
        host = self.host
        if host is None or host.access is None:
            return
        access = host.access

        async def read() -> None:
            devices = await access.store.devices()
            if self.host is host:
                self.events.trusted_changed([d for d in devices if d.device_id != access.coordinator.owner_id])

        self.spawn(read())

    # ---- pausing --------------------------------------------------------------------------------

    def set_manual_pause(self, paused: bool) -> None:
        self._pause.set_manual(paused)

    def _accepting(self) -> bool:
        """Tasks are taken when the owner allows them, nothing pauses sharing, and a sandbox
        can be made (or running without one was allowed)."""
        member = self.member
        contained = member is None or member.executor.may_take_tasks
        return self.config.accept_tasks and not self._pause.reason and contained

    def _on_pause_changed(self, reason: str) -> None:
        """Paused: running shards are suspended and no new task is taken; resumed, both go on."""
        self.events.paused_changed(reason)
        if self.member is not None:
            self.member.executor.set_paused(bool(reason))
        self.spawn(self._apply_accepting())

    async def _apply_accepting(self) -> None:
        member = self.member
        if member is not None and member.agent.config.accept_tasks != self._accepting():
            await member.agent.set_accept_tasks(self._accepting())

    # ---- membership: host and member ----------------------------------------------------------

    async def _apply_membership(self) -> None:
        """Make the host and the member match the config (serialised: toggles can race)."""
        async with self._config_lock:
            if self._stopped:
                return
            config = self.config
            await self._stop_member()
            if self.host is not None and self.host.options != config.host:
                await self._stop_host()
            if config.host is not None and self.host is None:
                await self._start_host(config.host)
            url = self.host.local_url if self.host is not None else config.pool_url
            if url is None or not config.share:
                self.events.member_state("none", "host one here, or join one")
                self.events.link_changed("none", "")
                if self._observe_pool and url is None:
                    self._preview = self.spawn(self._show_this_computer())
                return
            try:
                self._start_member(url, await self._member_folder())
            except PoolAddressError as exc:  # settings kept from a version that took any address
                self.events.member_state("none", str(exc))
                self.events.link_changed("none", "")

    async def _start_host(self, options: HostOptions) -> None:
        host = PoolHost(options)
        try:
            await host.start()
        except OSError as exc:
            with contextlib.suppress(Exception):
                await host.stop()
            self.events.host_failed(str(exc) if isinstance(exc, ListenError) else exc.strerror or str(exc))
            return
        assert host.access is not None
        access = host.access
        access.authenticator.on_pending_changed = self.events.approvals_changed
        access.on_devices_changed = self._refresh_trusted
        # A new code (on demand, or after a revoke) is shown at once.
        access.authenticator.on_code_changed = lambda _code: self.events.host_started(host)
        self.host = host
        self._refresh_trusted()
        self.events.host_started(host)

    async def _stop_host(self) -> None:
        host, self.host = self.host, None
        if host is not None:
            await host.stop()
            self.events.host_stopped()
            self.events.approvals_changed([])
            self.events.trusted_changed([])

    async def _member_folder(self) -> Path:
        # Hosting, this computer's member gets an identity of its own, never the owner's.
        return await self.host.prepare_own_member() if self.host is not None else self.config.data_dir

    def _start_member(self, url: str, data_dir: Path) -> None:
        config = self.config
        member = Member(
            MemberOptions(
                url=url,
                data_dir=data_dir,
                name=config.device_name,
                limits=config.limits,
                accept_tasks=config.accept_tasks and not self._pause.reason,
                task_network=config.task_network,
                allow_unsandboxed=config.allow_unsandboxed,
                env_cache_limit=config.env_cache_limit,
                hidden_from_tasks=(config.data_dir,) if self.host is not None else (),
                code=None if self.host is not None else config.code,
                forget_pin=config.forget_pin,
                discovery=config.discovery,
            )
        )
        member.agent.state_listeners.append(lambda state: self.events.member_state(state, member.agent.last_error or ""))
        member.executor.set_paused(bool(self._pause.reason))
        self.member = member
        self.events.member_started(member)
        self._member_task = self.spawn(member.run())
        if self._observe_pool:
            self._observer = self.spawn(self._observe())

    async def _stop_member(self) -> None:
        for task in (self._preview, self._observer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._preview = self._observer = None
        await self._close_task_link()
        member, running = self.member, self._member_task
        self.member = self._member_task = None
        if member is not None:
            await member.stop()
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)

    async def _show_this_computer(self) -> None:
        """Until this computer is in a pool, the window shows it alone, live: its own card and
        charts, not a dashboard of zeros. Each sample is a full snapshot of one device, so the
        pool's first snapshot replaces it once this computer joins."""
        sampler = ResourceSampler(self.config.data_dir)
        try:
            for seq in itertools.count():
                resources = await asyncio.to_thread(sampler.sample, self.config.limits)
                device = DeviceView(
                    id=THIS_COMPUTER, name=f"{self.config.device_name} (this computer, not in a pool)",
                    platform=sys.platform, ip_address="127.0.0.1", last_seen=iso8601(time.time()),
                    is_online=True, resources=resources, accept_tasks=False,
                )
                self.events.pool_state(
                    PoolState(seq=seq, full=True, devices=[device], removed=[], pool=pool_totals([resources]))
                )
                await asyncio.sleep(self._preview_interval)
        finally:
            sampler.close()

    # ---- links to the pool ----------------------------------------------------------------------

    @property
    def pool_url(self) -> str | None:
        return self.member.agent.config.url if self.member is not None else None

    @property
    def observer_link(self) -> PoolLink | None:
        """The open observer link (None while it is not connected)."""
        return self._link

    async def open_link(self) -> PoolLink:
        """A new observer link to the pool this computer is in, as this computer's user: the
        owner's identity while hosting (its member is a plain member), else the member's."""
        member = self.member
        if member is None:
            raise OSError("not in a pool")
        agent = member.agent.config
        config = self.config
        if self.host is not None:
            return await open_link(agent.url, config.data_dir, "observer", config.device_name,
                                   identity=self.host.identity)
        return await open_link(agent.url, config.data_dir, "observer", config.device_name, config.code,
                               identity=agent.identity, pinned=agent.pinned)

    async def member_platforms(self) -> list[str]:
        """The Python platforms of the pool's members that take tasks, read from the pool's
        first state on a short-lived link; [] when it cannot be read."""
        try:
            async with await self.open_link() as link:
                return await TaskClient(link).member_platforms()
        except LINK_ERRORS as exc:
            log.info("cannot read the pool's platforms: %s", describe(exc))
            return []

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the observer link is open (just after start or a switch of pool it may
        be moments away); False after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def task_call(self, call: Callable[[TaskClient], Awaitable[T]]) -> T | None:
        """Run one task conversation on the (lazily opened) task link; None if the link
        failed (it is opened again next time). A refusal by the pool raises ``ProtocolError``."""
        async with self._task_lock:
            try:
                if self._task_link is None:
                    self._task_link = await self.open_link()
                return await call(TaskClient(self._task_link))
            except ProtocolError:
                raise
            except LINK_ERRORS as exc:
                log.info("task link failed: %s", describe(exc))
                await self._close_task_link()
        return None

    async def _close_task_link(self) -> None:
        link, self._task_link = self._task_link, None
        if link is not None:
            await link.close()

    async def _observe(self) -> None:
        """Keep the observer link open and pass on every ``pool_state`` batch and every task
        change the pool pushes (nothing is polled). After a reconnect the task list is read
        again, and tasks shown before that are no longer listed are removed."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            self.events.link_changed("connecting", self.pool_url or "")
            try:
                link = await self.open_link()
            except LINK_ERRORS as exc:
                self.events.link_changed("offline", describe(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._link = link
            self._connected.set()
            self.events.link_changed("connected", link.welcome.pool_name)
            try:
                await link.send(SubscribeTasks())
                listing = TaskListing(self._known_tasks)
                while True:
                    message = await link.recv()
                    if isinstance(message, PoolState):
                        self.events.pool_state(message)
                    elif isinstance(message, TaskList):
                        if message.next is not None:
                            await link.send(ListTasks(cursor=message.next))
                        if (complete := listing.take_page(message)) is not None:
                            self._tasks_changed(*complete)
                    elif isinstance(message, TasksChanged):
                        if (change := listing.take_change(message)) is not None:
                            self._tasks_changed(*change)
                    elif isinstance(message, Error):
                        self.events.problem(message.message)
            except LINK_ERRORS as exc:
                self.events.link_changed("offline", describe(exc))
            finally:
                self._link = None
                self._connected.clear()
                await link.close()
            await asyncio.sleep(backoff.next_delay())

    def _tasks_changed(self, changed: list[TaskSummary], removed: list[str]) -> None:
        self._known_tasks.update(task.id for task in changed)
        self._known_tasks.difference_update(removed)
        self.events.tasks_changed(changed, removed)

    # ---- the LAN ----------------------------------------------------------------------------------

    async def _restart_browser(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        self._browser = None
        settings = self.config.discovery
        if not settings.enabled:
            self.events.pools_found([])
            return
        browser = PoolBrowser(
            settings, on_added=self._pools_changed, on_updated=self._pools_changed, on_removed=self._pools_changed
        )
        self._browser = browser
        try:
            await browser.start()
        except DiscoveryError as exc:
            self.events.problem(f"cannot look for pools on the network: {exc}")

    def _pools_changed(self, _pool: FoundPool) -> None:
        if self._browser is not None:
            self.events.pools_found(list(self._browser.pools.values()))

    # ---- owning tasks --------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` as a task this instance owns: ``stop()`` cancels it, a failure is logged
        and shown."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("instance task failed", exc_info=task.exception())
            self.events.problem(f"internal error: {task.exception()}")


__all__ = ["THIS_COMPUTER", "Instance", "InstanceConfig", "InstanceEvents", "describe"]
