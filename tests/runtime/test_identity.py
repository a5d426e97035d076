"""runtime.security.identity on real files: stable across restarts, private, and self-consistent."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poolnet_desktop.core.auth import device_id_for, handshake_transcript, verify_challenge
from poolnet_desktop.runtime.security.identity import (
    SIGNING_KEY_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    Identity,
    IdentityError,
    write_private_file,
)
from tests.conftest import posix_only


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only("POSIX file modes")
def test_identity_is_created_private_and_stable_across_reloads(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path / "data")
    second = Identity.load_or_create(tmp_path / "data")
    assert first.device_id == second.device_id
    assert first.public_key == second.public_key
    assert first.cert_fingerprint == second.cert_fingerprint
    for name in (SIGNING_KEY_FILE, TLS_KEY_FILE, TLS_CERT_FILE):
        assert mode(tmp_path / "data" / name) == 0o600, name
    assert mode(tmp_path / "data") == 0o700
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_two_data_dirs_are_two_devices(tmp_path: Path) -> None:
    a = Identity.load_or_create(tmp_path / "a")
    b = Identity.load_or_create(tmp_path / "b")
    assert a.device_id != b.device_id
    assert a.cert_fingerprint != b.cert_fingerprint


def test_device_id_and_fingerprint_derive_from_the_files(tmp_path: Path) -> None:
    identity = Identity.load_or_create(tmp_path)
    assert identity.device_id == device_id_for(identity.public_key)
    cert = x509.load_pem_x509_certificate((tmp_path / TLS_CERT_FILE).read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert identity.cert_der == der
    assert identity.cert_fingerprint == hashlib.sha256(der).hexdigest()
    assert cert.subject.rfc4514_string() == f"CN={identity.device_id}"


def test_identity_signs_handshakes_its_key_verifies(tmp_path: Path) -> None:
    identity = Identity.load_or_create(tmp_path)
    transcript = handshake_transcript(
        server_nonce=b"\x01" * 32,
        client_nonce=b"\x02" * 32,
        server_fingerprint="00" * 32,
        pool_id="p",
        device_id=identity.device_id,
        public_key=identity.public_key,
    )
    assert verify_challenge(identity.public_key, transcript, identity.sign(transcript))


def test_a_lost_certificate_is_remade_but_the_device_id_stays(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path)
    (tmp_path / TLS_CERT_FILE).unlink()
    second = Identity.load_or_create(tmp_path)
    assert second.device_id == first.device_id
    assert second.cert_fingerprint != first.cert_fingerprint


def test_a_corrupt_key_is_an_error_not_a_new_identity(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path)
    (tmp_path / SIGNING_KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(IdentityError, match="not a readable private key"):
        Identity.load_or_create(tmp_path)


def test_a_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path / "a")
    Identity.load_or_create(tmp_path / "b")
    (tmp_path / "a" / TLS_CERT_FILE).write_bytes((tmp_path / "b" / TLS_CERT_FILE).read_bytes())
    with pytest.raises(IdentityError, match="does not belong"):
        Identity.load_or_create(tmp_path / "a")


def test_a_signing_key_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path)
    (tmp_path / SIGNING_KEY_FILE).write_bytes((tmp_path / TLS_KEY_FILE).read_bytes())
    with pytest.raises(IdentityError, match="expected an Ed25519 key"):
        Identity.load_or_create(tmp_path)


@posix_only("POSIX file modes")
def test_write_private_file_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secret"
    write_private_file(target, b"one")
    target.chmod(0o644)
    write_private_file(target, b"two")
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret"]


def test_processes_creating_one_identity_at_once_agree(tmp_path: Path) -> None:
    """A host and a CLI started together on one data folder end with one whole identity."""
    import subprocess
    import sys

    program = (
        "import sys; from pathlib import Path; from poolnet_desktop.runtime.security.identity import Identity; "
        "print(Identity.load_or_create(Path(sys.argv[1])).device_id)"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", program, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ids = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(ids) == 1
    assert Identity.load_or_create(tmp_path).device_id in ids
