"""The pool server's own WebSocket connection (``runtime.net.connection``): real sockets on loopback,
real websockets clients on the other end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from poolnet_desktop.runtime.host import session as session_module
from poolnet_desktop.runtime.host import task_requests as task_requests_module
from poolnet_desktop.runtime.host.session import Session
from poolnet_desktop.runtime.net.connection import PoolConnection


class Recorder:
    """A ``ConnectionOwner`` that accepts every WebSocket and takes messages only when asked."""

    def __init__(self) -> None:
        self.connections: list[PoolConnection] = []
        self.ready = 0
        self.gone: list[PoolConnection] = []

    def accepted(self, connection: PoolConnection) -> None:
        self.connections.append(connection)

    def answer(self, connection: PoolConnection, request: Request) -> Response | None:
        return None

    def opened(self, connection: PoolConnection) -> None:
        pass

    def message_ready(self, connection: PoolConnection) -> None:
        self.ready += 1

    def closed(self, connection: PoolConnection) -> None:
        self.gone.append(connection)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, int]]:
    owner = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: PoolConnection(owner, max_size=64 * 1024, max_queue=8, open_timeout=0.5, close_timeout=1), "127.0.0.1", 0
    )
    yield owner, server.sockets[0].getsockname()[1]
    server.close()
    await asyncio.gather(*(c.close() for c in owner.connections))


async def open_client(port: int) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=5, close_timeout=1)


async def peer_that_stopped_reading(owner: Recorder, port: int) -> tuple[ClientConnection, PoolConnection]:
    """A client whose first message the server has taken, and which now reads nothing."""
    client = await open_client(port)
    await client.send("hi")
    server_side = owner.connections[0]
    await server_side.recv()
    assert client.transport is not None
    client.transport.pause_reading()
    return client, server_side


async def test_messages_arrive_whole_and_in_order_even_in_fragments(served) -> None:
    owner, port = served
    async with await open_client(port) as client:
        await client.send("first")
        await client.send(["sec", "ond"])  # one message in three frames
        await client.send(b"\x00third")
        server_side = owner.connections[0]
        got = [await server_side.recv() for _ in range(3)]
    assert got == ["first", "second", b"\x00third"]


async def test_invalid_utf8_in_a_text_frame_closes_with_1007_and_nothing_after_it_is_taken(served) -> None:
    owner, port = served
    async with await open_client(port) as client:
        assert client.transport is not None
        frames = [Frame(Opcode.TEXT, b"\xff\xfe"), Frame(Opcode.TEXT, b'"after"')]
        client.transport.write(b"".join(f.serialize(mask=True) for f in frames))  # one read
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert owner.ready == 0 and owner.connections[0].recv_nowait() is None


async def test_a_peer_that_never_sends_its_request_is_cut_off(served) -> None:
    owner, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
    finally:
        writer.close()
    assert owner.gone == owner.connections


async def test_reading_pauses_while_messages_wait_and_resumes_when_taken(served) -> None:
    owner, port = served
    async with await open_client(port) as client:
        for n in range(20):
            await client.send(json.dumps({"n": n}))
        server_side = owner.connections[0]
        async with asyncio.timeout(5):
            while owner.ready < 9:  # past max_queue (8)
                await asyncio.sleep(0.01)
        assert server_side.transport is not None and not server_side.transport.is_reading()
        taken = []
        while len(taken) < 20:
            message = server_side.recv_nowait()
            if message is None:
                await asyncio.sleep(0.01)  # reading resumed: the rest is on its way
            else:
                taken.append(json.loads(message)["n"])
        assert taken == list(range(20))
        assert server_side.transport.is_reading()


async def test_send_waits_while_the_peer_does_not_read(served) -> None:
    owner, port = served
    client, server_side = await peer_that_stopped_reading(owner, port)
    async with client:
        assert client.transport is not None
        chunk = b"x" * 60_000

        async def send_many() -> None:
            for _ in range(200):  # 12 MB: far more than both sockets' buffers hold
                await server_side.send(chunk)

        sending = asyncio.ensure_future(send_many())
        await asyncio.sleep(0.5)
        assert not sending.done()
        assert server_side.pending_output() < 2_000_000  # waiting, not buffering it all
        client.transport.resume_reading()
        received = 0
        async with asyncio.timeout(10):
            while received < 200:
                assert await client.recv() == chunk
                received += 1
        await sending


async def test_close_ends_a_peer_that_hung_up_without_reading_its_output(served) -> None:
    """A peer that sends EOF and reads nothing more: its unread output would hold the socket
    open for good, so the close timeout (1 s here) cuts it off."""
    owner, port = served
    client, server_side = await peer_that_stopped_reading(owner, port)
    assert client.transport is not None
    for _ in range(400):  # 24 MB: more than both sockets' buffers hold
        server_side.post(b"x" * 60_000)
    client.transport.write_eof()
    async with asyncio.timeout(5):
        while server_side.protocol.state is not State.CLOSED:
            await asyncio.sleep(0.01)
        await server_side.close()
    assert server_side.closed and owner.gone == [server_side]
    client.transport.abort()


async def test_a_session_that_leaves_too_much_unread_is_closed_not_buffered(served, monkeypatch) -> None:
    """Whoever posts (batches, task updates, live output), a peer that stops reading is closed
    once its backlog passes the limit, instead of growing the host's memory without bound."""
    monkeypatch.setattr(session_module, "MAX_PENDING_OUTPUT", 1_000_000)
    owner, port = served
    client, server_side = await peer_that_stopped_reading(owner, port)
    assert client.transport is not None
    session = Session(server_side, "127.0.0.1")
    update = b'"' + b"x" * 60_000 + b'"'
    for _ in range(400):  # 24 MB offered; the sockets' buffers hold a few
        session.post(update)
        await asyncio.sleep(0)
    assert server_side.pending_output() < 1_000_000 + 2 * len(update)
    async with asyncio.timeout(5):  # the close frame waits behind the backlog: cut off at 1 s
        await server_side.wait_closed()
    assert owner.gone == [server_side]
    client.transport.abort()


async def test_ping_returns_with_the_pong_and_close_ends_both_sides(served) -> None:
    owner, port = served
    client = await open_client(port)
    await client.send("hi")
    server_side = owner.connections[0]
    await server_side.recv()
    await asyncio.wait_for(server_side.ping(), 5)
    await server_side.close(4000, "bye")
    assert server_side.closed and owner.gone == [server_side]
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    with pytest.raises(ConnectionClosed):
        await server_side.recv()


async def test_a_watcher_whose_history_is_still_being_sent_holds_at_most_the_limit(served, monkeypatch) -> None:
    """Live output held for a task watcher until its stored history is sent counts against
    the same limit as unread output: past it the watcher is closed, not buffered for ever."""
    monkeypatch.setattr(task_requests_module, "MAX_PENDING_OUTPUT", 1_000_000)
    owner, port = served
    client, server_side = await peer_that_stopped_reading(owner, port)
    assert client.transport is not None
    watcher = task_requests_module._Watcher(Session(server_side, "127.0.0.1"), None, backlog=[])
    chunk = b'"' + b"x" * 60_000 + b'"'
    for _ in range(400):  # a chatty task while the history is read: 24 MB offered
        watcher.post(chunk)
    assert watcher.held > 1_000_000 and watcher.backlog == []
    async with asyncio.timeout(5):
        await server_side.wait_closed()
    assert owner.gone == [server_side]
    client.transport.abort()
