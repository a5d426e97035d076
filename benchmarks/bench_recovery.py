"""How fast the pool gets over a member killed mid-task (issue 14, item 2).

The pool of ``bench_throughput.py`` (a host with no member of its own and two ``poolnet join``
members, one ``cpu = 1`` shard at a time each), unsandboxed so that every shard can note when
it began in one shared file. One task of N shards of ``sleep S`` runs first undisturbed (the
baseline of the same run), then again with the first member SIGKILLed K seconds in.

Figures: both tasks' wall time, and the recovery: for each shard that began on the killed
member and began again elsewhere, the seconds from the kill to that new beginning. That
includes waiting for room on the surviving member, busy with its own shards (the target is a
new start within 2 s once there is room; a pool that waits for the heartbeat timeout takes
30 s or more); the task's time beside the undisturbed one shows what the kill cost in all.

    .venv/bin/python benchmarks/bench_recovery.py [--shards 8] [--shard-s 1.5] [--kill-after 2.25]
        [--json FILE]

Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path

from bench_throughput import Pool, manifest, run_task, until_ready


def sleeping_shards(log: Path, seconds: float) -> list[str]:
    """A shard that appends ``SHARD BEGAN`` (bash's clock, no fork) to ``log``, then sleeps."""
    return ["bash", "-c", f'echo "$POOLNET_SHARD $EPOCHREALTIME" >> {log}; sleep {seconds}']


def recoveries(log: Path, killed_at: float) -> list[float]:
    """Seconds from the kill to the new beginning of each shard that had begun before it
    and began again after it (a shard the killed member was running)."""
    began: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        shard, at = line.split()
        began.setdefault(shard, []).append(float(at))
    return sorted(
        min(t for t in times if t > killed_at) - killed_at
        for times in began.values()
        if any(t <= killed_at for t in times) and any(t > killed_at for t in times)
    )


async def measure(shards: int, shard_s: float, kill_after: float, root: Path) -> dict[str, object]:
    pool = Pool(root, "uvloop", sandbox=False)
    pool.start()
    try:
        await until_ready(pool, manifest(root / "probe", "probe", 4))
        calm_log, kill_log = root / "calm.log", root / "kill.log"
        calm = manifest(root / "calm", "calm", shards, sleeping_shards(calm_log, shard_s))
        undisturbed_s, _ = await run_task(pool.url, root / "host", calm)
        killed = manifest(root / "killed", "killed", shards, sleeping_shards(kill_log, shard_s))
        running = asyncio.create_task(run_task(pool.url, root / "host", killed))
        await asyncio.sleep(kill_after)
        victim = pool.processes[1]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.wait()
        with_kill_s, succeeded = await asyncio.wait_for(running, 300)
    finally:
        pool.stop()
    gaps = recoveries(kill_log, killed_at)
    return {
        "shards": shards, "shard_s": shard_s, "kill_after_s": kill_after,
        "undisturbed_s": round(undisturbed_s, 2), "with_kill_s": round(with_kill_s, 2),
        "succeeded": succeeded, "shards_rerun": len(gaps),
        "recovery_max_s": round(max(gaps), 3) if gaps else None,
        "recovery_min_s": round(min(gaps), 3) if gaps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-s", type=float, default=1.5)
    parser.add_argument("--kill-after", type=float, default=2.25,
                        help="seconds after submission (2.25: mid-way through a second shard)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    if args.shards < 2 or not 0 < args.kill_after < 120:
        parser.error("--shards at least 2; --kill-after in (0, 120)")
    with tempfile.TemporaryDirectory(prefix="poolnet-recovery-") as folder:
        figures = asyncio.run(measure(args.shards, args.shard_s, args.kill_after, Path(folder)))
    print(f"{figures['shards']} shards of {figures['shard_s']} s on two members: "
          f"{figures['undisturbed_s']} s undisturbed, {figures['with_kill_s']} s with one member "
          f"SIGKILLed {figures['kill_after_s']} s in; {figures['shards_rerun']} shards ran again "
          f"{figures['recovery_min_s']}-{figures['recovery_max_s']} s after the kill")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
