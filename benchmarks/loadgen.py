"""Load generator: thousands of simulated members, observers and seed clients on loopback.

Simulated members speak exactly what ``runtime.member.agent`` speaks, minus the sampling and the
subprocesses: TLS, ``member_hello`` + ``authenticate_to_host`` with an Ed25519 key (approved
beforehand in the host's ``TrustStore``, as pairing would have done), ``welcome``, a
``shards_report``, then ``resource_update`` every 2 s and ``heartbeat`` every 5 s. A
``shard_assign`` is answered as a member answers it (``shard_started`` then ``shard_finished``,
exit 0) without starting a process.

Measurement rides on fields the member controls, so no clock other than this machine's is
involved: each resource report carries its send time (milliseconds since ``--epoch``) in
``memoryUsage``, which observers read back from ``pool_state`` to measure delivery latency; a
probe task's command carries its submit time, which the member that gets it reads back.

Everything is bounded: ``--duration`` seconds, then every worker closes its connections,
writes its figures and exits. Keys derive from ``--key-seed``, so the orchestrator approves
the same keys without talking to the workers (``member_keys``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from bench_support import raise_fd_limit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from poolnet_desktop.core.auth import device_id_for
from poolnet_desktop.core.manifest import ShardResources, TaskSpec
from poolnet_desktop.core.protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Hello,
    PoolState,
    ProtocolError,
    ResourceUpdate,
    Welcome,
    decode_server,
    encode,
)
from poolnet_desktop.core.resources import Resources, SharingLimits
from poolnet_desktop.core.task_protocol import (
    AssignShards,
    FinishedShard,
    ShardResult,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    SubmitTask,
    TaskAccepted,
)
from poolnet_desktop.runtime.security.auth import AuthRefused, authenticate_to_host, member_hello
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import client_ssl_context
from poolnet_desktop.runtime.security.trust import PinnedHosts

PROBE_MARK = "poolnet-probe"
HISTOGRAM_MS = 60_000  # 1 ms buckets up to a minute; anything later lands in the last one


# ---- identities -------------------------------------------------------------------------------


def member_keys(count: int, seed: str, kind: str = "member") -> list[Ed25519PrivateKey]:
    """``count`` deterministic Ed25519 keys: the orchestrator approves the very keys the
    workers will use, without either side sending them anywhere."""
    return [
        Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}/{kind}/{i}".encode()).digest())
        for i in range(count)
    ]


def light_identity(key: Ed25519PrivateKey) -> Identity:
    """An in-memory identity: the same signing key type as a real one, but no TLS
    certificate, since a simulated member never serves TLS itself."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Identity(
        signing_key=key,
        public_key=public,
        device_id=device_id_for(public),
        cert_der=b"",
        cert_fingerprint="",
        cert_path=Path("/nonexistent"),
        tls_key_path=Path("/nonexistent"),
    )


# ---- figures ----------------------------------------------------------------------------------


@dataclass
class Histogram:
    """Latencies in 1 ms buckets: mergeable across workers, exact enough for a p99."""

    buckets: list[int] = field(default_factory=lambda: [0] * (HISTOGRAM_MS + 1))
    count: int = 0
    maximum: float = 0.0

    def add(self, seconds: float) -> None:
        self.buckets[min(max(int(seconds * 1000), 0), HISTOGRAM_MS)] += 1
        self.count += 1
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.count += other.count
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float | None:
        """The upper edge (seconds) of the bucket holding the ``q`` quantile."""
        if not self.count:
            return None
        wanted, seen = q * self.count, 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= wanted:
                return (index + 1) / 1000
        return self.maximum

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.quantile(0.5), "p99": self.quantile(0.99), "max": self.maximum}


@dataclass
class Figures:
    """What one worker counted; ``merge`` sums them across workers."""

    members_joined: int = 0
    members_failed: int = 0  # failed join attempts (each is retried)
    disconnects: int = 0
    messages_sent: int = 0
    observer_batches: int = 0
    observer_frames_bytes: int = 0
    seed_relays: int = 0
    probes_submitted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    staleness: Histogram = field(default_factory=Histogram)
    shard_start: Histogram = field(default_factory=Histogram)
    cpu_seconds: float = 0.0
    max_rss_mb: float = 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def merge(self, other: Figures) -> None:
        for name in ("members_joined", "members_failed", "disconnects", "messages_sent", "observer_batches",
                     "observer_frames_bytes", "seed_relays", "probes_submitted", "cpu_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_rss_mb = max(self.max_rss_mb, other.max_rss_mb)
        for key, n in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + n
        self.staleness.merge(other.staleness)
        self.shard_start.merge(other.shard_start)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["staleness"] = self.staleness.summary()
        data["shard_start"] = self.shard_start.summary()
        return data


# ---- one worker's clients ---------------------------------------------------------------------


@dataclass
class Plan:
    """Everything a worker needs; picklable, so it crosses into worker processes."""

    url: str
    pool_id: str
    fingerprint: str
    key_seed: str
    epoch: float
    duration: float
    ramp_per_s: float
    resource_interval: float = 2.0
    heartbeat_interval: float = 5.0
    seed_url: str | None = None
    probe_interval: float = 0.0
    pins_dir: str = "/tmp"
    measure_after: float = 0.0  # seconds after epoch: the join ramp is counted, not measured


class Worker:
    """Runs a slice of the clients on one event loop until the plan's end time."""

    def __init__(self, plan: Plan, index: int) -> None:
        self.plan = plan
        self.index = index
        self.figures = Figures()
        self.end = plan.epoch + plan.duration
        pins = Path(plan.pins_dir) / f"pins-{os.getpid()}.json"
        self.pinned = PinnedHosts(pins, {plan.pool_id: plan.fingerprint})  # in memory: never written
        self.ssl = client_ssl_context()

    def remaining(self) -> float:
        return max(0.0, self.end - time.time())

    async def run(self, members: list[Ed25519PrivateKey], observers: list[Ed25519PrivateKey], seeds: int) -> None:
        clients = [self._observer(light_identity(k), i == 0) for i, k in enumerate(observers)]
        clients += [self._seed_client(f"seed-{self.index}-{i}") for i in range(seeds)]
        # Spread joins over the ramp so the coordinator sees a crowd arrive, not a stampede.
        delay = 1.0 / self.plan.ramp_per_s if self.plan.ramp_per_s > 0 else 0.0
        clients += [
            self._member(light_identity(k), i * delay, f"127.{self.index + 2}.{i // 250 % 250}.{i % 250 + 1}")
            for i, k in enumerate(members)
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.remaining() + 5):
                await asyncio.gather(*clients)

    async def _open(self, identity: Identity, role: str, source: str) -> tuple[ClientConnection, Welcome]:
        """Connect from ``source`` (a loopback address: LAN members have one each, and the
        host rate-limits failures per address) and authenticate exactly as ``runtime.member.agent``."""
        connection = await connect(
            self.plan.url, ssl=self.ssl, proxy=None, max_size=MAX_FRAME, open_timeout=30,
            ping_interval=20, ping_timeout=20, close_timeout=2, local_addr=(source, 0),
        )
        try:
            hello = member_hello(identity, Hello(
                protocol=PROTOCOL_VERSION, role=role, device_id=identity.device_id,  # type: ignore[arg-type]
                device_name=f"sim-{identity.device_id[3:11]}", platform="linux", software="poolnet loadgen",
            ))
            await connection.send(encode(hello), text=True)
            await authenticate_to_host(connection, identity, hello, self.pinned, self.plan.pool_id, None, timeout=30)
            async with asyncio.timeout(30):
                while not isinstance(message := decode_server(await connection.recv()), Welcome):
                    if isinstance(message, Error):
                        raise ProtocolError(message.code, message.message)
        except BaseException:
            await connection.close()
            raise
        return connection, message

    def _resources(self) -> Resources:
        """A plausible 8-core, 16 GiB machine whose ``memoryUsage`` is its send time."""
        sent_ms = (time.time() - self.plan.epoch) * 1000
        return Resources(
            cpu_usage=random.uniform(5, 60), cpu_available=50.0, cpu_cores=8,
            memory_usage=sent_ms, memory_available=8192.0, memory_total=16384.0,
            storage_usage=100_000.0, storage_available=400_000.0, storage_total=500_000.0,
            limits=SharingLimits(),
        )

    async def _send(self, connection: ClientConnection, message: msgspec.Struct) -> None:
        await connection.send(encode(message), text=True)
        self.figures.messages_sent += 1

    async def _join(self, identity: Identity, role: str, source: str) -> ClientConnection | None:
        """Join, retrying failures with exponential backoff and jitter as the agent does."""
        delay = 1.0
        while self.remaining() > delay:
            try:
                connection, _ = await self._open(identity, role, source)
                return connection
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, AuthRefused, ProtocolError) as exc:
                self.figures.members_failed += 1
                self.figures.error(f"{role} join: {type(exc).__name__}: {str(exc)[:60]}")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)
        return None

    async def _member(self, identity: Identity, start_after: float, source: str) -> None:
        await asyncio.sleep(start_after)
        connection = await self._join(identity, "member", source)
        if connection is None:
            return
        self.figures.members_joined += 1
        reporter = asyncio.create_task(self._report(connection, identity.device_id))
        try:
            await self._send(connection, ShardsReport(running=[], spooled=[], resources=self._resources()))
            async with asyncio.timeout(self.remaining()):
                async for frame in connection:
                    if isinstance(frame, str):
                        await self._on_member_message(connection, decode_server(frame))
        except ConnectionClosed:
            self.figures.disconnects += 1
        except TimeoutError:
            pass
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await connection.close()

    async def _report(self, connection: ClientConnection, device_id: str) -> None:
        """Resources every 2 s and a heartbeat every 5 s, phases spread over members."""
        now = time.monotonic()
        next_resources = now + random.uniform(0, self.plan.resource_interval)
        next_heartbeat = now + random.uniform(0, self.plan.heartbeat_interval)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(max(0.0, min(next_resources, next_heartbeat) - time.monotonic()))
                now = time.monotonic()
                if now >= next_resources:
                    next_resources += self.plan.resource_interval
                    await self._send(connection, ResourceUpdate(device_id=device_id, resources=self._resources()))
                if now >= next_heartbeat:
                    next_heartbeat += self.plan.heartbeat_interval
                    await self._send(connection, Heartbeat(device_id=device_id))

    async def _on_member_message(self, connection: ClientConnection, message: Any) -> None:
        if not isinstance(message, AssignShards):
            if isinstance(message, Error):
                self.figures.error(f"member got error {message.code}")
            return
        received = time.time()
        if len(message.command) == 3 and message.command[1] == PROBE_MARK:
            self.figures.shard_start.add(received - float(message.command[2]))
        for ref in message.refs():
            await self._send(connection, ShardStarted(shard=ref))
        result = ShardResult(reason="succeeded", exit_code=0, started=received, ended=time.time())
        finished = [FinishedShard(ref, result) for ref in message.refs()]
        await self._send(connection, ShardsFinished(results=finished))

    async def _observer(self, identity: Identity, probes: bool) -> None:
        """Watch ``pool_state``; the first observer also submits the probe tasks."""
        connection = await self._join(identity, "observer", "127.0.1.1")
        if connection is None:
            return
        prober = asyncio.create_task(self._probe(connection)) if probes and self.plan.probe_interval > 0 else None
        try:
            async with asyncio.timeout(self.remaining()):
                async for frame in connection:
                    received = time.time()
                    message = decode_server(frame)
                    if isinstance(message, PoolState):
                        self._observe(message, received, len(frame))
                    elif isinstance(message, Error):
                        self.figures.error(f"observer got error {message.code}: {message.message[:60]}")
                    elif not isinstance(message, TaskAccepted):
                        continue
        except ConnectionClosed as exc:
            self.figures.disconnects += 1
            self.figures.error(f"observer closed: {exc}")
        except TimeoutError:
            pass
        finally:
            if prober is not None:
                prober.cancel()
                await asyncio.gather(prober, return_exceptions=True)
            await connection.close()

    def _observe(self, state: PoolState, received: float, size: int) -> None:
        self.figures.observer_batches += 1
        self.figures.observer_frames_bytes += size
        if state.full:
            return  # the first batch lists everything ever reported, not fresh updates
        since_ms = self.plan.measure_after * 1000
        for device in state.devices:
            sent_ms = device.resources.memory_usage
            if device.is_online and sent_ms > since_ms:
                self.figures.staleness.add(received - (self.plan.epoch + sent_ms / 1000))

    async def _probe(self, connection: ClientConnection) -> None:
        """Submit a one-shard task every ``probe_interval`` s; members time its arrival."""
        await asyncio.sleep(max(self.plan.measure_after - (time.time() - self.plan.epoch), 0))
        while self.remaining() > self.plan.probe_interval + 2:
            spec = TaskSpec(
                name="probe", command=("true", PROBE_MARK, f"{time.time():.6f}"),
                resources=ShardResources(cpu=0.1), retries=0,
            )
            await self._send(connection, SubmitTask(request_id=str(self.figures.probes_submitted), spec=spec))
            self.figures.probes_submitted += 1
            await asyncio.sleep(self.plan.probe_interval)

    async def _seed_client(self, device_id: str) -> None:
        """A client written from the seed's docs: plain ws, register, then heartbeats and
        resource updates; counts the relayed updates it receives."""
        assert self.plan.seed_url is not None
        try:
            connection = await connect(self.plan.seed_url, proxy=None, max_size=MAX_FRAME, open_timeout=30)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.figures.error(f"seed join: {type(exc).__name__}")
            return
        register = {"type": "register", "deviceId": device_id, "deviceName": device_id, "platform": "linux"}
        reporter = None
        try:
            await connection.send(json.dumps(register))
            reporter = asyncio.create_task(self._report(connection, device_id))
            async with asyncio.timeout(self.remaining()):
                async for frame in connection:
                    if '"resource_update"' in frame[:40]:
                        self.figures.seed_relays += 1
        except ConnectionClosed:
            self.figures.disconnects += 1
        except TimeoutError:
            pass
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
            await connection.close()


def _run_worker(plan: Plan, index: int, members: range, observers: int, seeds: int, out: str) -> None:
    """One process: its slice of members (by index range), and optionally observers and seeds."""
    raise_fd_limit()
    worker = Worker(plan, index)
    keys = member_keys(members.stop, plan.key_seed)[members.start:]
    asyncio.run(worker.run(keys, member_keys(observers, plan.key_seed, "observer"), seeds))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    worker.figures.cpu_seconds = usage.ru_utime + usage.ru_stime
    worker.figures.max_rss_mb = usage.ru_maxrss / 1024
    Path(out).write_bytes(msgspec.json.encode(worker.figures))


def run(plan: Plan, members: int, observers: int, seeds: int, workers: int, out_dir: Path) -> Figures:
    """Run the whole load in ``workers`` member processes plus one for observers and seed
    clients; returns the merged figures once every process has ended."""
    out_dir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    bounds = [members * i // workers for i in range(workers + 1)]
    jobs = [(range(bounds[i], bounds[i + 1]), 0, 0) for i in range(workers)]
    jobs.append((range(0), observers, seeds))
    processes = []
    for index, (slice_, n_observers, n_seeds) in enumerate(jobs):
        out = str(out_dir / f"worker-{index}.json")
        process = context.Process(target=_run_worker, args=(plan, index, slice_, n_observers, n_seeds, out))
        process.start()
        processes.append((process, out))
    total = Figures()
    for process, out in processes:
        process.join(plan.duration + 120)
        if process.is_alive():
            process.kill()
            total.error("worker killed after overrunning")
            continue
        with contextlib.suppress(FileNotFoundError):
            total.merge(msgspec.json.decode(Path(out).read_bytes(), type=Figures))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the pool's wss:// URL")
    parser.add_argument("--pool-id", required=True)
    parser.add_argument("--fingerprint", required=True, help="the host certificate's SHA-256 (pinned)")
    parser.add_argument("--key-seed", required=True, help="the seed the approved keys derive from")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--observers", type=int, default=2)
    parser.add_argument("--seed-clients", type=int, default=0)
    parser.add_argument("--seed-url", help="ws:// URL of the legacy port, for seed clients")
    parser.add_argument("--workers", type=int, default=2, help="member processes (plus one for observers)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds until everything stops")
    parser.add_argument("--ramp", type=float, default=200.0, help="joins per second per worker")
    parser.add_argument("--probe-interval", type=float, default=0.0, help="seconds between probe tasks (0: none)")
    parser.add_argument("--measure-after", type=float, default=0.0,
                        help="seconds of ramp before staleness and probes are measured")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures (summary.json)")
    args = parser.parse_args(argv)
    plan = Plan(
        url=args.url, pool_id=args.pool_id, fingerprint=args.fingerprint, key_seed=args.key_seed,
        epoch=time.time(), duration=args.duration, ramp_per_s=args.ramp, seed_url=args.seed_url,
        probe_interval=args.probe_interval, pins_dir=str(args.out), measure_after=args.measure_after,
    )
    figures = run(plan, args.members, args.observers, args.seed_clients, args.workers, args.out)
    summary = figures.to_json()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
