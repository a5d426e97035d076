"""The coordinator's ``/metrics``: Prometheus text format, computed when scraped.

Gauges are read from live state at scrape time (nothing is counted twice or kept in sync);
only the two histograms are recorded as things happen: how long the coordinator spends on
each message it dispatches (by message type), and how late the event loop wakes a sleeper
(``LoopLagSampler``), which is the one figure that shows every member waiting at once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import time
from collections.abc import Callable, Iterable

import psutil
from websockets.datastructures import Headers
from websockets.http11 import Response

from poolnet_desktop.runtime.host.coordinator import Coordinator

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; dispatch is microseconds when healthy, loop lag milliseconds: one set covers both.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def parse_samples(text: str) -> dict[str, float]:
    """The exposition read back: ``name{labels}`` -> value for every sample line (what the
    benchmarks and tests read from ``/metrics``)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


class Histogram:
    """A cumulative Prometheus histogram over fixed ``BUCKETS``."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        """The ``_bucket``, ``_sum`` and ``_count`` samples; ``labels`` like ``type="x"``."""
        prefix = f"{labels}," if labels else ""
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts):
            running += n
            edge = "+Inf" if bound == float("inf") else repr(bound)
            yield f'{name}_bucket{{{prefix}le="{edge}"}} {running}'
        suffix = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{suffix} {self.total:.6f}"
        yield f"{name}_count{suffix} {self.count}"


class LoopLagSampler:
    """Sleeps ``interval`` seconds over and over and records how late each wake-up came.

    A loop busy with one long callback, or with too many short ones, shows here before any
    member notices a missed heartbeat.
    """

    def __init__(self, interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.histogram = Histogram()
        self.maximum = 0.0
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample(self) -> None:
        while True:
            before = self._clock()
            await asyncio.sleep(self.interval)
            lag = max(0.0, self._clock() - before - self.interval)
            self.histogram.observe(lag)
            self.maximum = max(self.maximum, lag)


class PoolMetrics:
    """Everything ``/metrics`` shows for one coordinator. ``start`` the lag sampler on the
    loop; ``response`` is the REST route (``server.rest.extend("/metrics", ...)``)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.lag = LoopLagSampler()
        self.dispatch: dict[str, Histogram] = {}
        self._process = psutil.Process()
        coordinator.observe_dispatch = self.observe_dispatch

    def start(self) -> None:
        self.lag.start()

    async def stop(self) -> None:
        await self.lag.stop()

    def observe_dispatch(self, message_type: str, seconds: float) -> None:
        histogram = self.dispatch.get(message_type)
        if histogram is None:
            histogram = self.dispatch[message_type] = Histogram()
        histogram.observe(seconds)

    def response(self) -> Response:
        body = self.render().encode()
        headers = Headers(
            [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body))), ("Connection", "close")]
        )
        return Response(200, "OK", headers, body)

    def render(self) -> str:
        """The whole exposition, one sample per line, ending with a newline."""
        c = self.coordinator
        online = c.registry.online_count()
        sessions = c.session_kinds()
        memory = self._process.memory_info()
        cpu = self._process.cpu_times()
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        metric("poolnet_devices_online", "gauge", "Devices online now.", [f"poolnet_devices_online {online}"])
        metric("poolnet_devices_known", "gauge", "Devices known, online or not.",
               [f"poolnet_devices_known {len(c.registry)}"])
        metric("poolnet_sessions", "gauge", "Open connections by dialect and role.",
               [f'poolnet_sessions{{dialect="{d}",role="{r}"}} {n}' for (d, r), n in sorted(sessions.items())])
        metric("poolnet_messages_received_total", "counter", "Messages decoded and dispatched.",
               [f"poolnet_messages_received_total {c.messages_in}"])
        metric("poolnet_messages_sent_total", "counter", "Frames queued to peers by broadcasts.",
               [f"poolnet_messages_sent_total {c.messages_out}"])
        metric("poolnet_tasks", "gauge", "Tasks by state.",
               [f'poolnet_tasks{{state="{s}"}} {n}' for s, n in sorted(c.task_counts().items())])
        metric("poolnet_shards", "gauge", "Shards by state.",
               [f'poolnet_shards{{state="{s}"}} {n}' for s, n in sorted(c.shard_counts().items())])
        metric("poolnet_dispatch_seconds", "histogram", "Time to handle one message, by type.",
               [line for t, h in sorted(self.dispatch.items()) for line in h.lines("poolnet_dispatch_seconds",
                                                                                  f'type="{t}"')])
        metric("poolnet_event_loop_lag_seconds", "histogram", "How late the event loop woke a sleeper.",
               self.lag.histogram.lines("poolnet_event_loop_lag_seconds"))
        metric("poolnet_event_loop_lag_max_seconds", "gauge", "Largest event-loop lag seen since start.",
               [f"poolnet_event_loop_lag_max_seconds {self.lag.maximum:.6f}"])
        metric("python_gc_collections_total", "counter", "Garbage collections by generation (see gc_tuning).",
               [f'python_gc_collections_total{{generation="{g}"}} {stats["collections"]}'
                for g, stats in enumerate(gc.get_stats())])
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               [f"process_resident_memory_bytes {memory.rss}"])
        metric("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
               [f"process_cpu_seconds_total {cpu.user + cpu.system:.3f}"])
        return "\n".join(out) + "\n"
