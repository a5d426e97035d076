"""``poolnet join [URL]``: share this machine in a pool hosted elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

from poolnet_desktop.commands.options import (
    CodeError,
    add_code_file,
    add_data_dir,
    add_discovery,
    add_task_sandbox,
    discovery_settings,
    read_pairing_code,
    sandbox_line,
)
from poolnet_desktop.commands.running import run_holding, run_service, until_signalled
from poolnet_desktop.core.pause import PauseRules, rules_from_settings
from poolnet_desktop.core.pool_url import normalise_pool_url
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.instance import Instance, InstanceConfig, InstanceEvents
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member
from poolnet_desktop.runtime.member.sharing_config import SHARING_FILE, SharingConfigError, read_pause_rules
from poolnet_desktop.runtime.net.discovery import DiscoveryError, DiscoverySettings, PoolBrowser
from poolnet_desktop.runtime.pool_files import joined_pool_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("join", help="share this machine in a pool")
    parser.add_argument(
        "url", nargs="?", help="the pool, e.g. 192.168.1.10:3000 (default: the last pool, or the one found on the LAN)"
    )
    add_code_file(parser, "a file holding the code the pool's host shows (needed once; asked for on a terminal)")
    parser.add_argument(
        "--forget-pin",
        action="store_true",
        help="forget the pool's pinned certificate (its owner replaced the pool's identity); needs the code",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="this device's name in the pool")
    parser.add_argument("--pause-when-busy", type=float, metavar="PERCENT",
                        help="pause while the computer is in use: keyboard or mouse used in the last --idle-minutes "
                             "where that can be read, else other programs above PERCENT of the CPU "
                             f"(default: DATA/{SHARING_FILE}, which the window writes)")
    parser.add_argument("--no-pause-when-busy", dest="pause_when_busy", action="store_const", const=False,
                        help="share even while the computer is in use")
    parser.add_argument("--idle-minutes", type=float, metavar="MINUTES",
                        help="in use: keyboard or mouse input this recent (default: 3)")
    parser.add_argument("--pause-on-battery", action=argparse.BooleanOptionalAction,
                        help="pause while on battery")
    add_data_dir(parser)
    add_discovery(parser)
    add_task_sandbox(parser)
    parser.set_defaults(run=run)


async def single_pool_on_lan(settings: DiscoverySettings, wait: float = 3.0) -> str | None:
    """The URL of the only pool announced on the LAN; None (after listing them) otherwise."""
    browser = PoolBrowser(settings)
    try:
        await browser.start()
        await asyncio.sleep(wait)
        pools = list(browser.pools.values())
    finally:
        await browser.close()
    if len(pools) == 1:
        return pools[0].url
    if not pools:
        print("poolnet: no pool found on the LAN; give its address: poolnet join HOST:PORT", file=sys.stderr)
    else:
        print("poolnet: several pools found; choose one:", file=sys.stderr)
        for pool in pools:
            print(f"  poolnet join {pool.url}    ({pool.name})", file=sys.stderr)
    return None


def pause_rules(args: argparse.Namespace, data_dir: Path) -> PauseRules:
    """The data folder's pause rules (the window's), with this command's flags over them."""
    flags: dict[str, object] = {}
    if args.pause_when_busy is not None:
        flags["pause_when_in_use"] = args.pause_when_busy is not False
        if args.pause_when_busy is not False:
            flags["busy_percent"] = args.pause_when_busy
    if args.idle_minutes is not None:
        flags["idle_minutes"] = args.idle_minutes
    if args.pause_on_battery is not None:
        flags["pause_on_battery"] = args.pause_on_battery
    return rules_from_settings(flags, read_pause_rules(data_dir))


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    return run_holding(data_dir, "poolnet join", lambda: _share(args, data_dir))


class _JoinPrinter(InstanceEvents):
    """Says what the member is doing once it changes: in, waiting for the owner, out, paused."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._member: Member | None = None
        self._last = ""  # the state last told
        self._said_unreachable = False  # once until it connects, not at every retry

    def member_started(self, member: Member) -> None:
        self._member = member

    def member_state(self, state: str, detail: str) -> None:
        member = self._member
        if member is None:
            return
        url = member.agent.config.url
        reason = f": {detail}" if detail else ""
        if state == AgentState.CONNECTED:
            self._said_unreachable = False
            print(f"Sharing this machine as {self._name!r} in the pool at {url} (Ctrl-C to leave).", flush=True)
        elif state == AgentState.WAITING:
            print(f"Waiting for the owner of the pool at {url} to approve this device "
                  f"{member.identity.device_id}… (Ctrl-C to stop)", flush=True)
        elif state == AgentState.DISCONNECTED and self._last == AgentState.CONNECTED:
            print(f"Lost the pool at {url}{reason}; trying again.", flush=True)
        elif state == AgentState.DISCONNECTED and not self._said_unreachable:
            self._said_unreachable = True
            print(f"Cannot reach the pool at {url} yet{reason}; trying again (Ctrl-C to stop).", flush=True)
        self._last = state

    def paused_changed(self, reason: str) -> None:
        print(f"Sharing paused: {reason}." if reason else "Sharing again.", flush=True)

    def problem(self, text: str) -> None:
        print(f"poolnet: {text}", file=sys.stderr, flush=True)


def _share(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        rules = pause_rules(args, data_dir)
    except (SharingConfigError, ValueError) as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    settings = discovery_settings(args)
    joined = joined_pool_url(data_dir)
    url = args.url or joined
    try:
        prompt = "Pairing code shown by the pool's host (empty: ask its owner to approve): "
        already_member = joined is not None and not args.forget_pin
        code = read_pairing_code(args, None if already_member else prompt)
    except CodeError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    if args.forget_pin and not code:
        print("poolnet: --forget-pin needs the code: a host with a new identity must prove it", file=sys.stderr)
        return 2
    if url is None:
        try:
            url = asyncio.run(single_pool_on_lan(settings))
        except DiscoveryError as exc:
            print(f"poolnet: cannot look for pools: {exc}", file=sys.stderr)
        if url is None:
            return 2
    config = InstanceConfig(
        data_dir=data_dir,
        device_name=args.name,
        pool_url=normalise_pool_url(url),
        code=code,
        forget_pin=args.forget_pin,
        task_network=not args.no_task_network,
        allow_unsandboxed=args.allow_unsandboxed,
        env_cache_limit=args.env_cache,
        pause_rules=rules,
        discovery=settings,
    )
    instance = Instance(config, _JoinPrinter(args.name))

    async def start() -> asyncio.Task[None] | None:
        await instance.start()
        print(f"Joining the pool at {instance.pool_url}…", flush=True)
        print(f"  {sandbox_line(args.allow_unsandboxed)}", flush=True)
        return instance.member_task

    refusal: str | None = None

    async def stop() -> None:
        nonlocal refusal
        member = instance.member
        if member is not None and member.agent.state == AgentState.REFUSED:
            refusal = member.agent.last_error or "refused"
        await instance.stop()

    run_service(until_signalled(start, stop))
    if refusal is not None:
        print(f"poolnet: the pool refused this machine: {refusal}", file=sys.stderr)
        return 1
    print("Left the pool.", flush=True)
    return 0
