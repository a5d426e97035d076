"""Browse for pools from inside a namespace and print every change as a JSON line.

stdin: {"cmd": "find", "pool_id": ..., "timeout": s, "exclude_url": ...} prints "found";
{"cmd": "close"} (or end of input) closes the browser and prints "closed".
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import aclosing

from jsonio import commands, emit, pool_fields

from poolnet_desktop.runtime.net.discovery import DiscoverySettings, PoolBrowser


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    args = parser.parse_args()
    settings = DiscoverySettings.from_env(base=DiscoverySettings(interfaces=(args.interface,)))
    browser = PoolBrowser(
        settings,
        on_added=lambda pool: emit("added", pool=pool_fields(pool)),
        on_updated=lambda pool: emit("updated", pool=pool_fields(pool)),
        on_removed=lambda pool: emit("removed", pool=pool_fields(pool)),
    )
    await browser.start()
    emit("started")
    try:
        async with aclosing(commands()) as lines:
            async for command in lines:
                if command["cmd"] == "find":
                    found = await browser.find_pool(
                        command["pool_id"], command["timeout"], exclude_url=command.get("exclude_url")
                    )
                    emit("found", pool=pool_fields(found))
                elif command["cmd"] == "close":
                    break
    finally:
        await browser.close()
    emit("closed", leftover_tasks=len(asyncio.all_tasks()) - 1)


asyncio.run(main())
