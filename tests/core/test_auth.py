"""core.auth with plain values: ids, transcripts, signatures, pairing codes and proofs."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from poolnet_desktop.core import auth

NONCE_A = bytes(range(32))
NONCE_B = bytes(range(32, 64))


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def transcript_for(key: Ed25519PrivateKey, **overrides: object) -> bytes:
    public = raw_public(key)
    fields: dict[str, object] = dict(
        server_nonce=NONCE_A,
        client_nonce=NONCE_B,
        server_fingerprint="ab" * 32,
        pool_id="pool-1",
        device_id=auth.device_id_for(public),
        public_key=public,
    )
    fields.update(overrides)
    return auth.handshake_transcript(**fields)  # type: ignore[arg-type]


def test_device_id_is_derived_from_the_key_and_well_formed() -> None:
    key = Ed25519PrivateKey.generate()
    public = raw_public(key)
    device_id = auth.device_id_for(public)
    assert re.fullmatch(r"pn-[a-z2-7]{26}", device_id)
    assert auth.device_id_for(public) == device_id
    assert auth.device_id_for(raw_public(Ed25519PrivateKey.generate())) != device_id


def test_device_id_refuses_a_key_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        auth.device_id_for(b"short")


def test_every_field_changes_the_transcript() -> None:
    key = Ed25519PrivateKey.generate()
    base = transcript_for(key)
    variants = [
        transcript_for(key, server_nonce=NONCE_B),
        transcript_for(key, client_nonce=NONCE_A),
        transcript_for(key, server_fingerprint="cd" * 32),
        transcript_for(key, pool_id="pool-2"),
        transcript_for(key, device_id="pn-other"),
        transcript_for(key, public_key=raw_public(Ed25519PrivateKey.generate())),
    ]
    assert len({base, *variants}) == 7


def test_fields_cannot_bleed_into_each_other() -> None:
    key = Ed25519PrivateKey.generate()
    assert transcript_for(key, pool_id="ab", device_id="c") != transcript_for(key, pool_id="a", device_id="bc")


def test_transcript_refuses_short_nonces() -> None:
    with pytest.raises(ValueError, match="nonces"):
        transcript_for(Ed25519PrivateKey.generate(), server_nonce=b"\x00" * 8)


def test_signature_verifies_only_for_its_transcript_and_key() -> None:
    key = Ed25519PrivateKey.generate()
    transcript = transcript_for(key)
    signature = auth.sign_challenge(key, transcript)
    assert auth.verify_challenge(raw_public(key), transcript, signature)
    assert not auth.verify_challenge(raw_public(key), transcript_for(key, server_nonce=NONCE_B), signature)
    assert not auth.verify_challenge(raw_public(Ed25519PrivateKey.generate()), transcript, signature)
    assert not auth.verify_challenge(raw_public(key), transcript, signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not auth.verify_challenge(raw_public(key), transcript, signature[:10])
    assert not auth.verify_challenge(b"\x00" * 5, transcript, signature)


def test_a_raw_signature_of_the_transcript_is_not_accepted() -> None:
    # Domain separation: a signature the key made for some other purpose over the same bytes
    # does not count as a handshake signature.
    key = Ed25519PrivateKey.generate()
    transcript = transcript_for(key)
    assert not auth.verify_challenge(raw_public(key), transcript, key.sign(transcript))


def test_pairing_code_from_random_bytes() -> None:
    assert auth.make_pairing_code(b"\x00" * 5) == "00000000"
    assert auth.make_pairing_code(b"\xff" * 5) == "ZZZZZZZZ"
    assert auth.make_pairing_code(b"\x00\x00\x00\x00\x01") == "00000001"
    assert auth.make_pairing_code(b"\x80\x00\x00\x00\x00") == "G0000000"
    with pytest.raises(ValueError, match="5 random bytes"):
        auth.make_pairing_code(b"\x01\x02")


@settings(max_examples=200)
@given(st.binary(min_size=5, max_size=5))
def test_every_generated_code_is_canonical_and_unambiguous(random: bytes) -> None:
    code = auth.make_pairing_code(random)
    assert len(code) == 8
    assert auth.normalize_pairing_code(code) == code
    assert not set(code) & set("ILOU")
    assert auth.normalize_pairing_code(auth.format_pairing_code(code).lower()) == code


def test_normalize_forgives_what_people_type() -> None:
    assert auth.normalize_pairing_code(" abcd-efgh ") == "ABCDEFGH"
    assert auth.normalize_pairing_code("O0Il-2345") == "00112345"
    assert auth.format_pairing_code("abcdefgh") == "ABCD-EFGH"
    assert auth.format_pairing_code("abcdefghjk") == "ABCD-EFGH-JK"


@pytest.mark.parametrize(
    ("text", "message"),
    [("ABC", "6 to 32 characters"), ("A" * 33, "6 to 32 characters"), ("ABCD-EFGU", "not 'U'"), ("ABCD EF!H", "not '!'")],
)
def test_normalize_refuses_bad_codes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auth.normalize_pairing_code(text)


def test_pairing_proofs_depend_on_code_and_transcript_not_on_typing() -> None:
    key = Ed25519PrivateKey.generate()
    transcript = transcript_for(key)
    proofs = auth.pairing_proofs("ABCD-EFGH", transcript)
    assert len(proofs.member) == len(proofs.host) == auth.PROOF_BYTES
    assert proofs.member != proofs.host
    assert auth.pairing_proofs("abcdefgh", transcript) == proofs
    assert auth.pairing_proofs("ABCD-EFGJ", transcript).member != proofs.member
    assert auth.pairing_proofs("ABCD-EFGH", transcript_for(key, server_nonce=NONCE_B)).member != proofs.member
    assert proofs.member_matches(proofs.member)
    assert not proofs.member_matches(proofs.host)
    assert proofs.host_matches(proofs.host)
    assert not proofs.host_matches(b"\x00" * 32)


def test_base64_fields_are_checked_for_size_and_alphabet() -> None:
    assert auth.b64decode(auth.b64encode(NONCE_A), 32, "nonce") == NONCE_A
    with pytest.raises(ValueError, match="nonce must be 32 bytes, got 3"):
        auth.b64decode(base64.b64encode(b"abc").decode(), 32, "nonce")
    with pytest.raises(ValueError, match="not valid base64"):
        auth.b64decode("***", 32, "nonce")
    with pytest.raises(ValueError, match="not valid base64"):
        auth.b64decode("é", 32, "nonce")


def test_a_bearer_token_matches_only_exactly() -> None:
    from poolnet_desktop.core.auth import bearer_token_matches

    token = "k" * 43
    assert bearer_token_matches(f"Bearer {token}", token)
    assert bearer_token_matches(f"bearer {token}", token)
    assert not bearer_token_matches(f"Bearer {token[:-1]}", token)
    assert not bearer_token_matches(f"Basic {token}", token)
    assert not bearer_token_matches(None, token)
    assert not bearer_token_matches("Bearer ", "")
