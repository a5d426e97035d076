"""Garbage-collector settings for a process that may hold a large pool.

A coordinator's heap is large and steady: each member's connection is a few hundred objects
the collector tracks (TLS transport, WebSocket state, tasks, futures), and they live as long as
the member stays. CPython's default young-generation threshold (700 more allocations than
frees) then starts a collection several times a second, every tenth one also walks the middle
generation, and every so often a full collection walks the whole heap, stopping the event loop
for up to ~0.9 s at 5,000 members. Measured with ``benchmarks/bench_scale.py --members 5000``:
the default thresholds cost the host ~14 s of collection per 150 s run and put the loop's p99
lag at 2.5 s; a young threshold of 50,000 brought that to ~2 s and 0.5 s, and the host's CPU
from 79 % to 70 % of a core. Memory grows by at most the young objects not yet collected.

Objects alive at start (modules, classes, functions) live as long as the process, so they are
moved out of the collector's sight (``gc.freeze``) and full collections skip them.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_serving() -> None:
    """Call once, after imports and before the event loop starts."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
