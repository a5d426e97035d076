"""``poolnet devices``: who may use the pool; approve, deny or revoke, or make a new pairing
code (on the host)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from poolnet_desktop.commands.options import DEFAULT_POOL, add_data_dir
from poolnet_desktop.core.protocol import (
    AccessChanged,
    AccessList,
    ApproveDevice,
    ListAccess,
    NewPairingCode,
    PairingCode,
    RevokeDevice,
)
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.link import open_link


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices", help="list, approve, deny or revoke devices, or replace the pairing code (run on the host)"
    )
    parser.add_argument("action", nargs="?", default="list", choices=["list", "approve", "deny", "revoke", "new-code"])
    parser.add_argument("device_id", nargs="?", help="the device (for approve, deny, revoke)")
    parser.add_argument("--reason", default="", help="why a device is revoked (kept in the audit log)")
    parser.add_argument("--url", default=DEFAULT_POOL, help="the pool (default this machine's)")
    add_data_dir(parser)
    parser.set_defaults(run=run)


async def administer(args: argparse.Namespace, data_dir: Path) -> AccessList | AccessChanged | PairingCode:
    request = {
        "list": lambda: ListAccess(),
        "approve": lambda: ApproveDevice(device_id=args.device_id),
        "deny": lambda: ApproveDevice(device_id=args.device_id, deny=True),
        "revoke": lambda: RevokeDevice(device_id=args.device_id, reason=args.reason),
        "new-code": lambda: NewPairingCode(),
    }[args.action]()
    async with await open_link(args.url, data_dir) as link:
        await link.send(request)
        async with asyncio.timeout(10):
            return await link.expect(AccessList, AccessChanged, PairingCode)  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    if args.action not in ("list", "new-code") and not args.device_id:
        print(f"poolnet: devices {args.action} needs a device id (see 'poolnet devices')", file=sys.stderr)
        return 2
    try:
        answer = asyncio.run(administer(args, resolve_data_dir(args.data_dir)))
    except Exception as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 1
    if isinstance(answer, AccessChanged):
        print(f"{answer.device_id}: {answer.outcome}")
        return 0
    if isinstance(answer, PairingCode):
        print(f"New pairing code: {answer.code} (the old one no longer pairs)")
        return 0
    print(f"Pairing code: {answer.pairing_code or 'off'}")
    print("\nApproved:")
    for entry in answer.approved:
        print(f"  {entry.device_id}  {entry.name}")
    print("\nWaiting for approval:" if answer.pending else "\nNobody is waiting for approval.")
    for entry in answer.pending:
        print(f"  {entry.device_id}  {entry.name} from {entry.address}   (poolnet devices approve {entry.device_id})")
    if answer.revoked:
        print("\nRevoked:")
        for device_id in answer.revoked:
            print(f"  {device_id}")
    if answer.audit:
        print("\nRecent events:")
        for entry in answer.audit[:15]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.at))
            print(f"  {stamp}  {entry.detail}  {entry.device_id} {entry.address}".rstrip())
    return 0
