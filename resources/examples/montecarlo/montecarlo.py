"""One shard of a Monte Carlo sweep: price a European call option by simulation.

Usage: montecarlo.py --volatility V --seed S --out FILE [--paths N]. The stock starts at 100,
the strike is 105, the rate 3 % and the maturity one year; the final price of each simulated
path follows geometric Brownian motion. Writes the estimate, its standard error and the exact
Black-Scholes price as JSON. Also reads POOLNET_PARAM_VOLATILITY/SEED when the flags are left
out. Deterministic for a given seed.
"""

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

SPOT, STRIKE, RATE, YEARS = 100.0, 105.0, 0.03, 1.0
CHUNK = 250_000


def simulate(volatility: float, seed: int, paths: int) -> tuple[float, float]:
    """The discounted mean payoff and its standard error, over ``paths`` simulated prices."""
    rng = np.random.default_rng(seed)
    drift = (RATE - 0.5 * volatility**2) * YEARS
    spread = volatility * math.sqrt(YEARS)
    total = total_sq = 0.0
    done = 0
    while done < paths:
        size = min(CHUNK, paths - done)
        final = SPOT * np.exp(drift + spread * rng.standard_normal(size))
        payoff = np.maximum(final - STRIKE, 0.0)
        total += float(payoff.sum())
        total_sq += float((payoff * payoff).sum())
        done += size
    mean = total / paths
    variance = max(total_sq / paths - mean * mean, 0.0)
    discount = math.exp(-RATE * YEARS)
    return discount * mean, discount * math.sqrt(variance / paths)


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def black_scholes(volatility: float) -> float:
    """The exact price the simulation estimates."""
    spread = volatility * math.sqrt(YEARS)
    d1 = (math.log(SPOT / STRIKE) + (RATE + 0.5 * volatility**2) * YEARS) / spread
    d2 = d1 - spread
    return SPOT * normal_cdf(d1) - STRIKE * math.exp(-RATE * YEARS) * normal_cdf(d2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--volatility", type=float, default=os.environ.get("POOLNET_PARAM_VOLATILITY"))
    parser.add_argument("--seed", type=int, default=os.environ.get("POOLNET_PARAM_SEED"))
    parser.add_argument("--paths", type=int, default=5_000_000)
    parser.add_argument("--out", type=Path, default=Path("out/result.json"))
    args = parser.parse_args()
    estimate, error = simulate(args.volatility, args.seed, args.paths)
    exact = black_scholes(args.volatility)
    result = {"volatility": args.volatility, "seed": args.seed, "paths": args.paths,
              "estimate": estimate, "standard_error": error, "exact": exact}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"volatility {args.volatility} seed {args.seed}: {estimate:.4f} ± {error:.4f} "
          f"(exact {exact:.4f})")


if __name__ == "__main__":
    main()
