"""The one line each way of failing to talk to a pool gets, met for real where it can be."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS, describe_link_failure

HINT = "start one: poolnet host"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def failure_of(url: str, data_dir: Path) -> BaseException:
    try:
        await open_link(url, data_dir)
    except LINK_ERRORS as exc:
        return exc
    raise AssertionError(f"{url} linked")


async def test_nothing_listening_is_told_with_the_hint(tmp_path: Path) -> None:
    url = f"wss://127.0.0.1:{free_port()}/ws"
    exc = await failure_of(url, tmp_path)
    assert describe_link_failure(url, exc, HINT) == f"cannot reach the pool at {url}: nothing listens there ({HINT})"
    assert describe_link_failure(url, exc) == f"cannot reach the pool at {url}: nothing listens there"


def test_a_name_whose_every_address_refused_is_nothing_listening_too() -> None:
    """What asyncio raises for ``localhost`` when ``::1`` and ``127.0.0.1`` both refuse: one
    OSError without an errno (built here: this namespace has no ``::1``)."""
    both = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
                   "[Errno 111] Connect call failed ('127.0.0.1', 9)")
    assert describe_link_failure("wss://localhost:9/ws", both, HINT).endswith(f"nothing listens there ({HINT})")
    mixed = OSError("Multiple exceptions: [Errno 101] Connect call failed ('::1', 9, 0, 0), "
                    "[Errno 111] Connect call failed ('127.0.0.1', 9)")
    assert HINT not in describe_link_failure("wss://localhost:9/ws", mixed, HINT)


async def test_a_web_server_that_is_no_pool_is_named_by_its_answer(tmp_path: Path, pool) -> None:
    url = pool.local_url.replace("/ws", "/not-the-pool")
    exc = await failure_of(url, tmp_path)
    said = describe_link_failure(url, exc, HINT)
    assert said.startswith(f"no pool answers at {url}: the server there answered HTTP 404"), said


async def test_a_plain_text_server_is_not_taken_for_a_pool(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
    async with server:
        exc = await failure_of(url, tmp_path)
    assert isinstance(exc, ssl.SSLError)
    assert describe_link_failure(url, exc).startswith(f"no pool answers at {url}: the server there does not speak TLS")
