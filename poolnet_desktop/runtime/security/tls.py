"""TLS for pool links: the host serves its self-signed certificate; members pin it.

There is no CA. A member accepts any certificate at the TLS layer and then decides for itself:
the fingerprint it saw goes into the signed handshake transcript (so a relay in the middle
fails), and once paired it must equal the pinned one (``trust.PinnedHosts``). A ``wss`` URL is
never retried as ``ws``; ``client_ssl_for_url`` refuses plain URLs outright.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Protocol
from urllib.parse import urlsplit

from poolnet_desktop.runtime.security.identity import Identity


class InsecureConnection(Exception):
    """A pool link that is, or would be, plain text."""


class _HasTransport(Protocol):
    @property
    def transport(self) -> object: ...


def server_ssl_context(identity: Identity) -> ssl.SSLContext:
    """The coordinator's context: its own certificate, TLS 1.3 only (every peer is PoolNet)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(identity.cert_path, identity.tls_key_path)
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """A member's context. It checks no CA or host name on purpose: the certificate is
    self-signed and is checked by fingerprint in the handshake (``runtime.security.auth``), which the
    caller must run before trusting anything the host says."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_ssl_for_url(url: str) -> ssl.SSLContext:
    """The context to connect to a pool URL; raises ``InsecureConnection`` for ``ws://``
    (or anything but ``wss://``), so no code path can fall back to plain text."""
    scheme = urlsplit(url).scheme.lower()
    if scheme != "wss":
        raise InsecureConnection(f"refusing {url!r}: pool links must use wss://, not {scheme or 'no scheme'}")
    return client_ssl_context()


def fingerprint(cert_der: bytes) -> str:
    """SHA-256 hex of a DER certificate: the form pinned and signed."""
    return hashlib.sha256(cert_der).hexdigest()


def peer_fingerprint(connection: _HasTransport) -> str:
    """Fingerprint of the certificate the other end presented on a websockets connection.

    Raises ``InsecureConnection`` when the connection is not TLS or no certificate came.
    """
    get_extra_info = getattr(connection.transport, "get_extra_info", None)
    ssl_object = get_extra_info("ssl_object") if get_extra_info else None
    if not isinstance(ssl_object, ssl.SSLObject):
        raise InsecureConnection("the connection is not encrypted")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise InsecureConnection("the peer presented no certificate")
    return fingerprint(der)
