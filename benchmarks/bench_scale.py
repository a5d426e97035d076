"""How one coordinator holds up as the pool grows: 100, 1,000, 5,000 (10,000) members.

For each size: a fresh data folder whose trust store already approves the load generator's
keys (as pairing would have), a real host process (``poolnet host --no-member
--no-discovery --bind 127.0.0.1``, seed clients allowed on a legacy port), and
``loadgen.py`` against it for ``--ramp-s`` + ``--hold-s`` seconds. Every ``--sample-s``
seconds (5: a brisk Prometheus) the host's CPU and RSS are read from /proc (psutil) and
``/metrics`` is scraped; the load generator's own CPU is read the same way. Figures cover the hold only (every member joined).

    .venv/bin/python benchmarks/bench_scale.py --members 100 1000 5000 --hold-s 300

Loopback only; every run ends by itself; only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import free_port, raise_fd_limit, scrape  # noqa: E402
from loadgen import light_identity, member_keys  # noqa: E402

from poolnet_desktop.runtime.host.pool_host import load_pool_identity  # noqa: E402
from poolnet_desktop.runtime.security.identity import Identity  # noqa: E402
from poolnet_desktop.runtime.security.trust import ApprovedDevice, TrustStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


async def approve(data_dir: Path, members: int, observers: int, key_seed: str) -> None:
    """Approve the load generator's keys in the host's trust store before it starts."""
    store = await TrustStore.open(data_dir / "trust.sqlite3")
    try:
        keys = [("member", k) for k in member_keys(members, key_seed)]
        keys += [("observer", k) for k in member_keys(observers, key_seed, "observer")]
        now = time.time()
        for kind, key in keys:
            identity = light_identity(key)
            await store.approve(ApprovedDevice(identity.device_id, f"sim-{kind}", identity.public_key_b64, now))
    finally:
        await store.close()


def histogram_quantile(first: dict[str, float], last: dict[str, float], name: str, q: float) -> float | None:
    """The ``q`` quantile (bucket upper edge) of what a Prometheus histogram recorded
    between two scrapes."""
    prefix = f'{name}_bucket{{le="'
    edges = sorted(
        (float(key[len(prefix):-2]), last[key] - first.get(key, 0.0)) for key in last if key.startswith(prefix)
    )
    if not edges or edges[-1][1] <= 0:
        return None
    wanted = q * edges[-1][1]
    return next(edge for edge, count in edges if count >= wanted)


def machine_busy() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + times.nice + times.irq + times.softirq


def tree_cpu(process: psutil.Process, seen: dict[int, float]) -> float:
    """CPU seconds of a process and its children; ``seen`` keeps the last reading of each,
    so children that have exited still count."""
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            times = p.cpu_times()
            seen[p.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return sum(seen.values())


@dataclass
class Sample:
    at: float
    host_cpu: float
    host_rss: int
    gen_cpu: float
    machine_busy: float  # CPU seconds every process on the machine used so far
    metrics: dict[str, float] = field(default_factory=dict)


def run_size(args: argparse.Namespace, members: int, ramp_s: float, work: Path) -> dict[str, Any]:
    data_dir = work / f"host-{members}"
    data_dir.mkdir(parents=True)
    pool_id, _ = load_pool_identity(data_dir, "bench")
    fingerprint = Identity.load_or_create(data_dir).cert_fingerprint
    key_seed = f"bench-{members}-{os.getpid()}"
    asyncio.run(approve(data_dir, members, args.observers, key_seed))
    port, legacy = free_port(), free_port()
    log_path = work / f"host-{members}.log"
    log = log_path.open("wb")
    host = subprocess.Popen(
        [sys.executable, "-m", "poolnet_desktop", "host", "--no-member", "--no-discovery", "--bind", "127.0.0.1",
         "--port", str(port), "--allow-legacy", "--legacy-port", str(legacy), "--name", "bench",
         "--data-dir", str(data_dir)],
        # To a file: a pipe nobody reads fills up and blocks the host's loop on its next log line.
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit,
        env={**os.environ, "POOLNET_DISCOVERY": "off", "PYTHONUNBUFFERED": "1"},
    )
    gen = None
    try:
        deadline = time.monotonic() + 60
        while b"is up at" not in log_path.read_bytes():
            if host.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the host did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        host_ps = psutil.Process(host.pid)
        idle_rss = host_ps.memory_info().rss
        duration = ramp_s + args.hold_s
        gen = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--url", f"wss://127.0.0.1:{port}/ws",
             "--pool-id", pool_id, "--fingerprint", fingerprint, "--key-seed", key_seed,
             "--members", str(members), "--observers", str(args.observers), "--seed-clients", str(args.seed_clients),
             "--seed-url", f"ws://127.0.0.1:{legacy}/ws", "--workers", str(args.workers),
             "--duration", str(duration), "--ramp", str(args.ramp / args.workers),
             "--probe-interval", str(args.probe_interval), "--measure-after", str(ramp_s), "--out", str(work / f"gen-{members}")],
            stdout=subprocess.DEVNULL, preexec_fn=raise_fd_limit,
        )
        gen_ps = psutil.Process(gen.pid)
        started = time.monotonic()
        samples: list[Sample] = []
        host_seen: dict[int, float] = {}
        gen_seen: dict[int, float] = {}
        while gen.poll() is None and time.monotonic() - started < duration + 150:
            time.sleep(args.sample_s)
            try:
                metrics = scrape(port, data_dir)
            except OSError:
                metrics = {}
            samples.append(Sample(time.monotonic() - started, tree_cpu(host_ps, host_seen),
                                  host_ps.memory_info().rss, tree_cpu(gen_ps, gen_seen), machine_busy(), metrics))
        if gen.poll() is None:
            gen.kill()
        gen.wait()
        summary = json.loads((work / f"gen-{members}" / "summary.json").read_text())
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(30)
        except subprocess.TimeoutExpired:
            host.kill()
        log.close()
        lines = log_path.read_text(errors="replace").splitlines()
        print(f"host log: {len(lines)} lines; last: {lines[-3:]}", file=sys.stderr)
    return report(members, ramp_s + args.hold_s, samples, idle_rss, summary)


def report(members: int, duration: float, samples: list[Sample], idle_rss: int,
           summary: dict[str, Any]) -> dict[str, Any]:
    """Figures over the hold: from the first second every member is online to 5 s before the end."""
    full = [s for s in samples if s.metrics.get("poolnet_devices_online", 0) >= members]
    hold_end = duration - 5
    window = [s for s in full if s.at <= hold_end] or full or samples
    first, last = window[0], window[-1]
    span = max(last.at - first.at, 1e-9)
    host_cpu = 100 * (last.host_cpu - first.host_cpu) / span
    gen_cpu = 100 * (last.gen_cpu - first.gen_cpu) / span
    rss = max(s.host_rss for s in window)
    received = last.metrics.get("poolnet_messages_received_total", 0) - first.metrics.get(
        "poolnet_messages_received_total", 0)
    return {
        "members": members,
        "held_s": round(span, 1),
        "joined": summary["members_joined"],
        "failed": summary["members_failed"],
        "disconnects": summary["disconnects"],
        "online_min": min(s.metrics.get("poolnet_devices_online", 0) for s in window),
        "host_cpu_pct": round(host_cpu, 1),
        "host_rss_mb": round(rss / MB, 1),
        "idle_rss_mb": round(idle_rss / MB, 1),
        "cpu_pct_per_1000": round(host_cpu / members * 1000, 2),
        "rss_kb_per_member": round((rss - idle_rss) / 1024 / members, 1),
        "messages_in_per_s": round(received / span),
        "loop_lag_p99_s": histogram_quantile(first.metrics, last.metrics, "poolnet_event_loop_lag_seconds", 0.99),
        "loop_lag_max_ms_since_start": round(1000 * last.metrics.get("poolnet_event_loop_lag_max_seconds", 0), 1),
        "staleness_p50_s": summary["staleness"]["p50"],
        "staleness_p99_s": summary["staleness"]["p99"],
        "staleness_max_s": summary["staleness"]["max"],
        "staleness_samples": summary["staleness"]["count"],
        "shard_start_p99_s": summary["shard_start"]["p99"],
        "shard_start_max_s": summary["shard_start"]["max"],
        "probes": f'{summary["shard_start"]["count"]}/{summary["probes_submitted"]}',
        "seed_relays": summary["seed_relays"],
        "gc_collections": [
            round(last.metrics.get(key, 0) - first.metrics.get(key, 0))
            for key in (f'python_gc_collections_total{{generation="{g}"}}' for g in range(3))
        ],
        "generator_cpu_pct": round(gen_cpu, 1),
        # Other engineers share this machine: what else ran beside host and generator.
        "others_cpu_pct": round(100 * (last.machine_busy - first.machine_busy) / span - host_cpu - gen_cpu, 1),
        "errors": summary["errors"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--observers", type=int, default=2)
    parser.add_argument("--seed-clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="load generator member processes")
    parser.add_argument("--ramp", type=float, default=100.0, help="joins per second, all workers together")
    parser.add_argument("--ramp-s", type=float, default=None, help="seconds for joining (default: from --ramp)")
    parser.add_argument("--hold-s", type=float, default=60.0, help="seconds held once everyone joined")
    parser.add_argument("--sample-s", type=float, default=5.0,
                        help="seconds between samples of the host (/proc and a /metrics scrape)")
    parser.add_argument("--probe-interval", type=float, default=2.0, help="seconds between probe tasks")
    parser.add_argument("--out", "--json", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="keep host data, logs and figures in this folder")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as tmp:
        work = args.keep or Path(tmp)
        for members in args.members:
            ramp_s = args.ramp_s if args.ramp_s is not None else max(15.0, members / args.ramp * 1.5 + 10)
            rows.append(run_size(args, members, ramp_s, work))
            print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
