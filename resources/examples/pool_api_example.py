# %% [markdown]
# # `poolnet.Pool`: `concurrent.futures` across your pool
#
# Run it as a script (`.venv/bin/python resources/examples/pool_api_example.py`) or cell by
# cell in Jupyter. It uses the pool this machine's `poolnet` commands use (the one it hosts
# or joined last); pass a URL (`poolnet.Pool("192.168.1.10:3000")`) for another.
# Every call runs inside a member's sandbox; the window's Tasks page shows each `map` as one
# task ("pool estimate_pi") with a shard per chunk of calls.

# %%
import random
import time

import poolnet


def estimate_pi(seed: int, samples: int = 200_000) -> float:
    """Monte Carlo: the share of random points of the unit square inside the quarter circle."""
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(samples))
    return 4.0 * inside / samples


def check_sample(seed: int) -> int:
    if seed == 13:
        raise ValueError(f"seed {seed} is unlucky")
    print(f"seed {seed} checked")  # printed on the member, shown here
    return seed


# %%
with poolnet.Pool() as pool:
    # map: the calls are split into a shard per core the pool shares; results come in order.
    started = time.perf_counter()
    estimates = list(pool.map(estimate_pi, range(16)))
    print(f"pi ~ {sum(estimates) / len(estimates):.4f} from 16 x 200,000 samples "
          f"in {time.perf_counter() - started:.1f} s")

    # submit: one call, one future, like ProcessPoolExecutor.submit.
    future = pool.submit(estimate_pi, 99, samples=50_000)
    print(f"one more estimate: {future.result():.4f}")

    # A call that raises re-raises here, with the member's traceback as its cause.
    try:
        list(pool.map(check_sample, [11, 12, 13]))
    except ValueError as exc:
        print(f"caught: {exc}")
        print(f"remote traceback: {exc.__cause__}")
