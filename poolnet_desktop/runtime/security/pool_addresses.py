"""Which pool answered at each address, as this instance's command line has seen it.

A member remembers its pool in ``membership.json`` and refuses a host of another pool. The
command line talks to pools by address (``--url``), so it remembers the pool id per address
here: another host that comes up at a known address, even with a valid certificate of its own,
is refused rather than trusted on first use, unless the user pairs again with a code.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from poolnet_desktop.runtime.security.trust import read_string_map, write_string_map


def address_of(url: str) -> str:
    """``host:port`` of a normalised pool URL (``wss://host:port/ws``): what identifies the
    place, whatever path or scheme spelling was typed."""
    parts = urlsplit(url)
    return parts.netloc.lower()


class PoolAddresses:
    """``{address: pool id}``; small, written whole and atomically (call ``remember`` off the loop)."""

    VERSION = 1

    def __init__(self, path: Path, pools: dict[str, str]) -> None:
        self.path = path
        self._pools = pools

    @classmethod
    def load(cls, path: Path) -> PoolAddresses:
        """Read ``path`` (missing: nothing known). ``ValueError`` for a corrupt file rather than
        forgetting every address, which would reopen trust on first use."""
        return cls(Path(path), read_string_map(Path(path), "pools", "pool addresses file", "address: pool id"))

    def get(self, url: str) -> str | None:
        """The pool last seen at ``url``'s address, or None."""
        return self._pools.get(address_of(url))

    def remember(self, url: str, pool_id: str) -> None:
        """Record that ``pool_id`` answers at ``url``'s address (replacing what was there:
        the caller only does so after pairing with a code, or the first time)."""
        address = address_of(url)
        if self._pools.get(address) == pool_id:
            return
        self._pools[address] = pool_id
        write_string_map(self.path, "pools", self.VERSION, self._pools)
