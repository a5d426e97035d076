"""Result files on their way from members to the coordinator: I/O state only.

A member announces a result with its output files (``shards_finished``), then sends them as
binary chunks. ``ResultIntake`` checks each announcement before a byte is written: a result
the records would not take (``Coordination.wants_result``: a duplicate, a stale attempt) has
its chunks dropped unread, and one whose files would break a cap
(``core.transfer.incoming_refusal``: the task's ``storage``, bytes in flight per member and in
all, the free disk) is recorded as failed. Accepted files land in ``incoming/TRANSFER`` and the
result is handed to ``record`` once they are all here; a transfer that fails or whose member
leaves is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from poolnet_desktop.core.coordination import Coordination, failed_result
from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.task_protocol import ShardRef, ShardResult, result_transfer_id
from poolnet_desktop.core.tasks import Task
from poolnet_desktop.core.transfer import (
    IncomingLimits,
    TransferError,
    incoming_refusal,
    output_allowance,
)
from poolnet_desktop.runtime.net.task_transfer import FileReceiver, expected_files

log = logging.getLogger(__name__)

# Record one attempt's result, with the folder its files arrived in (None: no files).
Record = Callable[[str, ShardRef, ShardResult, Path | None], Awaitable[None]]


class IntakeLimits(Protocol):
    """The caps read at each announcement (``TaskServiceConfig`` has them)."""

    max_file_size: int
    max_output_bytes: int
    incoming: IncomingLimits


@dataclass(slots=True)
class _IncomingResult:
    device_id: str
    ref: ShardRef
    result: ShardResult
    receiver: FileReceiver
    size: int  # the announced total, counted against the caps until it ends


class ResultIntake:
    """``folder``: where transfers land; ``results``: the folder whose disk they fill."""

    def __init__(self, core: Coordination, limits: IntakeLimits, folder: Path, results: Path,
                 record: Record, spawn: Callable[[Any], None]) -> None:
        self.core = core
        self.limits = limits
        self.folder = folder
        self.results = results
        self.record = record
        self.spawn = spawn
        self._incoming: dict[str, _IncomingResult] = {}
        # Per member (or submitter): result transfers it announced that were refused or
        # failed, and uploads the host could not store; their chunks still on the way are
        # dropped quietly, not counted as invalid messages.
        self._dropping: dict[str, set[str]] = {}

    async def announced(self, device_id: str, ref: ShardRef, result: ShardResult) -> None:
        """Record a result at once, or once its output files have arrived."""
        outputs = result.outputs
        transfer = result_transfer_id(ref.task_id, ref.shard, ref.attempt)
        previous = self._incoming.pop(transfer, None)
        if previous is not None:  # a resend after a reconnect replaces the half-received one
            await self._drop(previous)
        if not outputs:
            await self.record(device_id, ref, result, None)
            return
        if not self.core.wants_result(ref, result):
            self.drop_quietly(device_id, transfer)
            await self.record(device_id, ref, result, None)  # a duplicate or stale: acked
            return
        refusal = await self._refusal(device_id, self.core.tasks[ref.task_id], outputs)
        if refusal is not None:
            log.warning("refused the outputs of %s from %s: %s", ref, device_id, refusal)
            self.drop_quietly(device_id, transfer)
            await self.record(device_id, ref, failed_result(result, f"its outputs were refused: {refusal}"), None)
            return
        self._dropping.get(device_id, set()).discard(transfer)
        receiver = FileReceiver(
            transfer,
            self.folder / transfer,
            expected_files((f.path, f.size, f.sha256) for f in outputs),
            max_file_size=self.limits.max_file_size,
            max_transfer_size=self.limits.max_output_bytes,
        )
        size = sum(f.size for f in outputs)
        self._incoming[transfer] = _IncomingResult(device_id, ref, result, receiver, size)

    async def _refusal(self, device_id: str, task: Task, outputs: list[FileEntry]) -> str | None:
        """Why these announced outputs may not come in (``core.transfer.incoming_refusal``).
        The transfers in flight are counted after the one await, so that the caller opens
        this one before any other result is checked against the same counts."""
        usage = await asyncio.to_thread(shutil.disk_usage, self.results)
        member = sum(i.size for i in self._incoming.values() if i.device_id == device_id)
        total = sum(i.size for i in self._incoming.values())
        storage = task.spec.resources.storage_mb
        allowance = output_allowance(storage, self.limits.max_output_bytes)
        return incoming_refusal(sum(f.size for f in outputs), allowance, member, total,
                                usage.free, self.limits.incoming)

    async def chunk(self, device_id: str | None, header: Any, data: bytes) -> bool:
        """Take a chunk of a result transfer from this member; False if it is none of its
        transfers (a chunk of one refused or failed is dropped quietly: True)."""
        transfer = header.transfer_id
        incoming = self._incoming.get(transfer)
        if incoming is None or incoming.device_id != device_id:
            return transfer in self._dropping.get(device_id or "", ())
        try:
            await incoming.receiver.accept(header, data)
        except TransferError as exc:
            await self._fail(incoming, failed_result(incoming.result, f"its outputs were refused: {exc.message}"))
            return True
        except OSError as exc:  # the host's disk (full, say): this shard fails, nothing else
            log.warning("could not store the outputs of %s: %s", incoming.ref, exc)
            await self._fail(incoming, failed_result(incoming.result, unstored(exc)))
            return True
        if incoming.receiver.complete:
            del self._incoming[transfer]
            await self.record(incoming.device_id, incoming.ref, incoming.result,
                              incoming.receiver.target)
        return True

    async def _fail(self, incoming: _IncomingResult, failed: ShardResult) -> None:
        """Drop a transfer that cannot complete (its later chunks quietly too), delete what
        arrived of it, and record its attempt as failed."""
        transfer = incoming.receiver.transfer_id
        del self._incoming[transfer]
        self.drop_quietly(incoming.device_id, transfer)
        await self._drop(incoming)
        await self.record(incoming.device_id, incoming.ref, failed, None)

    def drop_quietly(self, device_id: str, transfer: str) -> None:
        """Chunks of ``transfer`` still on their way from ``device_id`` are dropped, not
        counted as invalid messages (a refused or failed result, an upload not stored)."""
        self._dropping.setdefault(device_id, set()).add(transfer)

    def member_left(self, device_id: str) -> None:
        """Delete what arrived of the member's transfers: it sends them again when it comes
        back, and they count if they are first."""
        self._dropping.pop(device_id, None)
        for transfer, incoming in list(self._incoming.items()):
            if incoming.device_id == device_id:
                del self._incoming[transfer]
                self.spawn(self._drop(incoming))

    async def _drop(self, incoming: _IncomingResult) -> None:
        """Delete whatever arrived of a result transfer that will not complete."""
        await incoming.receiver.discard()
        await asyncio.to_thread(shutil.rmtree, incoming.receiver.target, True)


def unstored(exc: OSError) -> str:
    """Why an attempt failed whose outputs the host could not keep (its disk full, say)."""
    return f"the host could not store its outputs: {exc.strerror or exc}"
