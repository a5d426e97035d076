"""Why a conversation with a pool did not come about or broke off, in one line for a person.

Every command, ``poolnet.Pool`` and the window's member meet the same failures: nothing
listens at the address, a server there that is not a pool, a refusal, a pool that stops
answering. Before, each command said them its own way, and the task commands printed a
traceback for a server that was not a pool.
"""

from __future__ import annotations

import errno
import socket
import ssl

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from poolnet_desktop.core.protocol import ProtocolError
from poolnet_desktop.runtime.security.auth import AuthRefused
from poolnet_desktop.runtime.security.tls import InsecureConnection

# What may break a link to the pool, from the first connection to the last message.
LINK_ERRORS = (
    OSError, TimeoutError, ProtocolError, AuthRefused, InsecureConnection, InvalidHandshake, InvalidURI,
    ConnectionClosed,
)


def describe_link_failure(url: str, exc: BaseException, no_pool_hint: str = "") -> str:
    """One line on ``exc``, met talking to the pool at ``url``. ``no_pool_hint`` is added
    where nothing listens at the address (the command line says how to start a pool)."""
    if isinstance(exc, AuthRefused):
        return f"not connected to {url}: {exc.message}"
    if isinstance(exc, ProtocolError):
        return f"the pool at {url} refused: {exc.message}"
    if isinstance(exc, InsecureConnection):
        return f"not connected to {url}: {exc}"
    if isinstance(exc, InvalidStatus):
        return (f"no pool answers at {url}: the server there answered HTTP {exc.response.status_code}"
                " (a pool's address is HOST:PORT, or wss://HOST:PORT/ws)")
    if isinstance(exc, (InvalidHandshake, InvalidURI)):
        return f"no pool answers at {url}: {exc}"
    if isinstance(exc, ConnectionClosed):
        reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else ""
        return f"the pool at {url} closed the connection" + (f": {reason}" if reason else "")
    if isinstance(exc, TimeoutError):
        return f"the pool at {url} did not answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"no pool answers at {url}: the server there does not speak TLS as a pool does ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach the pool at {url}: its host name is not known ({exc.strerror})"
    if _refused(exc):
        return f"cannot reach the pool at {url}: nothing listens there" + (f" ({no_pool_hint})" if no_pool_hint else "")
    return f"cannot reach the pool at {url}: {exc}"


def _refused(exc: BaseException) -> bool:
    """Every address tried refused the connection. A name with several addresses
    (``localhost``: ``::1`` and ``127.0.0.1``) fails with one ``OSError`` listing them all,
    which carries no errno of its own."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    text = str(exc)
    tried = text.count("Connect call failed")
    return (type(exc) is OSError and text.startswith("Multiple exceptions:") and tried > 0
            and text.count(f"[Errno {errno.ECONNREFUSED}]") == tried)
