"""``poolnet status [URL]``: the pool's devices and totals, as a table or JSON.

A PoolNet pool is asked over its authenticated WebSocket as an observer; an ``http://`` URL
(a seed server, or a PoolNet host's legacy port) is asked through the seed's REST paths.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from poolnet_desktop.commands.options import (
    NO_POOL_HINT,
    CodeError,
    add_code_file,
    add_pool,
    pool_url,
    read_pairing_code,
    waiting_notice,
)
from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.core.protocol import PoolState
from poolnet_desktop.core.sandbox_state import short as short_sandbox
from poolnet_desktop.core.units import format_mb
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS, describe_link_failure
from poolnet_desktop.runtime.datadir import resolve_data_dir


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show the pool's devices and totals")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_pool(parser, positional=True)
    add_code_file(parser, "a file holding the pairing code, to pair anew with the pool at URL")
    parser.set_defaults(run=run)


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document, ignoring proxy settings: pools live on the LAN."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def rest_status(base: str) -> dict[str, Any]:
    base = base.rstrip("/")
    return {"devices": fetch_json(f"{base}/api/devices")["devices"], "pool": fetch_json(f"{base}/api/resources")["pool"]}


async def observed_status(url: str, data_dir: Path, code: str | None = None) -> dict[str, Any]:
    """The first (full) ``pool_state`` an observer receives, in the REST answers' shape: all
    its parts, since a pool of more than 500 devices is sent in several."""
    devices: list[DeviceView] = []
    async with await open_link(url, data_dir, code=code, on_pending=waiting_notice(data_dir)) as link:
        async with asyncio.timeout(10):
            while True:
                message = await link.expect(PoolState)
                devices.extend(message.devices)
                if not message.more:
                    break
    status: dict[str, Any] = msgspec.to_builtins({"devices": devices, "pool": message.pool})
    return status


def run(args: argparse.Namespace) -> int:
    url = pool_url(args)
    try:
        code = read_pairing_code(args)
    except CodeError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    if url.startswith("http://"):
        try:
            status = rest_status(url)
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:  # unreachable, or no seed
            print(f"poolnet: cannot read the pool at {url}: {exc}", file=sys.stderr)
            return 1
    else:
        try:
            status = asyncio.run(observed_status(url, resolve_data_dir(args.data_dir), code))
        except LINK_ERRORS as exc:
            print(f"poolnet: {describe_link_failure(url, exc, NO_POOL_HINT)}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_table(status["devices"], status["pool"]))
    return 0


def render_table(devices: list[dict[str, Any]], pool: dict[str, Any]) -> str:
    header = ("DEVICE", "PLATFORM", "ADDRESS", "STATE", "CPU", "MEMORY", "STORAGE FREE", "GPU", "TASKS RUN",
              "PYTHON ENVS")
    rows = [header]
    for d in sorted(devices, key=lambda d: (not d["isOnline"], d["name"].lower())):
        r = d["resources"]
        rows.append(
            (
                d["name"],
                d["platform"],
                d["ipAddress"],
                "online" if d["isOnline"] else "offline",
                f"{r['cpuCores']} cores {r['cpuUsage']:.0f}%",
                f"{format_mb(r['memoryUsage'])} / {format_mb(r['memoryTotal'])}",
                format_mb(r["storageAvailable"]),
                (r.get("gpuName") or "yes") if r.get("hasGPU") else "-",
                short_sandbox(d.get("sandbox", "")) or "-",
                f"{r['environments']} ({format_mb(r['environmentsSize'])})" if r.get("environments") else "-",
            )
        )
    # Names, platforms and GPU names are the members' own words: shown printable.
    cells = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.append("")
    lines.append(
        f"Pool: {pool['devices']} online, {pool['totalCpuCores']} cores, "
        f"{format_mb(pool['totalMemoryAvailable'])} memory free of {format_mb(pool.get('totalMemory', 0))}, "
        f"{format_mb(pool['totalStorageAvailable'])} storage free, {pool['totalGPUs']} GPU"
    )
    return "\n".join(lines)
