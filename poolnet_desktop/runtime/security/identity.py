"""This instance's identity: an Ed25519 signing key, and an ECDSA key and certificate for TLS.

The device id derives from the signing key (``core.auth.device_id_for``), so nobody can claim
it without the key. The TLS certificate is self-signed; members trust it by pinning its
fingerprint, not through a CA. Everything lives in the data directory, written atomically with
mode 0600, and is reused on every start so ids and pins stay valid.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from poolnet_desktop.core.auth import b64encode, device_id_for, sign_challenge

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "identity.key"
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.crt"
CERT_VALIDITY_DAYS = 365 * 30  # pinned, never checked against a CA: it must simply outlive the pool


class IdentityError(Exception):
    """The identity files exist but cannot be used (corrupt, or key and certificate differ)."""


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600: a crash leaves the old file or the
    new one, never half of one, and no other user can read it even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _pem_private(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _self_signed(key: ec.EllipticCurvePrivateKey, device_id: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Identity:
    """Keys and certificate of one PoolNet instance. Build it with ``load_or_create``."""

    signing_key: Ed25519PrivateKey
    public_key: bytes  # raw 32 bytes of the Ed25519 public key
    device_id: str
    cert_der: bytes
    cert_fingerprint: str  # SHA-256 hex of ``cert_der``: what members pin
    cert_path: Path
    tls_key_path: Path

    @property
    def public_key_b64(self) -> str:
        """The public key as ``Hello.public_key`` carries it."""
        return b64encode(self.public_key)

    def sign(self, transcript: bytes) -> bytes:
        """Sign a handshake transcript (see ``core.auth.sign_challenge``)."""
        return sign_challenge(self.signing_key, transcript)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """Load this instance's identity from ``data_dir``, creating what is missing.

        A missing TLS key or certificate is made anew with a warning: members that pinned the
        old one will refuse this host until they pair again, which is the point of pinning.
        Raises ``IdentityError`` for files that exist but are unusable.
        """
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two processes sharing a data folder (the host and a `poolnet status` started beside
        # it) must not each create half an identity: creation happens under a file lock.
        with _exclusive(data_dir / ".identity.lock"):
            signing_key = _load_or_create_signing_key(data_dir / SIGNING_KEY_FILE)
            public_key = signing_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            device_id = device_id_for(public_key)
            cert_path, key_path = data_dir / TLS_CERT_FILE, data_dir / TLS_KEY_FILE
            cert = _load_or_create_tls(cert_path, key_path, device_id)
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            signing_key=signing_key,
            public_key=public_key,
            device_id=device_id,
            cert_der=der,
            cert_fingerprint=hashlib.sha256(der).hexdigest(),
            cert_path=cert_path,
            tls_key_path=key_path,
        )


def replace_identity(data_dir: Path) -> tuple[Identity, Identity]:
    """Make this instance a new identity: a new signing key (so a new device id) and a new TLS
    key and certificate (so a new fingerprint). For a host whose keys leaked: whoever holds
    the old files can no longer be this host or its owner. Returns (old, new).
    """
    data_dir = Path(data_dir)
    old = Identity.load_or_create(data_dir)
    with _exclusive(data_dir / ".identity.lock"):
        for name in (SIGNING_KEY_FILE, TLS_KEY_FILE, TLS_CERT_FILE):
            (data_dir / name).unlink(missing_ok=True)
    new = Identity.load_or_create(data_dir)
    log.warning("replaced this instance's identity: %s is now %s", old.device_id, new.device_id)
    return old, new


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (flock on POSIX, msvcrt on Windows)."""
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise IdentityError(f"{path}: not a readable private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path}: expected an Ed25519 key, found {type(key).__name__}")
        return key
    key = Ed25519PrivateKey.generate()
    write_private_file(path, _pem_private(key))
    log.info("created a new device identity in %s", path)
    return key


def _load_or_create_tls(cert_path: Path, key_path: Path, device_id: str) -> x509.Certificate:
    if cert_path.exists() and key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise IdentityError(f"{cert_path.parent}: unreadable TLS key or certificate ({exc})") from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise IdentityError(f"{cert_path} does not belong to {key_path}")
        return cert
    if cert_path.exists() or key_path.exists():
        log.warning("half of the TLS identity is missing in %s: making a new certificate; "
                    "paired members must pair again", cert_path.parent)
    new_key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(new_key, device_id)
    write_private_file(key_path, _pem_private(new_key))
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert
