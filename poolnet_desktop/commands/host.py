"""``poolnet host``: run a pool's coordinator and this machine's own member."""

from __future__ import annotations

import argparse
import asyncio
import logging

from poolnet_desktop.commands.running import lan_addresses, until_signalled
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.node import HostOptions, Member, MemberOptions, PoolHost

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("host", help="host a pool here (and share this machine in it)")
    parser.add_argument("--port", type=int, default=3000, help="port for WebSocket and REST (default 3000)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--name", help="the pool's name, shown to members")
    parser.add_argument("--data-dir", help="where this instance keeps its data (or POOLNET_HOME)")
    parser.add_argument("--no-discovery", action="store_true", help="do not announce the pool on the LAN")
    parser.add_argument("--no-member", action="store_true", help="coordinate only; do not share this machine")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    host = PoolHost(HostOptions(data_dir=data_dir, bind=args.bind, port=args.port, pool_name=args.name))
    member: Member | None = None
    member_task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal member, member_task
        await host.start()
        print(f"PoolNet pool {host.coordinator.config.pool_name!r} is up.", flush=True)
        for address in addresses_to_show(args.bind):
            print(f"  members join:  poolnet join {host.url.replace('127.0.0.1', address)}", flush=True)
        print(f"  status:        poolnet status http://127.0.0.1:{host.server.port}", flush=True)
        print(f"  listening on   {host.url}", flush=True)
        if not args.no_member:
            member = Member(MemberOptions(url=host.local_url, data_dir=data_dir))
            member_task = asyncio.create_task(member.run())

    async def stop() -> None:
        if member is not None:
            await member.stop()
        if member_task is not None:
            await member_task
        await host.stop()
        print("PoolNet pool stopped.", flush=True)

    asyncio.run(until_signalled(start, stop))
    return 0


def addresses_to_show(bind: str) -> list[str]:
    if bind in ("0.0.0.0", "", "::"):
        return lan_addresses() or ["127.0.0.1"]
    return [bind]
