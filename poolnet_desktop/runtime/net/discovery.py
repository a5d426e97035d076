"""Zero-config discovery of pools on the LAN, over mDNS / DNS-SD (zeroconf's asyncio API).

A coordinator publishes ``_resourcepool._tcp.local.``, the seed system's service type, so that a
seed client finds a PoolNet pool unchanged. Its TXT record carries the seed's keys (``version``,
``platform``) and PoolNet's (``pool`` name, ``poolid``, ``path`` of the WebSocket, ``tls`` "1"
or "0", and optionally ``fp``, a prefix of the certificate fingerprint to check before pinning).

Members and the window browse and keep a live list (``PoolBrowser``). A member that already knows
its pool finds the host again after the host's address or port changed with
``PoolBrowser.find_pool``. Discovery sends multicast on every chosen interface, so it can be
limited to some interfaces or turned off (``DiscoverySettings``).

What arrives from the network is untrusted: TXT values are bounded and checked here, and a pool
found by discovery still has to prove itself (pairing, pinned certificate) before it is trusted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import psutil
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from poolnet_desktop import __version__

log = logging.getLogger(__name__)

SERVICE_TYPE = "_resourcepool._tcp.local."
WS_PATH = "/ws"
ENV_ENABLED = "POOLNET_DISCOVERY"
ENV_INTERFACES = "POOLNET_DISCOVERY_INTERFACES"

# DNS-SD limits: an instance label is at most 63 bytes; one TXT string at most 255 bytes.
_MAX_INSTANCE_BYTES = 63
_MAX_TXT_VALUE = 200
_MAX_POOL_ID = 128
_FINGERPRINT = re.compile(r"[0-9A-Fa-f:]{4,128}")
_PATH = re.compile(r"/[!-~]{0,127}")


class DiscoveryError(Exception):
    """Discovery cannot run as configured; the message says what to change."""


class DiscoveryDisabledError(DiscoveryError):
    """Discovery is turned off (setting, CLI flag or ``POOLNET_DISCOVERY=off``)."""


# ---- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverySettings:
    """Whether discovery runs, and on which interfaces.

    ``interfaces`` holds IPv4 addresses or interface names; empty means every interface (the
    product's default when nothing is set; tests always name loopback or namespace addresses).
    Build it from the app setting, then ``from_env(base=...)``, then ``with_overrides`` for the
    CLI flags, so that the most specific source wins.
    """

    enabled: bool = True
    interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.interfaces:
            if not isinstance(entry, str) or not entry.strip():
                raise DiscoveryError(f"discovery interface {entry!r} must be an address or a name")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, base: DiscoverySettings | None = None
    ) -> DiscoverySettings:
        """``base`` overridden by ``POOLNET_DISCOVERY`` ("on"/"off") and
        ``POOLNET_DISCOVERY_INTERFACES`` (comma list), where those are set and not empty."""
        env = os.environ if environ is None else environ
        settings = base or cls()
        raw = env.get(ENV_ENABLED, "").strip().lower()
        if raw:
            if raw not in ("on", "off"):
                raise DiscoveryError(f'{ENV_ENABLED} must be "on" or "off", not {raw!r}')
            settings = replace(settings, enabled=raw == "on")
        listed = env.get(ENV_INTERFACES, "").strip()
        if listed:
            names = tuple(part.strip() for part in listed.split(",") if part.strip())
            settings = replace(settings, interfaces=names)
        return settings

    def with_overrides(
        self, *, enabled: bool | None = None, interfaces: Sequence[str] | None = None
    ) -> DiscoverySettings:
        """A copy with the values that are not None replaced (CLI flags over env and settings)."""
        return DiscoverySettings(
            enabled=self.enabled if enabled is None else enabled,
            interfaces=self.interfaces if interfaces is None else tuple(interfaces),
        )

    def resolve_addresses(self) -> list[str]:
        """The IPv4 addresses to run mDNS on; empty means every interface.

        Names are looked up among this host's interfaces now, so call it again after the
        interfaces changed. Raises ``DiscoveryError`` for an unknown name, a name without an
        IPv4 address, or an IPv6 address (mDNS over IPv6 needs a scope and is not offered yet).
        """
        if not self.interfaces:
            return []
        nics = _ipv4_by_interface()
        own = {address for found in nics.values() for address in found}
        addresses: list[str] = []
        for entry in self.interfaces:
            entry = entry.strip()
            try:
                ip = ipaddress.ip_address(entry)
            except ValueError:
                if entry not in nics:
                    known = ", ".join(sorted(nics)) or "none"
                    raise DiscoveryError(
                        f"no network interface named {entry!r} (known: {known})"
                    ) from None
                if not nics[entry]:
                    raise DiscoveryError(f"interface {entry!r} has no IPv4 address") from None
                found = nics[entry]
            else:
                if ip.version != 4:
                    raise DiscoveryError(f"discovery interface {entry!r}: only IPv4 is supported")
                # Checked here because zeroconf, given a foreign address, fails leaking a socket.
                if str(ip) not in own:
                    raise DiscoveryError(
                        f"{entry} is not an address of this host (it has: {', '.join(sorted(own))})"
                    )
                found = [str(ip)]
            addresses.extend(a for a in found if a not in addresses)
        return addresses


def _ipv4_by_interface() -> dict[str, list[str]]:
    return {
        name: [a.address for a in addrs if a.family == socket.AF_INET]
        for name, addrs in psutil.net_if_addrs().items()
    }


def lan_ipv4_addresses() -> list[str]:
    """This host's IPv4 addresses on interfaces that are up, loopback left out (read
    locally: no traffic sent)."""
    stats = psutil.net_if_stats()
    return [
        address
        for name, addresses in _ipv4_by_interface().items()
        if name in stats and stats[name].isup
        for address in addresses
        if not ipaddress.ip_address(address).is_loopback
    ]


def addresses_to_show(bind: str) -> list[str]:
    """Where people on the LAN can reach a server bound to ``bind``: a wildcard bind (IPv4 or
    IPv6) is shown as this machine's LAN addresses, since nobody can dial 0.0.0.0 or ::."""
    if bind in ("0.0.0.0", "", "::"):
        return lan_ipv4_addresses() or ["127.0.0.1"]
    return [bind]


def platform_name() -> str:
    """This machine's platform as the seed protocol names it (``linux``, ``windows``, ``macos``)."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return sys.platform


async def _open_zeroconf(settings: DiscoverySettings) -> AsyncZeroconf:
    """A running AsyncZeroconf on the chosen interfaces, or ``DiscoveryError`` saying why not."""
    addresses = settings.resolve_addresses()
    interfaces: list[str] | InterfaceChoice = addresses or InterfaceChoice.All
    try:
        return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except OSError as exc:
        where = ", ".join(addresses) or "all interfaces"
        raise DiscoveryError(f"cannot start mDNS on {where}: {exc}") from exc


# ---- what a browser finds ---------------------------------------------------------------------


@dataclass(frozen=True)
class FoundPool:
    """One announced pool, as resolved from its SRV, TXT and address records.

    ``pool_id`` is None for a seed-system server, which announces no pool id; ``fingerprint``
    is a prefix the certificate must start with, a hint only: pinning happens when pairing.
    """

    instance: str
    name: str
    pool_id: str | None
    addresses: tuple[str, ...]
    port: int
    tls: bool
    version: str
    platform: str
    path: str = WS_PATH
    fingerprint: str | None = None

    @property
    def url(self) -> str:
        """The WebSocket URL on the first address, e.g. ``wss://10.0.0.1:3000/ws``."""
        host = self.addresses[0]
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host}:{self.port}{self.path}"


def _text(value: str | None, limit: int = _MAX_TXT_VALUE) -> str:
    """A TXT value made safe to show: no control characters, bounded length."""
    if value is None:
        return ""
    return "".join(ch for ch in value if ch.isprintable())[:limit]


def _found_from_info(info: AsyncServiceInfo) -> FoundPool | None:
    """The pool an answer describes, or None when it lacks a port or an IPv4 address."""
    addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
    if not addresses or not info.port:
        return None
    txt = info.decoded_properties
    label = info.name.removesuffix("." + SERVICE_TYPE)
    pool_id = _text(txt.get("poolid"), _MAX_POOL_ID) or None
    path = _text(txt.get("path")) or WS_PATH
    fingerprint = _text(txt.get("fp"))
    return FoundPool(
        instance=info.name,
        name=_text(txt.get("pool")) or _text(label),
        pool_id=pool_id,
        addresses=addresses,
        port=info.port,
        tls=txt.get("tls") == "1",
        version=_text(txt.get("version"), 64),
        platform=_text(txt.get("platform"), 32),
        path=path if _PATH.fullmatch(path) else WS_PATH,
        fingerprint=fingerprint if _FINGERPRINT.fullmatch(fingerprint) else None,
    )


# ---- announcing -------------------------------------------------------------------------------


def _instance_label(pool_name: str, pool_id: str) -> str:
    """A DNS-SD instance label (printable, no dots, at most 63 bytes) such as ``Lab [3f2a9c1b]``.

    The pool id's head keeps two pools of the same name apart even where probing cannot see
    the conflict; a restarted host of the same pool gets the same label, so browsers update it.
    """
    suffix = " [" + _clean_label(pool_id[:8]) + "]"
    room = _MAX_INSTANCE_BYTES - len(suffix.encode())
    name = _clean_label(pool_name).encode()[:room].decode(errors="ignore").strip()
    return (name or "PoolNet") + suffix


def _clean_label(text: str) -> str:
    return "".join(ch if ch.isprintable() and ch != "." else " " for ch in text).strip()


class PoolAnnouncer:
    """Publishes one pool on the LAN while the coordinator serves it.

    Call ``start()`` once the server listens, ``update()`` when its address or port changed and
    ``stop()`` on shutdown (it sends goodbyes so browsers drop the pool at once; safe twice).
    With discovery turned off, ``start()`` publishes nothing and ``announced`` stays False.
    """

    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        pool_name: str,
        pool_id: str,
        port: int,
        tls: bool,
        addresses: Sequence[str] | None = None,
        fingerprint: str | None = None,
        version: str = __version__,
        path: str = WS_PATH,
    ) -> None:
        if not pool_name.strip() or len(pool_name.encode()) > _MAX_TXT_VALUE:
            raise ValueError(f"pool name must be 1 to {_MAX_TXT_VALUE} bytes, got {pool_name!r}")
        if not pool_id or len(pool_id) > _MAX_POOL_ID or not pool_id.isprintable():
            raise ValueError(f"pool id must be 1 to {_MAX_POOL_ID} printable characters")
        if fingerprint is not None and not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError("fingerprint must be 4 to 128 hex digits (colons allowed)")
        if not _PATH.fullmatch(path):
            raise ValueError(f"path must start with '/' and hold no spaces, got {path!r}")
        self._settings = settings
        self._properties = {
            "version": version,
            "platform": platform_name(),
            "pool": pool_name,
            "poolid": pool_id,
            "path": path,
            "tls": "1" if tls else "0",
        }
        if fingerprint:
            self._properties["fp"] = fingerprint
        self._instance = f"{_instance_label(pool_name, pool_id)}.{SERVICE_TYPE}"
        # A fresh host name per announcer: a restarted coordinator never inherits address
        # records that browsers still cache for the old one.
        self._server = _new_server_name()
        self._port = _checked_port(port)
        self._addresses = _checked_addresses(addresses) if addresses is not None else None
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def announced(self) -> bool:
        return self._info is not None

    @property
    def instance_name(self) -> str:
        """The service name on the wire; zeroconf renames it (``Name (2)``) on a conflict."""
        return self._info.name if self._info is not None else self._instance

    async def start(self) -> None:
        """Probe for a free name, then announce. Raises ``DiscoveryError`` if mDNS cannot run."""
        if self._zc is not None:
            raise RuntimeError("announcer already started")
        if not self._settings.enabled:
            log.info("discovery is off: pool %s is not announced", self._properties["pool"])
            return
        self._zc = await _open_zeroconf(self._settings)
        try:
            info = self._build_info(self._instance)
            await (await self._zc.async_register_service(info, allow_name_change=True))
        except BaseException:
            await self._close_zeroconf()
            raise
        self._info = info
        log.info("announced %s on %s port %d", info.name, self.addresses, self._port)

    async def update(
        self, *, port: int | None = None, addresses: Sequence[str] | None = None
    ) -> None:
        """Announce a new port and/or addresses under the same name; browsers see an update."""
        if port is not None:
            self._port = _checked_port(port)
        if addresses is not None:
            self._addresses = _checked_addresses(addresses)
            # A new host name, not new address records for the old one: caches keep the old
            # records beside the new ones for a while, but the SRV record names only this host.
            self._server = _new_server_name()
        if self._zc is None or self._info is None:
            return
        self._info = self._build_info(self._info.name)
        await (await self._zc.async_update_service(self._info))

    async def stop(self) -> None:
        """Withdraw the pool (goodbye packets) and close the sockets."""
        if self._zc is None:
            return
        if self._info is not None:
            info, self._info = self._info, None
            await (await self._zc.async_unregister_service(info))
        await self._close_zeroconf()

    async def _close_zeroconf(self) -> None:
        zc, self._zc = self._zc, None
        if zc is not None:
            await zc.async_close()

    @property
    def addresses(self) -> list[str]:
        """The addresses the pool is (or would be) announced with: its own, else those of the
        chosen interfaces, else the LAN's, else loopback alone."""
        if self._addresses is not None:
            return self._addresses
        return self._settings.resolve_addresses() or lan_ipv4_addresses() or ["127.0.0.1"]

    def _build_info(self, name: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=self._port,
            properties=self._properties,
            server=self._server,
            parsed_addresses=self.addresses,
        )


def _new_server_name() -> str:
    return f"poolnet-{secrets.token_hex(4)}.local."


def _checked_port(port: int) -> int:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535, got {port!r}")
    return port


def _checked_addresses(addresses: Sequence[str]) -> list[str]:
    if isinstance(addresses, str) or not addresses:
        raise ValueError("addresses must be a non-empty list of IPv4 addresses")
    checked = []
    for address in addresses:
        try:
            checked.append(str(ipaddress.IPv4Address(address)))
        except ValueError:
            raise ValueError(f"not an IPv4 address: {address!r}") from None
    return checked


# ---- browsing ---------------------------------------------------------------------------------

PoolCallback = Callable[[FoundPool], None]


class PoolBrowser:
    """Keeps a live view of the pools announced on the LAN.

    ``start()``, then read ``pools`` (instance name to ``FoundPool``) or react to the callbacks,
    which run on the event loop after the dict changed; ``close()`` when done (safe twice).
    With discovery turned off, ``start()`` opens nothing and ``find_pool`` raises
    ``DiscoveryDisabledError``.
    """

    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        on_added: PoolCallback | None = None,
        on_updated: PoolCallback | None = None,
        on_removed: PoolCallback | None = None,
        resolve_timeout: float = 3.0,
    ) -> None:
        if resolve_timeout <= 0:
            raise ValueError("resolve_timeout must be positive")
        self._settings = settings
        self._on_added = on_added
        self._on_updated = on_updated
        self._on_removed = on_removed
        self._resolve_ms = resolve_timeout * 1000
        self._pools: dict[str, FoundPool] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        # Replaced on every change: a waiter takes the current one, checks, then waits on it.
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def pools(self) -> Mapping[str, FoundPool]:
        """A read-only live view; copy it to keep a snapshot."""
        return MappingProxyType(self._pools)

    async def start(self) -> None:
        """Open mDNS and browse. Raises ``DiscoveryError`` if mDNS cannot run."""
        if self._zc is not None or self._closed:
            raise RuntimeError("browser already started or closed")
        if not self._settings.enabled:
            log.info("discovery is off: not browsing for pools")
            return
        self._zc = await _open_zeroconf(self._settings)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change]
        )

    async def find_pool(
        self, pool_id: str, timeout: float, *, exclude_url: str | None = None
    ) -> FoundPool | None:
        """The pool with this id once it is seen, or None after ``timeout`` seconds.

        A member whose link to the host broke passes the URL that failed as ``exclude_url``,
        so a record still cached for the old address is not offered again. A record without
        TLS is never this pool (a PoolNet host announces TLS): anyone on the LAN can announce
        a pool's public id, and a plain-text address would end the member's link for good.
        """
        if not self._settings.enabled:
            raise DiscoveryDisabledError("discovery is off; connect with an explicit URL")
        if self._zc is None and not self._closed:
            raise RuntimeError("start() the browser before find_pool()")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._closed:
            changed = self._changed
            for pool in reversed(self._pools.values()):  # the most recently resolved first
                if pool.pool_id == pool_id and pool.tls and pool.url != exclude_url:
                    return pool
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return None
        return None

    async def close(self) -> None:
        """Stop browsing, drop pending look-ups, close the sockets; wakes ``find_pool`` waiters."""
        if self._closed:
            return
        self._closed = True
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None
        self._notify()

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's handler, called on the loop: resolve on add/update, drop on remove."""
        if self._closed:
            return
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()  # a newer change supersedes it
        if state_change is ServiceStateChange.Removed:
            pool = self._pools.pop(name, None)
            if pool is not None:
                self._notify()
                self._call(self._on_removed, pool)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(lambda done: self._forget(name, done))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("resolving %s failed", name, exc_info=task.exception())

    async def _resolve(self, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, self._resolve_ms):
            log.info("no complete answer for %s", name)
            return
        found = _found_from_info(info)
        if found is None:
            log.info("ignoring %s: no port or IPv4 address", name)
            return
        old = self._pools.pop(name, None)
        self._pools[name] = found  # re-inserted: the dict's order is the order of resolution
        self._notify()
        if old is None:
            self._call(self._on_added, found)
        elif old != found:
            self._call(self._on_updated, found)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    def _call(callback: PoolCallback | None, pool: FoundPool) -> None:
        """Run a caller's callback; its failure is logged, it must not stop discovery."""
        if callback is None:
            return
        try:
            callback(pool)
        except Exception:
            log.exception("discovery callback %r failed for %s", callback, pool.instance)
