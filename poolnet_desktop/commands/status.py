"""``poolnet status [URL]``: the pool's devices and totals, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from poolnet_desktop.core.units import format_mb


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show the pool's devices and totals")
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:3000", help="the pool (default this machine)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(run=run)


def rest_base(url: str) -> str:
    """``ws://h:p/ws`` or ``h:p`` -> ``http://h:p`` (REST lives on the same port)."""
    if "://" not in url:
        url = f"http://{url}"
    scheme, rest = url.split("://", 1)
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document, ignoring proxy settings: pools live on the LAN."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def run(args: argparse.Namespace) -> int:
    base = rest_base(args.url)
    try:
        devices = fetch_json(f"{base}/api/devices")["devices"]
        pool = fetch_json(f"{base}/api/resources")["pool"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        print(f"poolnet: cannot reach a pool at {base}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"devices": devices, "pool": pool}, indent=2))
        return 0
    print(render_table(devices, pool))
    return 0


def render_table(devices: list[dict[str, Any]], pool: dict[str, Any]) -> str:
    header = ("DEVICE", "PLATFORM", "ADDRESS", "STATE", "CPU", "MEMORY", "STORAGE FREE", "GPU")
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
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    lines.append(
        f"Pool: {pool['devices']} online, {pool['totalCpuCores']} cores, "
        f"{format_mb(pool['totalMemoryAvailable'])} memory free of {format_mb(pool.get('totalMemory', 0))}, "
        f"{format_mb(pool['totalStorageAvailable'])} storage free, {pool['totalGPUs']} GPU"
    )
    return "\n".join(lines)
