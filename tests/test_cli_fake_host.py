"""The ``poolnet`` command line against a fake host: a real TLS WebSocket server on 127.0.0.1
written as an attacker would, and the CLI as a real subprocess.

The attacker either comes up at an address where the CLI already knows another pool (to be
trusted on first use and receive the submitted task and its files), or answers absurd task ids
and result paths (to make ``submit --wait`` write outside its results folder).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.auth import b64encode
from poolnet_desktop.core.protocol import PROTOCOL_VERSION, AuthOk, Challenge, Hello, Welcome, decode_client, encode
from poolnet_desktop.core.transfer import chunk_headers, encode_chunk
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import server_ssl_context
from tests.test_cli import POOLNET, environment


@dataclass
class FakeHost:
    """What the fake host received from the CLI, and what it answers."""

    pool_id: str
    task_id: str = "evil-1"
    result_path: str = "0/out.txt"
    payload: bytes = b"ssh-ed25519 AAAA attacker\n"
    received: list[Any] = field(default_factory=list)

    async def handle(self, conn: ServerConnection) -> None:
        try:
            hello = decode_client(await conn.recv())
            assert isinstance(hello, Hello)
            await conn.send(encode(Challenge(nonce=b64encode(os.urandom(32)), pool_id=self.pool_id)), text=True)
            self.received.append(decode_client(await conn.recv()))  # auth: signed, no code
            await conn.send(encode(AuthOk(device_id=hello.device_id, method="approval")), text=True)
            await conn.send(encode(Welcome(
                protocol=PROTOCOL_VERSION, pool_id=self.pool_id, pool_name="totally the real pool",
                device_id=hello.device_id, heartbeat_interval=5, resource_interval=2, heartbeat_timeout=30,
            )), text=True)
            async for frame in conn:
                if isinstance(frame, bytes):
                    self.received.append(frame)
                    continue
                message = json.loads(frame)  # an attacker parses leniently: any task id goes
                self.received.append(message)
                await self.answer(conn, message)
        except ConnectionClosed:
            pass

    async def answer(self, conn: ServerConnection, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "submit_task":  # and ask for every input file
            await self.send(conn, {"type": "task_accepted", "requestId": message["requestId"],
                                   "taskId": self.task_id, "missing": [f["path"] for f in message["spec"]["files"]]})
        elif kind == "list_tasks":
            await self.send(conn, {"type": "task_list", "tasks": []})
        elif kind == "watch_task":
            await self.send(conn, {"type": "task_update", "task": {
                "id": self.task_id, "name": "x", "state": "succeeded", "total": 1, "done": 1, "succeeded": 1,
                "running": 0, "queued": 0, "submittedAt": 0.0}})
        elif kind == "fetch_results":
            sha = hashlib.sha256(self.payload).hexdigest()
            await self.send(conn, {"type": "result_files", "taskId": self.task_id,
                                   "files": [{"path": self.result_path, "size": len(self.payload), "sha256": sha}]})
            # chunk_headers refuses unsafe paths: make a header, then put the attacker's path in.
            for header in chunk_headers(self.task_id, "0/out.txt", len(self.payload), sha):
                await conn.send(encode_chunk(msgspec.structs.replace(header, path=self.result_path), self.payload))

    @staticmethod
    async def send(conn: ServerConnection, body: dict[str, Any]) -> None:
        await conn.send(json.dumps(body), text=True)


@asynccontextmanager
async def fake_host(identity_dir: Path, fake: FakeHost, port: int = 0) -> AsyncIterator[str]:
    identity = Identity.load_or_create(identity_dir)
    async with serve(fake.handle, "127.0.0.1", port, ssl=server_ssl_context(identity)) as server:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


async def poolnet(*args: str, home: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *POOLNET, *args, env=environment(home), cwd=home,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret-input.txt").write_text("the submitter's data\n")
    manifest = folder / "job.pool.toml"
    manifest.write_text('command = "cat secret-input.txt"\nshell = true\nfiles = ["secret-input.txt"]\n')
    return manifest


async def test_a_fake_host_at_a_known_address_with_another_pool_id_is_refused(tmp_path: Path) -> None:
    """Attack: the real host at 127.0.0.1:PORT goes away and the attacker's host comes up at
    the same address with its own certificate and pool id. ``poolnet tasks``, ``status`` and
    ``submit`` used to trust it on first use (the pool id was not checked) and hand it the
    task and its input files."""
    data_dir = resolve_data_dir(tmp_path / "host")
    real = PoolHost(HostOptions(data_dir=data_dir, bind="127.0.0.1", port=0,
                                discovery=DiscoverySettings(enabled=False)))
    await real.start()
    port = real.server.port
    url = f"wss://127.0.0.1:{port}/ws"
    try:
        code, _, err = await poolnet("tasks", "--url", url, "--data-dir", str(data_dir), home=tmp_path)
        assert code == 0, err
    finally:
        await real.stop()

    fake = FakeHost(pool_id="pool-of-the-attacker")
    manifest = write_task(tmp_path / "job")
    async with fake_host(tmp_path / "attacker", fake, port=port):
        for command in (["tasks", "--url", url], ["status", url], ["submit", str(manifest), "--url", url]):
            code, out, err = await poolnet(*command, "--data-dir", str(data_dir), home=tmp_path)
            assert code == 1, (command, out, err)
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            # Refused by the pin of the pool known at this address, before any pool check.
            assert err.startswith("poolnet: ") and "impostor" in err, err
    # The attacker never got past the challenge: no signature, no task, no file.
    assert fake.received == []


async def submit_to(fake: FakeHost, tmp_path: Path) -> tuple[int, str, str, Path]:
    manifest = write_task(tmp_path / "job")
    results = tmp_path / "results"
    async with fake_host(tmp_path / "attacker", fake) as url:
        code, out, err = await poolnet("submit", str(manifest), "--wait", "--results", str(results), "--url", url,
                                       "--data-dir", str(tmp_path / "submitter"), home=tmp_path)
    return code, out, err, results


async def test_a_fake_host_answering_an_absolute_task_id_writes_nothing_outside_results(tmp_path: Path) -> None:
    """Attack: the host answers the submitted task with an absolute path as its id, so that
    ``results/<id>/0/out.txt`` lands in the victim's ``.ssh``."""
    victim_ssh = tmp_path / "victim" / ".ssh"
    code, out, err, results = await submit_to(FakeHost(pool_id="pool-x", task_id=str(victim_ssh)), tmp_path)
    assert code == 1, (out, err)
    assert "Traceback" not in err and "is not a task id" in err, err
    assert not victim_ssh.exists()
    assert not results.exists() or not any(results.rglob("*"))


async def test_a_fake_host_answering_a_dotdot_task_id_or_result_path_is_refused(tmp_path: Path) -> None:
    """Attack: ``..`` in the task id, or a result file ``../../../victim/.ssh/authorized_keys``."""
    for fake in (FakeHost(pool_id="pool-x", task_id="../../victim"),
                 FakeHost(pool_id="pool-x", result_path="../../../victim/.ssh/authorized_keys")):
        work = tmp_path / f"attempt-{len(fake.task_id)}"
        code, out, err, results = await submit_to(fake, work)
        assert code == 1, (out, err)
        assert "Traceback" not in err and [line for line in err.splitlines() if "poolnet:" in line] == [
            err.strip().splitlines()[-1]], err
        assert not (work / "victim").exists()
        written = [p for p in work.rglob("*") if p.is_file() and p.name in ("authorized_keys", "out.txt")]
        assert written == [], written
