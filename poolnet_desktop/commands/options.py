"""What several subcommands share: the pool, the data folder, LAN discovery, the pairing code,
and the notice that the pool's owner is being asked to let this device in."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from poolnet_desktop.core.auth import format_pairing_code
from poolnet_desktop.core.sandbox_state import describe, sandbox_state
from poolnet_desktop.core.units import parse_size
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.member.sandbox import probe
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.pool_files import default_pool_url
from poolnet_desktop.runtime.security.identity import Identity

CODE_ENV = "POOLNET_PAIRING_CODE"
# What a command adds where nothing listens at the pool's address.
NO_POOL_HINT = "start one: poolnet host; or name another: --url"


def waiting_notice(data_dir: Path) -> Callable[[str], None]:
    """What a command says, at once, when the pool's owner is asked to let this device in
    (it used to wait up to two minutes in silence)."""
    device_id = Identity.load_or_create(data_dir).device_id

    def say(message: str) -> None:
        print(f"poolnet: {message} {device_id}… (Ctrl-C to stop)", file=sys.stderr, flush=True)

    return say


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535; else one clear line, exit 2."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


Number = TypeVar("Number", int, float)


def non_negative(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    """An argparse type: a number of ``kind`` (int or float), zero or more."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
        return value

    return parse


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="where this instance keeps its data and identity (or POOLNET_HOME)")


def add_pool(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """``--url`` (and, with ``positional``, the same as a bare argument, as ``status`` always
    took it); default: the pool the data folder hosts or joined last."""
    help_text = "the pool, e.g. 192.168.1.10:3000 (default: the pool this data folder hosts or joined last)"
    if positional:
        parser.add_argument("pool", nargs="?", metavar="URL", help=help_text)
    parser.add_argument("--url", help=help_text)
    add_data_dir(parser)


def pool_url(args: argparse.Namespace) -> str:
    """The pool a command talks to: as given, else the data folder's own, else this machine's
    default port."""
    given = args.url or getattr(args, "pool", None)
    return given or default_pool_url(resolve_data_dir(args.data_dir))


def add_discovery(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-discovery", action="store_true", help="no zeroconf on the LAN (or POOLNET_DISCOVERY=off)")
    parser.add_argument(
        "--discovery-interfaces",
        metavar="LIST",
        help="comma-separated interface names or IPv4 addresses for zeroconf (or POOLNET_DISCOVERY_INTERFACES)",
    )


def discovery_settings(args: argparse.Namespace) -> DiscoverySettings:
    """Environment first, then the command's flags (the most specific wins)."""
    interfaces = args.discovery_interfaces.split(",") if args.discovery_interfaces else None
    return DiscoverySettings.from_env().with_overrides(enabled=False if args.no_discovery else None, interfaces=interfaces)


class CodeError(Exception):
    """A pairing code that cannot be read or is not a code; the message is one line."""


class _CodeOnCommandLine(argparse.Action):
    """``--code``/``--pairing-code`` as older versions took them: refused in one line."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.exit(2, f"poolnet: a pairing code is never given on the command line (every local user can read it "
                       f"there); use --code-file FILE, {CODE_ENV} or the prompt\n")


def add_code_file(parser: argparse.ArgumentParser, help: str) -> None:
    """``--code-file FILE``: codes are never taken from the command line, where every local
    user can read them in the process list."""
    parser.add_argument("--code-file", metavar="FILE", help=f"{help} (or {CODE_ENV}); never on the command line")
    parser.add_argument("--code", "--pairing-code", nargs="?", action=_CodeOnCommandLine, help=argparse.SUPPRESS)


def read_pairing_code(args: argparse.Namespace, prompt: str | None = None) -> str | None:
    """The code from ``--code-file``, else ``$POOLNET_PAIRING_CODE``, else, with ``prompt``
    and a terminal, typed without echo; None when there is none. Returned formatted
    (``ABCD-EFGH``); ``CodeError`` when the file cannot be read or the text is not a code."""
    text: str | None
    if args.code_file:
        try:
            text = Path(args.code_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CodeError(f"cannot read the pairing code from {args.code_file}: {exc}") from None
    else:
        text = os.environ.get(CODE_ENV)
        if text is None and prompt is not None and sys.stdin.isatty():
            text = getpass.getpass(prompt)
    if text is None or not text.strip():
        return None
    try:
        return format_pairing_code(text)
    except ValueError as exc:
        raise CodeError(f"invalid pairing code: {exc}") from None


def add_task_sandbox(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-task-network", action="store_true",
                        help="tasks run without network access (each shard in a network namespace of its own)")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="where no sandbox can be made (no bubblewrap, not Linux), run tasks anyway, without one")
    parser.add_argument("--env-cache", type=size_in_bytes, default="10 GB", metavar="SIZE",
                        help="room for the Python environments built for tasks; the least recently "
                             "used go past it (default 10 GB)")


def size_in_bytes(text: str) -> int:
    """argparse type: a size with its unit (``"10 GB"``, ``"500 MiB"``) in bytes."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sandbox_line(allow_unsandboxed: bool) -> str:
    """What the member will do with tasks here, for the start banner."""
    available, why_not = probe()
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return describe(sandbox_state(available, allow_unsandboxed), why_not, as_root)

