"""What a pool's address may be, and its one spelling (``wss://HOST:PORT/ws``).

Pure: every way in (the command line, ``poolnet.Pool``, the window's address field) checks an
address here before anything connects, so a bad one is one clear line, not a failure from
deep in the connection.
"""

from __future__ import annotations

import urllib.parse

DEFAULT_PORT = 3000


class PoolAddressError(ValueError):
    """An address that cannot name a pool: a plain-text scheme, no host, or a bad port."""


def normalise_pool_url(url: str) -> str:
    """Accept ``host:port``, ``host`` (the default port), ``https://host:port`` or a full
    ``wss://host:port/ws``.

    Raises ``PoolAddressError`` for what no pool link could use, before anything connects
    (a port out of range used to surface as a traceback from deep in the connection). A pool
    link is TLS only, so ``ws://`` and ``http://`` are refused here as well."""
    given = url
    if "://" not in url:
        url = f"wss://{url}"
    scheme, rest = url.split("://", 1)
    scheme = {"https": "wss"}.get(scheme.lower(), scheme.lower())
    if "/" not in rest:
        rest += "/ws"
    url = f"{scheme}://{rest}"
    if scheme != "wss":
        raise PoolAddressError(
            f"{given!r} is not a pool address: pool links use TLS (wss://HOST:PORT/ws, or just HOST:PORT)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        (parts.hostname or "").encode("idna")  # an empty or over-long label: no name to look up
    except (ValueError, UnicodeError) as exc:
        raise PoolAddressError(f"{given!r} is not a pool address: {exc}") from None
    if (not parts.hostname or port == 0 or parts.netloc.endswith(":") or parts.query or parts.fragment
            or any(c.isspace() for c in given)):
        raise PoolAddressError(f"{given!r} is not a pool address: give HOST:PORT")
    if port is None and "://" not in given:  # a bare host: a pool's port, not HTTPS's
        url = parts._replace(netloc=f"{parts.netloc}:{DEFAULT_PORT}").geturl()
    return url
