"""Record a member's real handshake with a pool, or replay recorded frames as an eavesdropper would.

``record URL DATA_DIR FILE``: authenticate to the pool as the (already approved) identity kept in
DATA_DIR, as an observer; write the frames this side sent (hello, auth) and the challenge it got
to FILE; print {"event": "recorded", "method", "challenge"}.

``replay URL FILE``: on a fresh connection, send the recorded hello, read the host's challenge,
answer it with the recorded auth; print {"event": "replayed", "challenge", "answer", "close_code"}
with the host's reply to the old signature and how it closed the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from jsonio import emit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from poolnet_desktop import __version__
from poolnet_desktop.core.protocol import PROTOCOL_VERSION, Hello, Welcome, decode_server, encode
from poolnet_desktop.runtime.net.discovery import platform_name
from poolnet_desktop.runtime.security.auth import authenticate_to_host, member_hello
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import client_ssl_for_url
from poolnet_desktop.runtime.security.trust import PinnedHosts

TIMEOUT = 20.0


async def _connect(url: str) -> ClientConnection:
    return await connect(url, ssl=client_ssl_for_url(url), proxy=None, open_timeout=TIMEOUT, close_timeout=5)


def _text(frame: str | bytes) -> str:
    return frame if isinstance(frame, str) else frame.decode()


async def record(url: str, data_dir: Path, out: Path) -> None:
    identity = Identity.load_or_create(data_dir)
    connection = await _connect(url)
    sent: list[str] = []
    received: list[str] = []
    send, recv = connection.send, connection.recv

    async def recording_send(frame: Any, **kwargs: Any) -> None:
        sent.append(_text(frame))
        await send(frame, **kwargs)

    async def recording_recv(*args: Any, **kwargs: Any) -> Any:
        frame = await recv(*args, **kwargs)
        received.append(_text(frame))
        return frame

    connection.send = recording_send  # type: ignore[method-assign]
    connection.recv = recording_recv  # type: ignore[method-assign]
    try:
        hello = member_hello(identity, Hello(
            protocol=PROTOCOL_VERSION, role="observer", device_id=identity.device_id,
            device_name=socket.gethostname(), platform=platform_name(), software=f"poolnet {__version__}",
        ))  # fmt: skip
        await connection.send(encode(hello), text=True)
        pinned = PinnedHosts.load(data_dir / "pinned-hosts.json")
        host = await authenticate_to_host(connection, identity, hello, pinned, None, None, timeout=TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            while not isinstance(decode_server(await connection.recv()), Welcome):
                pass
    finally:
        await connection.close()
    challenge = json.loads(received[0])
    out.write_text(json.dumps({"sent": sent, "challenge": challenge}))
    emit("recorded", method=host.method, challenge=challenge, frames=len(sent))


async def replay(url: str, recorded: Path) -> None:
    frames = json.loads(recorded.read_text())["sent"]
    connection = await _connect(url)
    answer: dict[str, Any] | None = None
    try:
        await connection.send(frames[0])  # the old hello: same device, key and client nonce
        async with asyncio.timeout(TIMEOUT):
            challenge = json.loads(await connection.recv())
            await connection.send(frames[1])  # the old auth: a signature over the old challenge
            try:
                answer = json.loads(await connection.recv())
            except ConnectionClosed:
                pass
        # A host that refuses closes the link itself; one that let the replay in would not.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await connection.wait_closed()
    finally:
        await connection.close()
    emit("replayed", challenge=challenge, answer=answer, close_code=connection.close_code)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("url")
    rec.add_argument("data_dir", type=Path)
    rec.add_argument("file", type=Path)
    rep = sub.add_parser("replay")
    rep.add_argument("url")
    rep.add_argument("file", type=Path)
    args = parser.parse_args()
    if args.mode == "record":
        asyncio.run(record(args.url, args.data_dir, args.file))
    else:
        asyncio.run(replay(args.url, args.file))


main()
