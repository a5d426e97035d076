"""Every message is validated once, at the edge, with a stable error code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.protocol import (
    MAX_CONTROL_MESSAGE,
    ErrorCode,
    Heartbeat,
    Hello,
    ProtocolError,
    Register,
    ResourceUpdate,
    TaskSubmit,
    decode_client,
    decode_server,
    encode,
)


def test_seed_messages_decode_with_the_seeds_field_names() -> None:
    register = decode_client(b'{"type":"register","deviceId":"d","deviceName":"Desk","platform":"windows"}')
    assert register == Register(device_id="d", device_name="Desk", platform="windows")
    assert decode_client('{"type":"heartbeat","deviceId":"d"}') == Heartbeat(device_id="d")
    update = decode_client('{"type":"resource_update","deviceId":"d","resources":{"cpuCores":4,"hasGPU":true,"gpuName":"A"}}')
    assert isinstance(update, ResourceUpdate)
    assert update.resources.cpu_cores == 4 and update.resources.has_gpu and update.resources.gpus == 1
    assert update.resources.cpu_available == 100.0  # the seed's default for an omitted field
    submit = decode_client('{"type":"task_submit","task":{"id":"t","type":"command","submitterId":"d","requirements":{"cpu":50},"data":{"command":"ls","input":[1]}}}')
    assert isinstance(submit, TaskSubmit) and submit.task.data.command == "ls" and submit.task.requirements.cpu == 50


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode_client('{"type":"heartbeat","deviceId":"d","extra":1}') == Heartbeat(device_id="d")


@pytest.mark.parametrize(
    ("data", "code", "mentions"),
    [
        (b"{", ErrorCode.BAD_JSON, "malformed"),
        (b'{"type":"warp"}', ErrorCode.UNKNOWN_TYPE, "warp"),
        (b'{"type":"register"}', ErrorCode.BAD_MESSAGE, "deviceId"),
        (b'{"type":"register","deviceId":"' + b"x" * 200 + b'"}', ErrorCode.BAD_MESSAGE, "deviceId"),
        (b'{"type":"resource_update","resources":{"cpuUsage":101}}', ErrorCode.BAD_MESSAGE, "cpuUsage"),
        (b'{"type":"resource_update","resources":{"storageTotal":-1}}', ErrorCode.BAD_MESSAGE, "storageTotal"),
        (b'{"type":"hello","protocol":1,"role":"god","deviceId":"d"}', ErrorCode.BAD_MESSAGE, "role"),
    ],
)
def test_bad_input_raises_protocol_error_naming_the_field(data: bytes, code: str, mentions: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_client(data)
    assert raised.value.code == code
    assert mentions in raised.value.message


def test_oversized_messages_are_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_client(b" " * (MAX_CONTROL_MESSAGE + 1))
    assert raised.value.code == ErrorCode.TOO_LARGE


def test_encode_round_trips_through_the_server_decoder() -> None:
    from poolnet_desktop.core.protocol import Welcome

    welcome = Welcome(protocol=1, pool_id="p", pool_name="n", device_id="d", heartbeat_interval=5, resource_interval=2, heartbeat_timeout=30)
    assert json.loads(encode(welcome))["type"] == "welcome"
    assert decode_server(encode(welcome)) == welcome
    hello = Hello(protocol=1, role="member", device_id="d")
    assert decode_client(encode(hello)) == hello


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        decode_client(data)
    except ProtocolError as error:
        assert error.code in {ErrorCode.BAD_JSON, ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_TYPE}


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.floats() | st.text(max_size=10), max_size=5), st.sampled_from(["register", "heartbeat", "resource_update", "resource_request", "hello", "task_submit"]))
def test_arbitrary_objects_with_a_known_type_never_escape_validation(fields: dict, kind: str) -> None:
    try:
        decode_client(json.dumps({**fields, "type": kind}))
    except ProtocolError:
        pass
