"""Which pool a data folder hosts or joined, and the pool address commands default to.

The host writes ``hosting.json`` and the member ``membership.json``; the CLI's commands and
``poolnet.Pool`` mean that pool when none is named.
"""

from __future__ import annotations

import json
from pathlib import Path

from poolnet_desktop.core.pool_url import DEFAULT_PORT
from poolnet_desktop.runtime.security.identity import write_private_file


def read_pool_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_pool_file(path: Path, data: dict) -> None:
    write_private_file(path, json.dumps(data, indent=2).encode())


HOSTING_FILE = "hosting.json"


MEMBERSHIP_FILE = "membership.json"


def last_pool_url(data_dir: Path) -> str | None:
    """The pool this data folder's commands mean by default: the one it hosts while it does
    (on its real port), else the one it joined last; None if neither."""
    return _url_in(data_dir / HOSTING_FILE) or joined_pool_url(data_dir)


def joined_pool_url(data_dir: Path) -> str | None:
    """The pool this data folder's member joined last (None if it never joined one)."""
    return _url_in(data_dir / MEMBERSHIP_FILE)


def _url_in(path: Path) -> str | None:
    url = read_pool_file(path).get("url")
    return url if isinstance(url, str) and url else None


def default_pool_url(data_dir: Path) -> str:
    """The pool a command or ``poolnet.Pool`` means when none is named: the data folder's
    own (``last_pool_url``), else this machine's default port."""
    return last_pool_url(data_dir) or DEFAULT_POOL_URL


# Where a command looks for a pool when none is named and the data folder knows none.
DEFAULT_POOL_URL = f"wss://127.0.0.1:{DEFAULT_PORT}/ws"
