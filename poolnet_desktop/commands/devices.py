"""``poolnet devices``: who may use the pool and what each device may do; approve, deny,
revoke, grant or withdraw a permission, or make a new pairing code (the owner only, on the host)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from poolnet_desktop.commands.options import NO_POOL_HINT, add_pool, pool_url, waiting_notice
from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.permissions import PERMISSIONS
from poolnet_desktop.core.protocol import (
    AccessChanged,
    AccessList,
    ApproveDevice,
    ListAccess,
    NewPairingCode,
    PairingCode,
    RevokeDevice,
    SetPermissions,
)
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS, describe_link_failure
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.security.identity import Identity


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list devices and their permissions; approve, deny, revoke, grant, withdraw; new-code (on the host)",
    )
    parser.add_argument(
        "action", nargs="?", default="list",
        choices=["list", "approve", "deny", "revoke", "grant", "withdraw", "new-code"],
    )
    parser.add_argument("device_id", nargs="?", help="the device (for every action but list and new-code)")
    parser.add_argument(
        "permission", nargs="?", choices=PERMISSIONS,
        help="for grant and withdraw: member (runs work), observer (sees the pool), submit (submits tasks)",
    )
    parser.add_argument("--reason", default="", help="why a device is revoked (kept in the audit log)")
    add_pool(parser)
    parser.set_defaults(run=run)


async def administer(args: argparse.Namespace, data_dir: Path) -> AccessList | AccessChanged | PairingCode:
    request = {
        "list": lambda: ListAccess(),
        "approve": lambda: ApproveDevice(device_id=args.device_id),
        "deny": lambda: ApproveDevice(device_id=args.device_id, deny=True),
        "revoke": lambda: RevokeDevice(device_id=args.device_id, reason=args.reason),
        "grant": lambda: SetPermissions(device_id=args.device_id, permission=args.permission, allow=True),
        "withdraw": lambda: SetPermissions(device_id=args.device_id, permission=args.permission, allow=False),
        "new-code": lambda: NewPairingCode(),
    }[args.action]()
    async with await open_link(pool_url(args), data_dir, on_pending=waiting_notice(data_dir)) as link:
        await link.send(request)
        async with asyncio.timeout(10):
            return await link.expect(AccessList, AccessChanged, PairingCode)  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    if args.action not in ("list", "new-code") and not args.device_id:
        print(f"poolnet: devices {args.action} needs a device id (see 'poolnet devices')", file=sys.stderr)
        return 2
    if args.action in ("grant", "withdraw") and not args.permission:
        print(f"poolnet: devices {args.action} needs a permission: {', '.join(PERMISSIONS)}", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(args.data_dir)
    try:
        answer = asyncio.run(administer(args, data_dir))
    except LINK_ERRORS as exc:
        print(f"poolnet: {describe_link_failure(pool_url(args), exc, NO_POOL_HINT)}", file=sys.stderr)
        return 1
    if isinstance(answer, AccessChanged):
        print(f"{answer.device_id}: {answer.outcome}")
        return 0
    if isinstance(answer, PairingCode):
        print(f"New pairing code: {answer.code} (the old one no longer pairs)")
        return 0
    you = Identity.load_or_create(data_dir).device_id  # the pool's owner on its host, else a device like any
    print(render_access(answer, you))
    return 0


def render_access(answer: AccessList, you: str) -> str:
    """The pool's code, who is approved with what, who waits, who was revoked, and recent
    events. Names and addresses are the devices' own words (an unapproved device names itself
    in its hello): each is shown printable, on its line."""
    lines = [f"Pairing code: {answer.pairing_code or 'off'}", "", "Approved:"]
    for entry in answer.approved:
        lines.append(f"  {entry.device_id}  {printable(entry.name)}{' (you)' if entry.device_id == you else ''}"
                     f"  [{', '.join(entry.permissions) or 'nothing'}]")
    lines += ["", "Waiting for approval:" if answer.pending else "Nobody is waiting for approval."]
    for waiting in answer.pending:
        lines.append(f"  {waiting.device_id}  {printable(waiting.name)} from {printable(waiting.address)}"
                     f"   (poolnet devices approve {waiting.device_id})")
    if answer.revoked:
        lines += ["", "Revoked:"] + [f"  {device_id}" for device_id in answer.revoked]
    if answer.audit:
        lines += ["", "Recent events:"]
        for event in answer.audit[:15]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
            lines.append(printable(f"  {stamp}  {event.detail}  {event.device_id} {event.address}".rstrip()))
    return "\n".join(lines)
