"""core.auth with plain values: ids, transcripts, signatures, pairing codes and the PAKE."""

from __future__ import annotations

import base64
import os
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


def run_pake(member_code: str, host_code: str, *, host_fingerprint: str = "ab" * 32,
             member_fingerprint: str = "ab" * 32) -> tuple[auth.PairingKeys, auth.PairingKeys, bytes]:
    """One SPAKE2 run between a member and a host; returns (member's, host's) confirmations
    and the member's first message."""
    key = Ed25519PrivateKey.generate()
    transcript = transcript_for(key)
    member = auth.MemberPairing(member_code, pool_id="pool-1", server_fingerprint=member_fingerprint,
                                public_key=raw_public(key), random_bytes=os.urandom)
    host_message, host_keys = auth.host_pairing(
        host_code, member.message, transcript, pool_id="pool-1", server_fingerprint=host_fingerprint,
        public_key=raw_public(key), random_bytes=os.urandom,
    )
    assert len(member.message) == len(host_message) == auth.PAKE_MESSAGE_BYTES
    return member.finish(host_message, transcript), host_keys, member.message


def test_pake_agrees_on_the_same_code_however_it_was_typed() -> None:
    member_keys, host_keys, _ = run_pake("abcd efgh", "ABCD-EFGH")
    assert member_keys == host_keys
    assert len(host_keys.host) == len(host_keys.member) == auth.CONFIRMATION_BYTES
    assert host_keys.host != host_keys.member
    assert member_keys.host_matches(host_keys.host)
    assert host_keys.member_matches(member_keys.member)


def test_pake_disagrees_on_another_code_or_another_certificate() -> None:
    member_keys, host_keys, _ = run_pake("ABCD-EFGH", "ABCD-EFGJ")
    assert not member_keys.host_matches(host_keys.host)
    relayed_keys, host_keys, _ = run_pake("ABCD-EFGH", "ABCD-EFGH", member_fingerprint="cd" * 32)
    assert not relayed_keys.host_matches(host_keys.host)


def test_the_members_first_message_is_fresh_each_time() -> None:
    """Blinded by a random scalar: two runs with one code send unrelated points."""
    messages = {run_pake("ABCD-EFGH", "ABCD-EFGH")[2] for _ in range(3)}
    assert len(messages) == 3


def test_a_malformed_pake_message_is_a_value_error() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="malformed SPAKE2 message"):
        auth.host_pairing("ABCD-EFGH", b"B" + b"\xff" * 32, transcript_for(key), pool_id="pool-1",
                          server_fingerprint="ab" * 32, public_key=raw_public(key), random_bytes=os.urandom)


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
