"""The ``poolnet`` command line: the same pool, host and member code as the desktop app."""

from __future__ import annotations

import argparse
import functools
import os
import sys

from poolnet_desktop import __version__
from poolnet_desktop.commands import devices, host, join, status, tasks
from poolnet_desktop.core.pool_url import PoolAddressError
from poolnet_desktop.logs import configure_logging
from poolnet_desktop.runtime.datadir import PRIVATE_UMASK, DataDirError
from poolnet_desktop.runtime.security.identity import IdentityError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolnet", description="Pool the computers on your LAN and run work on them.")
    parser.add_argument("--version", action="version", version=f"poolnet {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers.add_parser = functools.partial(subparsers.add_parser, parents=[common])  # type: ignore[method-assign]
    for module in (host, join, status, devices, tasks):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)  # the task store, inputs and keys are never world-readable
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # inside the try: a reader that left is seen here, not at exit
        return code
    except KeyboardInterrupt:  # a command stopped halfway (host and join end Ctrl-C themselves)
        return 130
    except (DataDirError, PoolAddressError, IdentityError) as exc:  # what the user gave or keeps
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`poolnet devices | head`): the rest has nowhere to go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
