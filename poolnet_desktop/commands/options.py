"""Options several subcommands share: the data folder and LAN discovery."""

from __future__ import annotations

import argparse

from poolnet_desktop.runtime.discovery import DiscoverySettings

DEFAULT_POOL = "wss://127.0.0.1:3000/ws"


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
