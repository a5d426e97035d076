"""Options several subcommands share: the data folder, LAN discovery and the pairing code."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from poolnet_desktop.core.auth import format_pairing_code

from poolnet_desktop.runtime.discovery import DiscoverySettings

DEFAULT_POOL = "wss://127.0.0.1:3000/ws"
CODE_ENV = "POOLNET_PAIRING_CODE"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="where this instance keeps its data and identity (or POOLNET_HOME)")


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
