"""What every message shares: the ``type`` tag, error codes and the error raised on bad input.

Kept apart from ``protocol`` so that message families defined in other modules (tasks) can
subclass ``Message`` while ``protocol`` assembles every family into one validated union.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PROTOCOL_VERSION = 1
# Control messages larger than this are refused (WebSocket close 1009); files travel in chunks.
MAX_CONTROL_MESSAGE = 1024 * 1024

DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(max_length=128)]
Platform = Annotated[str, msgspec.Meta(max_length=32)]
Role = Literal["member", "observer"]
# How every file is named on the wire (task inputs, outputs, chunk headers).
Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ErrorCode:
    """Stable codes carried by ``error`` messages; clients may branch on them."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    NOT_REGISTERED = "not_registered"
    ALREADY_REGISTERED = "already_registered"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    INVALID_TASK = "invalid_task"
    UNFIT = "unfit"
    AUTH_FAILED = "auth_failed"
    REVOKED = "revoked"
    APPROVAL_DENIED = "approval_denied"
    AUTH_TIMEOUT = "auth_timeout"
    HOST_MISMATCH = "host_mismatch"
    # Said by a member of itself: the host at its pool's address is not the pool it paired
    # with (another certificate or pool id). Retried, unlike a first pairing that failed.
    HOST_CHANGED = "host_changed"
    # The host could not write what the request needs (its disk is full, say); nothing was
    # wrong with the request, which may be sent again once the host has room.
    STORAGE_FAILED = "storage_failed"


class ProtocolError(Exception):
    """A message that cannot be accepted; ``code`` is one of ``ErrorCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StorageError(Exception):
    """The host's own records or files could not be written (a full disk, say). Not the
    peer's fault: the request that needed the write is answered ``storage_failed``, and the
    server goes on serving everyone else."""


class Message(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    """Base of every message: the ``type`` tag is the struct's ``tag``."""


def message_type(message: Message) -> str:
    """The ``type`` tag ``message`` is sent with: a string for every ``Message`` (msgspec types
    the tags of structs in general as ``str | int | None``)."""
    tag = message.__struct_config__.tag
    assert isinstance(tag, str)
    return tag
