"""``poolnet join URL``: share this machine in a pool hosted elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import socket

from poolnet_desktop.commands.running import until_signalled
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.node import Member, MemberOptions


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("join", help="share this machine in a pool")
    parser.add_argument("url", help="the pool's address, e.g. ws://192.168.1.10:3000/ws")
    parser.add_argument("--name", default=socket.gethostname(), help="this device's name in the pool")
    parser.add_argument("--data-dir", help="where this instance keeps its data (or POOLNET_HOME)")
    parser.set_defaults(run=run)


def normalise_url(url: str) -> str:
    """Accept ``host:port``, ``http://host:port`` or a full ``ws://host:port/ws``."""
    if "://" not in url:
        url = f"ws://{url}"
    scheme, rest = url.split("://", 1)
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    if "/" not in rest:
        rest += "/ws"
    return f"{scheme}://{rest}"


def run(args: argparse.Namespace) -> int:
    member = Member(MemberOptions(url=normalise_url(args.url), data_dir=resolve_data_dir(args.data_dir), name=args.name))
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        task = asyncio.create_task(member.run())
        print(f"Sharing this machine as {args.name!r} in the pool at {member.options.url} (Ctrl-C to leave).", flush=True)

    async def stop() -> None:
        await member.stop()
        if task is not None:
            await task
        print("Left the pool.", flush=True)

    asyncio.run(until_signalled(start, stop))
    return 0
