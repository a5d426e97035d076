"""JSON lines in and out for the programs the namespace tests start (shared by them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from poolnet_desktop.runtime.net.discovery import FoundPool


def emit(event: str, **fields: Any) -> None:
    """One event on stdout, flushed: the test waits for it line by line."""
    print(json.dumps({"event": event, **fields}), flush=True)


def pool_fields(pool: FoundPool | None) -> dict[str, Any] | None:
    if pool is None:
        return None
    return {**dataclasses.asdict(pool), "url": pool.url}


async def commands() -> AsyncIterator[dict[str, Any]]:
    """The JSON commands the test writes to stdin, until it closes stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        transport.close()
