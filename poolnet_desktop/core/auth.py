"""Pure primitives of device authentication: ids, the signed transcript, pairing codes, the PAKE.

A member proves who it is by signing a *transcript* of the handshake with its Ed25519 key; a
member that is new to the pool may also pair with the code the host shows, each side learning
that the other knows it. The transcript binds everything an attacker could swap:

* the server's fresh nonce (an old handshake replayed later signs the wrong nonce),
* the member's nonce (the host's key confirmation cannot be replayed to another member),
* the fingerprint of the TLS certificate the member actually sees (a relay in the middle shows
  its own certificate, so the real host computes a different transcript and refuses),
* the pool id, the device id and its public key.

The code itself never crosses the wire: both sides run SPAKE2 with it (a password-authenticated
key exchange; the member's public key, the pool id and the certificate fingerprint are its
identities) and confirm the key they derived with HMACs over the transcript. The host confirms
first and the member only after checking it: a stranger posing as the member gets one online
guess per connection (and the host counts it before answering), a fake host gets one online
guess per connection too and nothing it could test further guesses against offline.

Nothing here does I/O or reads a clock; randomness comes from the caller (bytes, or a function
for the PAKE).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

NONCE_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
CONFIRMATION_BYTES = 32
PAKE_MESSAGE_BYTES = 33  # SPAKE2 on Ed25519: a side byte and a point
DEVICE_ID_PREFIX = "pn-"
DEVICE_ID_CHARS = 26  # 130 bits of a SHA-256: far beyond any collision search

# Crockford's base32: no I, L, O or U, so nothing is mistaken for 1, 0 or a rude word.
PAIRING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PAIRING_CODE_LENGTH = 8  # 40 bits, typed once as "ABCD-EFGH"
PAIRING_CODE_MIN = 6  # a code chosen by a script (``POOLNET_PAIRING_CODE``) may be longer, not shorter
PAIRING_CODE_MAX = 32
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})

_DOMAIN = b"poolnet/auth/v1"


def _label(name: bytes, data: bytes) -> bytes:
    """Domain separation: the same transcript never means two things under two uses."""
    return _DOMAIN + b"\x00" + name + b"\x00" + data


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as carried in messages."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, expected_len: int, what: str) -> bytes:
    """Decode base64 of exactly ``expected_len`` bytes, or raise ``ValueError`` naming ``what``."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(data) != expected_len:
        raise ValueError(f"{what} must be {expected_len} bytes, got {len(data)}")
    return data


def device_id_for(public_key: bytes) -> str:
    """The device id a public key owns: ``pn-`` and 26 base32 characters of its SHA-256.

    Only the holder of the matching private key can sign for it, so an id cannot be claimed
    by anyone else.
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    digest = hashlib.sha256(_label(b"device-id", public_key)).digest()
    return DEVICE_ID_PREFIX + base64.b32encode(digest).decode("ascii").lower()[:DEVICE_ID_CHARS]


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def handshake_transcript(
    *,
    server_nonce: bytes,
    client_nonce: bytes,
    server_fingerprint: str,
    pool_id: str,
    device_id: str,
    public_key: bytes,
) -> bytes:
    """The bytes both sides sign or MAC. Fields are length-prefixed, so none can bleed into
    another. ``server_fingerprint`` is the SHA-256 hex of the certificate the member saw."""
    if len(server_nonce) != NONCE_BYTES or len(client_nonce) != NONCE_BYTES:
        raise ValueError(f"nonces must be {NONCE_BYTES} bytes")
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {PUBLIC_KEY_BYTES} bytes")
    parts = (
        server_nonce,
        client_nonce,
        server_fingerprint.lower().encode("ascii"),
        pool_id.encode("utf-8"),
        device_id.encode("utf-8"),
        public_key,
    )
    return _label(b"transcript", b"".join(_field(p) for p in parts))


def sign_challenge(private_key: Ed25519PrivateKey, transcript: bytes) -> bytes:
    """The member's signature over the transcript (64 bytes)."""
    return private_key.sign(_label(b"member-signature", transcript))


def verify_challenge(public_key: bytes, transcript: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the holder of ``public_key`` signing this very transcript."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(signature, _label(b"member-signature", transcript))
    except (InvalidSignature, ValueError):
        return False
    return True


def make_pairing_code(random: bytes) -> str:
    """A fresh 8-character code from (at least) 5 random bytes, unbiased: 5 bits a character."""
    if len(random) < 5:
        raise ValueError("a pairing code needs 5 random bytes")
    value = int.from_bytes(random[:5], "big")
    chars = [PAIRING_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(PAIRING_CODE_LENGTH))]
    return "".join(chars)


def normalize_pairing_code(text: str) -> str:
    """The canonical form of a code as a person typed it: case, spaces and dashes ignored,
    O read as 0 and I or L as 1. Raises ``ValueError`` with what is wrong."""
    code = "".join(text.split()).replace("-", "").upper().translate(_CONFUSABLE)
    if not PAIRING_CODE_MIN <= len(code) <= PAIRING_CODE_MAX:
        raise ValueError(
            f"a pairing code has {PAIRING_CODE_MIN} to {PAIRING_CODE_MAX} characters, got {len(code)}"
        )
    bad = sorted({c for c in code if c not in PAIRING_ALPHABET})
    if bad:
        raise ValueError(f"a pairing code uses only {PAIRING_ALPHABET}; not {''.join(bad)!r}")
    return code


def format_pairing_code(code: str) -> str:
    """How the host shows a code: canonical, in groups of four (``ABCD-EFGH``)."""
    canonical = normalize_pairing_code(code)
    return "-".join(canonical[i : i + 4] for i in range(0, len(canonical), 4))


@dataclass(frozen=True)
class PairingKeys:
    """The two key confirmations one SPAKE2 run yields. The host sends ``host`` first; the
    member checks it and only then sends ``member``, so a fake host, which cannot produce
    ``host`` without the code, never receives a value it could test guesses against offline."""

    host: bytes
    member: bytes

    def host_matches(self, given: bytes) -> bool:
        return hmac.compare_digest(self.host, given)

    def member_matches(self, given: bytes) -> bool:
        return hmac.compare_digest(self.member, given)


def _pake_identities(pool_id: str, server_fingerprint: str, public_key: bytes) -> dict[str, bytes]:
    """SPAKE2's identities: the member by its public key, the host by its pool and the
    certificate the member saw. A relay showing its own certificate derives another key."""
    host = _field(pool_id.encode("utf-8")) + _field(server_fingerprint.lower().encode("ascii"))
    return {"idA": _label(b"pake-member", public_key), "idB": _label(b"pake-host", host)}


def _confirmations(key: bytes, transcript: bytes) -> PairingKeys:
    return PairingKeys(
        host=hmac.new(key, _label(b"host-confirm", transcript), hashlib.sha256).digest(),
        member=hmac.new(key, _label(b"member-confirm", transcript), hashlib.sha256).digest(),
    )


class MemberPairing:
    """The member's side of one SPAKE2 run (side A). ``message`` goes in ``auth``; it is a
    random point blinded by the code, so by itself it tells nothing about the code.

    Use once: a second ``finish`` would let a host probe the same secret twice.
    """

    def __init__(
        self, code: str, *, pool_id: str, server_fingerprint: str, public_key: bytes,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._spake = SPAKE2_A(
            normalize_pairing_code(code).encode("ascii"),
            entropy_f=random_bytes,
            **_pake_identities(pool_id, server_fingerprint, public_key),
        )
        self.message: bytes = self._spake.start()

    def finish(self, host_message: bytes, transcript: bytes) -> PairingKeys:
        """The confirmations, given the host's SPAKE2 message. ``ValueError`` if malformed."""
        try:
            key = self._spake.finish(host_message)
        except (SPAKEError, ValueError, AssertionError) as exc:
            raise ValueError(f"malformed SPAKE2 message: {exc}") from None
        return _confirmations(key, transcript)


def host_pairing(
    code: str, member_message: bytes, transcript: bytes, *, pool_id: str, server_fingerprint: str,
    public_key: bytes, random_bytes: Callable[[int], bytes],
) -> tuple[bytes, PairingKeys]:
    """The host's side (B) of one SPAKE2 run: its message for the member and the
    confirmations. ``ValueError`` for a malformed member message. A few milliseconds of
    curve arithmetic: the caller bounds how many run at once."""
    spake = SPAKE2_B(
        normalize_pairing_code(code).encode("ascii"),
        entropy_f=random_bytes,
        **_pake_identities(pool_id, server_fingerprint, public_key),
    )
    message = spake.start()
    try:
        key = spake.finish(member_message)
    except (SPAKEError, ValueError, AssertionError) as exc:
        raise ValueError(f"malformed SPAKE2 message: {exc}") from None
    return message, _confirmations(key, transcript)


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Does an HTTP ``Authorization`` header carry ``Bearer <token>``? Compared in constant
    time, so the answer's timing says nothing about how much of a guess was right."""
    if not authorization or not token:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
