"""Every message of the pool's WebSocket protocol, defined once as a validated schema.

Two dialects share one endpoint (``/ws``), one JSON object per text frame:

* the seed system's (``register``, ``heartbeat``, ``resource_update``, ``resource_request``,
  ``task_submit``), served unchanged so that its clients join as they are;
* PoolNet's own, which opens with ``hello`` carrying ``protocol`` (the version) and a role, and
  is answered by ``welcome``. Members then get work; observers get ``pool_state`` batches.

``decode_client`` and ``decode_server`` turn bytes into typed messages or raise
``ProtocolError`` with a stable ``code`` and a message a person can act on. ``encode`` is the
only way out. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

from poolnet_desktop.core.devices import DeviceView, PoolTotals
from poolnet_desktop.core.permissions import Permission
from poolnet_desktop.core.resources import Requirements, Resources, ShortText
from poolnet_desktop.core.task_protocol import (
    AssignShards,
    CancelTask,
    FetchBlobs,
    FetchResults,
    ForgetTask,
    ListShards,
    ListTasks,
    ResultFiles,
    RetryTask,
    ShardAck,
    ShardCancel,
    ShardList,
    ShardOutput,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    SubmitTask,
    SubscribeTasks,
    TaskAccepted,
    TaskForgotten,
    TaskList,
    TasksChanged,
    TaskUpdate,
    WatchReady,
    WatchTask,
)
from poolnet_desktop.core.wire import (
    MAX_CONTROL_MESSAGE,
    PROTOCOL_VERSION,
    DeviceId,
    ErrorCode,
    Message,
    Name,
    Platform,
    ProtocolError,
    Role,
)

# Room for a file chunk's header on top of the largest control message.
MAX_FRAME = MAX_CONTROL_MESSAGE + 64 * 1024

__all__ = ["MAX_CONTROL_MESSAGE", "MAX_FRAME", "PROTOCOL_VERSION", "ErrorCode", "ProtocolError", "Message"]

# ---- seed dialect, client to server ---------------------------------------------------------


class Register(Message, tag="register"):
    device_id: DeviceId
    device_name: Name = ""
    platform: Platform = "unknown"


class Heartbeat(Message, tag="heartbeat"):
    device_id: DeviceId | None = None


class ResourceUpdate(Message, tag="resource_update"):
    """Both directions: a member's report, and the coordinator's (rate-limited) relay of it."""

    device_id: DeviceId | None = None
    resources: Resources = msgspec.field(default_factory=Resources)


class ResourceRequest(Message, tag="resource_request"):
    device_id: DeviceId | None = None
    requirements: Requirements = msgspec.field(default_factory=Requirements)


class SeedTaskData(msgspec.Struct, frozen=True):
    command: Annotated[str, msgspec.Meta(max_length=65536)] | list[str] | None = None
    input: Any = None


class SeedTask(msgspec.Struct, rename="camel", frozen=True):
    id: Annotated[str, msgspec.Meta(max_length=128)] = ""
    type: ShortText = "command"
    submitter_id: DeviceId | None = None
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    data: SeedTaskData = msgspec.field(default_factory=SeedTaskData)


class TaskSubmit(Message, tag="task_submit"):
    task: SeedTask


# ---- PoolNet dialect, client to server ------------------------------------------------------


class Hello(Message, tag="hello"):
    """Opens a PoolNet session. ``protocol`` is the client's version; ``software`` its build."""

    protocol: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    role: Role
    device_id: DeviceId
    device_name: Name = ""
    platform: Platform = "unknown"
    software: ShortText = ""
    accept_tasks: bool = True
    # How a member runs shards (``core.sandbox_state``): "bwrap", "none", "unsandboxed";
    # empty from members older than the sandbox.
    sandbox: Literal["", "bwrap", "none", "unsandboxed"] = ""
    # Authentication (runtime/security/auth.py): the raw Ed25519 key and a fresh 32-byte nonce, base64.
    public_key: Base64Text | None = None
    nonce: Base64Text | None = None


class SetAcceptTasks(Message, tag="set_accept_tasks"):
    """A member turns task acceptance on or off (its owner's preference, or in use/battery)."""

    accept: bool


class Forget(Message, tag="forget_device"):
    """An observer asks the coordinator to forget an offline device."""

    device_id: DeviceId


# ---- server to client -----------------------------------------------------------------------


class Devices(Message, tag="devices"):
    devices: list[DeviceView]


class DeviceJoined(Message, tag="device_joined"):
    device: DeviceView


class DeviceLeft(Message, tag="device_left"):
    device_id: DeviceId


class AllocatedDevice(msgspec.Struct, rename="camel"):
    device_id: str
    device_name: str
    allocated_cpu: float
    allocated_memory: float
    allocated_storage: float
    allocated_gpu: bool


class Allocation(msgspec.Struct, rename="camel"):
    id: str
    requesting_device: str
    timestamp: str
    requirements: Requirements
    fulfilled: bool
    allocated_devices: list[AllocatedDevice]


class ResourceAllocation(Message, tag="resource_allocation"):
    allocation: Allocation


class SeedTaskOutcome(msgspec.Struct, omit_defaults=True):
    success: bool
    result: Any = None
    error: str | None = None


class TaskResult(Message, tag="task_result"):
    task_id: str
    result: SeedTaskOutcome


class Error(Message, tag="error"):
    code: str
    message: str


class Welcome(Message, tag="welcome"):
    """The answer to ``hello``: the session is open. Intervals are in seconds."""

    protocol: int
    pool_id: str
    pool_name: str
    device_id: str
    heartbeat_interval: float
    resource_interval: float
    heartbeat_timeout: float


class PoolState(Message, tag="pool_state"):
    """A coalesced batch for observers: devices changed or removed since the last batch.

    ``full`` is true on the first batch of a session, which lists every known device. A batch
    too big for one frame is sent as parts, each with its own ``seq``: ``full`` is on the first
    part only, and ``more`` on every part but the last, so that a reader knows when a full
    snapshot is complete and only then drops the devices it did not list.
    """

    seq: int
    full: bool
    devices: list[DeviceView]
    removed: list[str]
    pool: PoolTotals
    tasks: dict[str, int] = msgspec.field(default_factory=dict)
    more: bool = False  # another part of this same batch follows


class ServerShutdown(Message, tag="server_shutdown"):
    """The coordinator is stopping on purpose; members should reconnect after a pause."""

    reason: str
    reconnect_after: float = 2.0


# ---- authentication ------------------------------------------------------------------------
# After ``hello`` (carrying ``publicKey`` and ``nonce``) the host sends ``challenge``; the member
# answers ``auth``; the host replies ``auth_ok`` and then ``welcome``, or ``auth_pending`` while
# a person decides, or ``error`` and a close. The exchange itself is in runtime/security/auth.py.

Base64Text = Annotated[str, msgspec.Meta(max_length=128)]


class Challenge(Message, tag="challenge"):
    """The host's fresh nonce for this connection, and the pool it speaks for."""

    nonce: Base64Text
    pool_id: Annotated[str, msgspec.Meta(max_length=128)]


class Auth(Message, tag="auth"):
    """The member's signature over the transcript; ``pake`` (its SPAKE2 message, which hides
    the code) when it pairs with a code."""

    signature: Base64Text
    pake: Base64Text | None = None


class PairingConfirm(Message, tag="pairing_confirm"):
    """The host's SPAKE2 message and its key confirmation: the host proves the code first."""

    pake: Base64Text
    confirmation: Base64Text


class PairingFinish(Message, tag="pairing_finish"):
    """The member's key confirmation, sent only after the host's checked out."""

    confirmation: Base64Text


class AuthPending(Message, tag="auth_pending"):
    """The host is asking a person to approve this device; wait up to ``timeout`` seconds."""

    message: ShortText
    timeout: float


class AuthOk(Message, tag="auth_ok"):
    """Authenticated (``method`` says how)."""

    device_id: str
    method: Literal["key", "code", "approval"]


# ---- pool administration (the host's own identity only) ----------------------------------------


class ApproveDevice(Message, tag="approve_device"):
    """Let a device waiting for approval in (``deny`` false) or turn it away (``deny`` true)."""

    device_id: DeviceId
    deny: bool = False


class RevokeDevice(Message, tag="revoke_device"):
    """Cut a device off at once and for good."""

    device_id: DeviceId
    reason: ShortText = ""


class SetPermissions(Message, tag="set_permissions"):
    """Grant (``allow`` true) or take away one permission of an approved device
    (``core.permissions``: member, observer, submit)."""

    device_id: DeviceId
    permission: Permission
    allow: bool


class ListAccess(Message, tag="list_access"):
    """Ask for approved, pending and revoked devices, the pairing code and the recent audit log."""


class NewPairingCode(Message, tag="new_pairing_code"):
    """Replace the pairing code with a fresh random one (the old one stops pairing at once)."""


class PairingCode(Message, tag="pairing_code"):
    """The answer to ``new_pairing_code``: the code now in force, as the host shows it."""

    code: str


class AccessEntry(msgspec.Struct, rename="camel"):
    device_id: str
    name: str = ""
    address: str = ""
    at: float = 0.0
    detail: str = ""
    permissions: list[str] = []


class AccessList(Message, tag="access_list"):
    pairing_code: str | None
    approved: list[AccessEntry]
    pending: list[AccessEntry]
    revoked: list[str]
    audit: list[AccessEntry]


class AccessChanged(Message, tag="access_changed"):
    """The answer to an administration request: what was done, in words."""

    device_id: str
    outcome: ShortText


ClientMessage = Union[
    Register,
    Heartbeat,
    ResourceUpdate,
    ResourceRequest,
    TaskSubmit,
    Hello,
    SetAcceptTasks,
    Forget,
    Auth,
    PairingFinish,
    ApproveDevice,
    RevokeDevice,
    ListAccess,
    SetPermissions,
    NewPairingCode,
    # tasks (core/task_protocol.py)
    SubmitTask,
    CancelTask,
    RetryTask,
    ListTasks,
    SubscribeTasks,
    ListShards,
    ForgetTask,
    WatchTask,
    FetchResults,
    ShardsReport,
    ShardStarted,
    ShardOutput,
    ShardsFinished,
    FetchBlobs,
]
ServerMessage = Union[
    Devices,
    DeviceJoined,
    DeviceLeft,
    ResourceUpdate,
    ResourceAllocation,
    TaskResult,
    Error,
    Welcome,
    PoolState,
    ServerShutdown,
    Challenge,
    PairingConfirm,
    AuthPending,
    AuthOk,
    AccessList,
    AccessChanged,
    PairingCode,
    # tasks (core/task_protocol.py)
    AssignShards,
    ShardCancel,
    ShardAck,
    TaskAccepted,
    TaskUpdate,
    TaskList,
    TasksChanged,
    ShardList,
    TaskForgotten,
    WatchReady,
    ResultFiles,
    ShardOutput,
]

_client_decoder = msgspec.json.Decoder(ClientMessage)
_server_decoder = msgspec.json.Decoder(ServerMessage)
_encoder = msgspec.json.Encoder()


def _decode(decoder: msgspec.json.Decoder, data: bytes | str) -> Any:
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message exceeds {MAX_CONTROL_MESSAGE} bytes")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.endswith("at `$.type`") and text.startswith("Invalid value"):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type: {text}") from None
        raise ProtocolError(ErrorCode.BAD_MESSAGE, text) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"malformed JSON: {exc}") from None


def decode_client(data: bytes | str) -> ClientMessage:
    """Parse and validate one message from a client, or raise ``ProtocolError``."""
    return _decode(_client_decoder, data)  # type: ignore[no-any-return]


def decode_server(data: bytes | str) -> ServerMessage:
    """Parse and validate one message from the coordinator, or raise ``ProtocolError``."""
    return _decode(_server_decoder, data)  # type: ignore[no-any-return]


def encode(message: msgspec.Struct) -> bytes:
    """Serialise a message (or any schema object) to JSON bytes; WebSocket text frames carry
    them as they are (``send(..., text=True)``), with no ``str`` made to be encoded back."""
    return _encoder.encode(message)
