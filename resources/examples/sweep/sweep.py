"""One shard of a parameter sweep: a seeded random walk per step size, summarised as JSON.

Usage: sweep.py SHARD SHARDS. Shard k of n takes step size 0.1 * (k + 1) and writes
out/shard-K.json. Standard library only; deterministic, so reruns give identical files.
"""

import json
import random
import statistics
import sys
from pathlib import Path

WALKS = 200
STEPS = 1_000


def simulate(step: float, seed: int) -> dict[str, float]:
    """Final distances of WALKS seeded random walks of STEPS steps of size ``step``."""
    rng = random.Random(seed)
    finals = []
    for _ in range(WALKS):
        position = 0.0
        for _ in range(STEPS):
            position += step if rng.random() < 0.5 else -step
        finals.append(abs(position))
    return {
        "step": step,
        "mean_distance": statistics.fmean(finals),
        "max_distance": max(finals),
        "stdev": statistics.pstdev(finals),
    }


def main() -> None:
    shard, shards = int(sys.argv[1]), int(sys.argv[2])
    step = round(0.1 * (shard + 1), 3)
    result = {"shard": shard, "shards": shards, **simulate(step, seed=shard)}
    out = Path("out")
    out.mkdir(exist_ok=True)
    (out / f"shard-{shard}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"shard {shard}/{shards}: step {step} mean distance {result['mean_distance']:.2f}")


if __name__ == "__main__":
    main()
