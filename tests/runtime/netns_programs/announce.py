"""Announce a pool from inside a namespace; obeys {"cmd": "update"|"stop"} lines on stdin.

Discovery settings come from the environment (POOLNET_DISCOVERY...) over --interface, as the
product merges them, so a test can turn discovery off through the environment.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import aclosing

from jsonio import commands, emit

from poolnet_desktop.runtime.net.discovery import DiscoverySettings, PoolAnnouncer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    parser.add_argument("--pool-name", required=True)
    parser.add_argument("--pool-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--fingerprint")
    args = parser.parse_args()
    settings = DiscoverySettings.from_env(base=DiscoverySettings(interfaces=(args.interface,)))
    announcer = PoolAnnouncer(
        settings,
        pool_name=args.pool_name,
        pool_id=args.pool_id,
        port=args.port,
        tls=args.tls,
        fingerprint=args.fingerprint,
    )
    await announcer.start()
    emit("started", announced=announcer.announced, instance=announcer.instance_name)
    try:
        async with aclosing(commands()) as lines:
            async for command in lines:
                if command["cmd"] == "update":
                    await announcer.update(port=command.get("port"), addresses=command.get("addresses"))
                    emit("updated")
                elif command["cmd"] == "stop":
                    break
    finally:
        await announcer.stop()
    emit("stopped")


asyncio.run(main())
