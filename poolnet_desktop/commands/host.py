"""``poolnet host``: run a pool's coordinator and this machine's own member."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from pathlib import Path

from poolnet_desktop.commands.options import (
    CodeError,
    add_code_file,
    add_data_dir,
    add_discovery,
    add_task_sandbox,
    discovery_settings,
    non_negative,
    port_number,
    read_pairing_code,
    sandbox_line,
)
from poolnet_desktop.commands.running import run_holding, run_service, until_signalled
from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.retention import RetentionPolicy
from poolnet_desktop.core.units import format_mb
from poolnet_desktop.gc_tuning import tune_for_serving
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.host.server import ListenError
from poolnet_desktop.runtime.instance import Instance, InstanceConfig, InstanceEvents
from poolnet_desktop.runtime.net.discovery import addresses_to_show
from poolnet_desktop.runtime.security.auth import PendingApproval


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("host", help="host a pool here (and share this machine in it)")
    parser.add_argument("--port", type=port_number, default=3000, help="port for members, wss:// (default 3000)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--name", help="the pool's name, shown to members")
    add_code_file(parser, "a file holding a fixed code members join with (default: a random one)")
    parser.add_argument(
        "--allow-legacy",
        action="store_true",
        help="let seed-protocol clients observe the pool over plain ws:// on --legacy-port",
    )
    parser.add_argument("--legacy-port", type=port_number, default=3001, help="port for seed clients (default 3001)")
    parser.add_argument("--legacy-tasks", action="store_true", help="let seed clients run commands (task_submit)")
    parser.add_argument(
        "--new-identity",
        action="store_true",
        help="replace the pool's keys and certificate (if they leaked): tasks are kept, every device pairs again",
    )
    parser.add_argument("--no-member", action="store_true", help="coordinate only; do not share this machine")
    defaults = RetentionPolicy()
    parser.add_argument("--keep-task-days", type=non_negative(float), default=defaults.keep_days, metavar="DAYS",
                        help=f"keep ended tasks this many days (default {defaults.keep_days:g})")
    parser.add_argument("--keep-tasks", type=non_negative(int), default=defaults.keep_last, metavar="N",
                        help=f"and always the last N ended, whichever keeps more (default {defaults.keep_last})")
    add_task_sandbox(parser)
    add_data_dir(parser)
    add_discovery(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    return run_holding(data_dir, "poolnet host", lambda: _serve(args, data_dir))


class _HostPrinter(InstanceEvents):
    """Prints the pool's banner once it is up, a new pairing code when it changes, and each
    device that starts waiting for the owner's approval (a headless host has no window to ask
    in: the device waits two minutes, then is refused)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._code: str | None = None
        self._waiting: set[str] = set()
        self.failed: str | None = None

    def approvals_changed(self, pending: list[PendingApproval]) -> None:
        for device in pending:
            if device.device_id not in self._waiting:
                role = "watch the pool" if device.role == "observer" else "join as a member"
                print(f"  waiting:       {printable(device.name or '(no name)')} from {printable(device.address)} "
                      f"asks to {role}: poolnet devices approve {device.device_id} (or deny)", flush=True)
        self._waiting = {device.device_id for device in pending}

    def host_started(self, host: PoolHost) -> None:
        if self._code is not None:
            if host.pairing_code != self._code:
                self._code = host.pairing_code
                print(f"  new pairing code: {self._code}", flush=True)
            return
        self._code = host.pairing_code or ""
        args = self._args
        reachable = addresses_to_show(args.bind)[0]
        print(f"PoolNet pool {host.coordinator.config.pool_name!r} is up at wss://{reachable}:{host.server.port}/ws",
              flush=True)
        print(f"  pairing code:  {host.pairing_code}", flush=True)
        if args.new_identity:
            print(f"  new identity:  certificate {host.identity.cert_fingerprint[:16]}…; every device must pair"
                  " again with the code (poolnet join --forget-pin)", flush=True)
        for address in addresses_to_show(args.bind):
            print(f"  members join:  poolnet join {address}:{host.server.port}   (and type the code)", flush=True)
        if host.legacy_server is not None:
            print(seed_port_notice(host.legacy_server.url, args.legacy_tasks), flush=True)
        announcer = host.announcer
        announced = f"announced on {', '.join(announcer.addresses)}" if announcer and announcer.announced else "off"
        print(f"  discovery:     {announced}", flush=True)
        if not args.no_member:
            print(f"  tasks:         {sandbox_line(args.allow_unsandboxed)}", flush=True)

    def host_failed(self, reason: str) -> None:
        self.failed = reason

    def problem(self, text: str) -> None:
        print(f"poolnet: {text}", file=sys.stderr, flush=True)


def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        pairing_code = read_pairing_code(args)
    except CodeError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    discovery = discovery_settings(args)
    options = HostOptions(
        data_dir=data_dir,
        bind=args.bind,
        port=args.port,
        pool_name=args.name,
        pairing_code=pairing_code,
        legacy_port=args.legacy_port if args.allow_legacy else None,
        seed_may_submit=args.legacy_tasks,
        discovery=discovery,
        new_identity=args.new_identity,
        retention=RetentionPolicy(keep_days=args.keep_task_days, keep_last=args.keep_tasks),
    )
    printer = _HostPrinter(args)
    instance = Instance(
        InstanceConfig(
            data_dir=data_dir,
            device_name=socket.gethostname(),
            host=options,
            share=not args.no_member,
            task_network=not args.no_task_network,
            allow_unsandboxed=args.allow_unsandboxed,
            env_cache_limit=args.env_cache,
            discovery=discovery,
        ),
        printer,
    )

    async def start() -> None:
        await instance.start()
        if instance.host is None:
            raise ListenError(printer.failed or "the pool could not start")
        if instance.member is not None:
            instance.spawn(announce_own_member(instance.host, instance.member.identity.device_id))

    async def stop() -> None:
        up = instance.host is not None
        await instance.stop()
        if up:
            print("PoolNet pool stopped.", flush=True)

    tune_for_serving()
    try:
        run_service(until_signalled(start, stop))
    except ListenError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 1
    return 0


def seed_port_notice(url: str, legacy_tasks: bool) -> str:
    """What the seed port lets anyone do, said plainly: it has no key and no encryption."""
    if legacy_tasks:
        return (
            f"  seed clients:  {url} - WARNING: --legacy-tasks is on: anyone on this network can run"
            " commands on this pool's members, without a key, and see the pool and its devices"
        )
    return (
        f"  seed clients:  {url} - anyone on this network can see the pool and list its devices,"
        " without a key; they cannot run tasks"
    )


async def announce_own_member(host: PoolHost, device_id: str, timeout: float = 15.0) -> None:
    """Print this machine once its member has joined and reported what it shares."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while (device := host.coordinator.registry.get(device_id)) is None or not device.resources.cpu_cores:
                await asyncio.sleep(0.1)
            r = device.resources
            print(
                f"  this machine:  {device.name} joined with {r.cpu_cores} cores, {format_mb(r.memory_total)} memory,"
                f" {format_mb(r.storage_available)} storage free, {r.gpus} GPU (poolnet status shows the pool)",
                flush=True,
            )
