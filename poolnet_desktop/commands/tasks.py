"""``poolnet submit``, ``poolnet run``, ``poolnet tasks``, ``poolnet cancel``,
``poolnet retry``, ``poolnet logs`` and ``poolnet forget``.

Each opens one authenticated link to the pool (``runtime.client.link``) and talks through
``runtime.client.task_client``. ``submit --wait`` draws a progress bar (shards done of total, ETA) on
stderr, brings every output back to ``--results`` and exits 0 only if every shard succeeded.
``tasks --follow`` prints the list, then a line per task change the pool pushes.
``run -- CMD ARGS`` submits a one-off command the same way and prints its output as it comes.
``submit --wait`` and ``logs`` ride out a restart of the pool's host: they say the pool was
lost, reconnect with backoff, and go on (``TaskClient.resuming``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from poolnet_desktop.commands.options import (
    NO_POOL_HINT,
    CodeError,
    add_code_file,
    add_pool,
    pool_url,
    read_pairing_code,
    waiting_notice,
)
from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.log_lines import LineJoiner
from poolnet_desktop.core.manifest import ManifestError, inline_task
from poolnet_desktop.core.matrix import describe_values
from poolnet_desktop.core.output_replay import OutputReplay
from poolnet_desktop.core.task_protocol import ShardOutput, ShardSummary, TaskSummary
from poolnet_desktop.core.tasks import ShardState
from poolnet_desktop.runtime.client.env_resolve import ResolveOptions
from poolnet_desktop.runtime.client.link import PoolLink, open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS, describe_link_failure
from poolnet_desktop.runtime.client.task_client import LINK_LOST, TaskClient
from poolnet_desktop.runtime.client.task_files import LoadedTask, TaskFileError, for_platforms, load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.uv_tool import this_platform_target

BAR_WIDTH = 30
# Shards ``poolnet run`` names, with why, when its task did not succeed (``poolnet tasks ID``
# lists them all).
FAILURES_SHOWN = 10
# What a command's task argument may be.
TASK_ID_HELP = "(a task's ID, or its name: the newest task of that name)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    submit = subparsers.add_parser("submit", help="run a task file (NAME.pool.toml or a script)")
    submit.add_argument("file", help="a *.pool.toml manifest, a script, or a folder with one manifest")
    submit.add_argument("--wait", action="store_true", help="follow it to the end and fetch results")
    submit.add_argument("--results", default="results", help="where results go (default ./results)")
    submit.add_argument("--find-links", action="append", default=[], metavar="DIR", type=Path,
                        help="a folder of wheels for the task's requirements (besides uv's configured index)")
    submit.add_argument("--no-index", action="store_true",
                        help="take the task's requirements only from --find-links folders")
    submit.add_argument("--platform", action="append", dest="platforms", metavar="TARGET",
                        help="resolve the requirements for this platform too, as uv names it "
                             "(x86_64-manylinux_2_28, aarch64-apple-darwin, x86_64-pc-windows-msvc)")
    _common(submit, run_submit)

    run = subparsers.add_parser(
        "run", help="run a one-off command on the pool and print its output",
        usage="poolnet run [--shards N] [--url URL] -- CMD [ARGS...]",
        description="Run CMD on the pool (a program on the members' PATH; {python} is the "
        "member's Python, {shard} and {shards} the shard's number and count), wait for it and "
        "print its output. Ships no files. Exits 0 only if every shard succeeded.",
    )
    run.add_argument("--shards", type=int, default=1, help="how many shards (default 1)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the command and its arguments, after --")
    add_pool(run)
    add_code_file(run, "a file holding the pairing code, to pair anew with the pool at --url")
    run.set_defaults(run=run_inline)

    listing = subparsers.add_parser("tasks", help="list the pool's tasks, or one task's shards")
    listing.add_argument("task_id", nargs="?", metavar="ID",
                         help="show this task's shards: state, device and sweep values " + TASK_ID_HELP)
    listing.add_argument("--follow", action="store_true", help="then print each change as it happens")
    _common(listing, run_tasks)

    forget = subparsers.add_parser(
        "forget", help="delete an ended task from the pool: its records, logs and results"
    )
    forget.add_argument("task_id", metavar="ID", help=TASK_ID_HELP)
    _common(forget, run_forget)

    cancel = subparsers.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id", metavar="ID", help=TASK_ID_HELP)
    _common(cancel, run_cancel)

    retry = subparsers.add_parser(
        "retry", help="run a task's failed, timed-out, cancelled and lost shards again"
    )
    retry.add_argument("task_id", metavar="ID", help=TASK_ID_HELP)
    _common(retry, run_retry)

    logs = subparsers.add_parser("logs", help="print a task's output")
    logs.add_argument("task_id", metavar="ID", help=TASK_ID_HELP)
    logs.add_argument("--shard", type=int, help="only this shard")
    logs.add_argument("--follow", action="store_true", help="keep printing until the task ends")
    _common(logs, run_logs)


class TaskNameError(Exception):
    """A name given for a task that names several, where only one may be meant."""


async def _task_id(client: TaskClient, given: str, *, several: bool = True) -> str:
    """The ID of the task ``given`` stands for, among the tasks this client may list."""
    return _pick(await client.list(), given, several=several)


def _pick(tasks: Sequence[TaskSummary], given: str, *, several: bool = True) -> str:
    """The ID of the task ``given`` stands for: a task's ID as it is, else the newest task of
    that name (``poolnet logs sweep``; ``tasks`` come newest first). Where it cannot be undone
    (``forget``, ``cancel``) a name that several tasks share is refused (``TaskNameError``)
    unless ``several``. A name no task has is passed on: the pool answers it as an ID it does
    not know."""
    if any(task.id == given for task in tasks):
        return given
    named = [task for task in tasks if task.name == given]
    if len(named) > 1 and not several:
        ids = ", ".join(task.id for task in named[:3]) + (", ..." if len(named) > 3 else "")
        raise TaskNameError(f"{len(named)} tasks are named {given!r}: give the ID of one ({ids})")
    return named[0].id if named else given


def _common(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_pool(parser)
    add_code_file(parser, "a file holding the pairing code, to pair anew with the pool at --url")
    parser.set_defaults(run=run)


def _talk(args: argparse.Namespace, conversation: Callable[[TaskClient], Awaitable[int]]) -> int:
    """Open the link, run one conversation, and turn refusals into a message and exit 1."""

    url = pool_url(args)

    async def main(code: str | None) -> int:
        data_dir = resolve_data_dir(args.data_dir)
        notice = waiting_notice(data_dir)

        async def reopen() -> PoolLink:
            return await open_link(url, data_dir, on_pending=notice)  # paired by now: no code

        client = TaskClient(await open_link(url, data_dir, code=code, on_pending=notice), reopen)
        try:
            return await conversation(client)
        finally:
            with contextlib.suppress(*LINK_LOST):
                await client.link.close()

    try:
        return asyncio.run(main(read_pairing_code(args)))
    except CodeError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    except TaskNameError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
    except _ReaderGone:
        raise BrokenPipeError(errno.EPIPE, "the reader went away") from None  # main() ends quietly
    except LINK_ERRORS as exc:
        print(f"poolnet: {describe_link_failure(url, exc, NO_POOL_HINT)}", file=sys.stderr)
    return 1


def _riding_out(args: argparse.Namespace) -> dict[str, Callable[..., None]]:
    """What a command following a task says when it loses the pool and finds it again."""
    url = pool_url(args)

    def lost(reason: str) -> None:
        print(f"\npoolnet: lost the pool at {url} ({reason}); reconnecting… (Ctrl-C to stop)",
              file=sys.stderr, flush=True)

    def back() -> None:
        print(f"poolnet: reconnected to {url}", file=sys.stderr, flush=True)

    return {"on_lost": lost, "on_back": back}


def _print_json(value: Any) -> None:
    print(json.dumps(msgspec.to_builtins(value), indent=2))


def _resolve_options(args: argparse.Namespace) -> ResolveOptions:
    """Where the task's wheels come from, and the platforms to resolve for (this machine's
    always, and each ``--platform``; without one, ``for_platforms`` adds the pool's)."""
    own = this_platform_target()
    extra = tuple(args.platforms or ())
    targets = None if not extra else tuple(dict.fromkeys(((own,) if own else ()) + extra))
    return ResolveOptions(find_links=tuple(args.find_links), no_index=args.no_index, targets=targets)


def run_submit(args: argparse.Namespace) -> int:
    try:
        loaded = load_task(Path(args.file), _resolve_options(args))
    except TaskFileError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 1

    async def conversation(client: TaskClient) -> int:
        task = loaded
        if task.spec.environment is not None and not args.platforms:
            # Resolved for this machine (its manifest checked before any link); the members'
            # platforms are known now: each one this machine's wheels do not serve is added.
            members = await client.member_platforms()
            try:
                task = await asyncio.to_thread(for_platforms, loaded, _resolve_options(args), members)
            except TaskFileError as exc:
                print(f"poolnet: {exc}", file=sys.stderr)
                return 1
        task_id = await client.submit(task)
        if not args.wait:
            if args.json:
                _print_json({"taskId": task_id})
            else:
                print(task_id)
            return 0
        bar = ProgressBar(time.monotonic)

        async def follow(client: TaskClient) -> tuple[TaskSummary, Path]:
            summary = await client.wait(task_id, None if args.json else bar.draw)
            bar.close()
            return summary, await client.fetch_results(task_id, Path(args.results))

        try:
            summary, folder = await client.resuming(follow, **_riding_out(args))
        except asyncio.CancelledError:  # Ctrl-C: this stops waiting, not the task
            print(f"\npoolnet: stopped waiting; {task_id} goes on in the pool "
                  f"(poolnet cancel {task_id} stops it)", file=sys.stderr)
            raise
        if args.json:
            _print_json({"task": summary, "results": str(folder)})
        else:
            print(f"{task_id}: {summary.state}, {summary.succeeded}/{summary.total} shards "
                  f"succeeded; results in {folder}")
        return 0 if summary.succeeded == summary.total else 1

    return _talk(args, conversation)


def run_inline(args: argparse.Namespace) -> int:
    """``poolnet run -- CMD ARGS``: submit the command, print its output as it arrives (whole
    lines labelled ``[N]`` when there are several shards), then how it ended on stderr."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("poolnet: say what to run: poolnet run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        manifest = inline_task(argv, args.shards)
    except ManifestError as exc:
        print(f"poolnet: {exc}", file=sys.stderr)
        return 2
    loaded = LoadedTask(manifest.spec, Path(manifest.source), Path.cwd(), {})
    printer = OutputPrinter(labelled=args.shards > 1)

    async def conversation(client: TaskClient) -> int:
        task_id = await client.submit(loaded)
        try:
            summary = await client.logs(task_id, printer.show, follow=True)
        except asyncio.CancelledError:  # Ctrl-C: a command run in the foreground stops with it
            cancelled = False
            with contextlib.suppress(*LINK_ERRORS):
                async with asyncio.timeout(5):
                    await client.cancel(task_id)
                    cancelled = True
            print(f"\npoolnet: {task_id} " + ("cancelled" if cancelled else
                  f"may still run in the pool (poolnet cancel {task_id})"), file=sys.stderr)
            raise
        printer.finish()
        if summary.succeeded != summary.total:
            with contextlib.suppress(*LINK_ERRORS):  # the summary line below says enough then
                for line in render_failures(task_id, await client.shards(task_id)):
                    print(line, file=sys.stderr)
        print(f"{task_id}: {summary.state}, {summary.succeeded}/{summary.total} shards "
              "succeeded", file=sys.stderr)
        return 0 if summary.succeeded == summary.total else 1

    return _talk(args, conversation)


def run_tasks(args: argparse.Namespace) -> int:
    async def conversation(client: TaskClient) -> int:
        if args.task_id is not None:
            listed = await client.list()
            task_id = _pick(listed, args.task_id)
            found = [task for task in listed if task.id == task_id]
            if not found:
                print(f"poolnet: the pool has no task {args.task_id!r}", file=sys.stderr)
                return 1
            shards = await client.shards(task_id)
            if args.json:
                _print_json({"task": found[0], "shards": shards})
            else:
                print(render_shards(found[0], shards))
            return 0
        tasks = await (client.subscribe() if args.follow else client.list())
        if args.json:
            _print_json(tasks)
        else:
            _write("stdout", render_tasks(tasks) + "\n")
        if args.follow:
            async for change in client.changes():
                if args.json:
                    _write("stdout", json.dumps(msgspec.to_builtins(change)) + "\n")
                    continue
                for task in change.tasks:
                    _write("stdout", f"{task.id}  {task.state}  {task.done}/{task.total}\n")
                for task_id in change.removed:
                    _write("stdout", f"{task_id}  forgotten\n")
        return 0

    return _talk(args, conversation)


def run_forget(args: argparse.Namespace) -> int:
    async def conversation(client: TaskClient) -> int:
        task_id = await _task_id(client, args.task_id, several=False)
        await client.forget(task_id)
        print(f"{task_id}: forgotten")
        return 0

    return _talk(args, conversation)


def run_cancel(args: argparse.Namespace) -> int:
    return _change(args, TaskClient.cancel, several=False)


def run_retry(args: argparse.Namespace) -> int:
    return _change(args, TaskClient.retry, several=True)


def _change(
    args: argparse.Namespace, change: Callable[[TaskClient, str], Awaitable[TaskSummary]], several: bool
) -> int:
    """Cancel or retry: one request, then the task's state (``--json``: its summary)."""

    async def conversation(client: TaskClient) -> int:
        summary = await change(client, await _task_id(client, args.task_id, several=several))
        if args.json:
            _print_json(summary)
        else:
            print(f"{summary.id}: {summary.state}, {summary.queued} shards queued, "
                  f"{summary.succeeded}/{summary.total} succeeded")
        return 0

    return _talk(args, conversation)


class OutputPrinter:
    """Shard output on this terminal, stdout to stdout and stderr to stderr: one shard's as
    it was written, or (``labelled``) every shard's as whole lines, each labelled ``[N]`` with
    its shard (chunks of several shards interleave mid-line). A shard's next attempt (the
    last one failed, or its member was lost) is announced on stderr before its output."""

    def __init__(self, labelled: bool) -> None:
        self._labelled = labelled
        self._joiner = LineJoiner()
        self._attempts: dict[int, int] = {}
        self._mid_line = False  # unlabelled: the last text written ended without a newline

    def show(self, output: ShardOutput) -> None:
        shard, attempt = output.shard.shard, output.shard.attempt
        seen = self._attempts.setdefault(shard, attempt)
        if attempt > seen:
            self._attempts[shard] = attempt
            self._announce(shard, attempt)
        elif attempt < seen:  # a late chunk of an attempt already given up on
            return
        if not self._labelled:
            _write(output.stream, output.data)
            self._mid_line = not output.data.endswith("\n")
            return
        for line in self._joiner.feed(shard, output.stream, output.data):
            _write(line.stream, line.labelled())

    def _announce(self, shard: int, attempt: int) -> None:
        for line in self._joiner.rest(shard):
            _write(line.stream, line.labelled())
        _write("stderr", ("\n" if self._mid_line else "") + f"poolnet: shard {shard}, attempt {attempt}:\n")
        self._mid_line = False

    def finish(self) -> None:
        """Print what is left of unfinished lines."""
        for line in self._joiner.rest():
            _write(line.stream, line.labelled())


class _ReaderGone(Exception):
    """What this command prints has no reader any more (``poolnet logs ID | head``). A
    ``BrokenPipeError`` is an ``OSError``, which a conversation takes for the pool's link
    lost: it reconnected and said so."""


def _write(stream: str, text: str) -> None:
    """Print ``text`` now (a follower's lines must not wait in a buffer)."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        raise _ReaderGone from None


def run_logs(args: argparse.Namespace) -> int:
    """A task's output: one shard's, or every shard's as labelled lines (``OutputPrinter``).
    After a reconnect the pool replays the output from its start: what was shown is not
    shown again."""
    printer = OutputPrinter(labelled=args.shard is None)
    replay = OutputReplay()

    def show(output: ShardOutput) -> None:
        fresh = replay.new_part((output.shard, output.stream), output.data)
        if not fresh:
            return
        output = msgspec.structs.replace(output, data=fresh)
        if args.json:
            _write("stdout", json.dumps(msgspec.to_builtins(output)) + "\n")
        else:
            printer.show(output)

    task_id = args.task_id

    async def follow(client: TaskClient) -> None:
        replay.restart()
        await client.logs(task_id, show, shard=args.shard, follow=args.follow)

    async def conversation(client: TaskClient) -> int:
        nonlocal task_id
        task_id = await _task_id(client, args.task_id)
        await client.resuming(follow, **_riding_out(args))
        printer.finish()
        return 0

    return _talk(args, conversation)


def render_tasks(tasks: list[TaskSummary]) -> str:
    header = ("ID", "NAME", "STATE", "DONE", "RUNNING", "NOTE")
    rows = [header] + [
        (t.id, t.name, t.state, f"{t.done}/{t.total}", f"{t.running}" + (f" +{t.waiting} waiting" if t.waiting else ""),
         t.reason)
        for t in tasks
    ]
    return _table(rows)


def render_failures(task_id: str, shards: Sequence[ShardSummary]) -> list[str]:
    """A line for each shard that did not succeed (the first ``FAILURES_SHOWN``): how it
    ended and why, as its record says."""
    failed = [s for s in shards if s.state != ShardState.SUCCEEDED]
    lines = [
        printable(f"poolnet: shard {s.index} {s.state}" + (f" (attempt {s.attempt})" if s.attempt > 1 else "")
                   + (f": {s.reason}" if s.reason else ""))
        for s in failed[:FAILURES_SHOWN]
    ]
    if len(failed) > FAILURES_SHOWN:
        lines.append(f"poolnet: and {len(failed) - FAILURES_SHOWN} more (poolnet tasks {task_id})")
    return lines


def render_shards(task: TaskSummary, shards: Sequence[ShardSummary]) -> str:
    """One task's shards, one line each: state, device, attempt, for a sweep its values, and
    a note (a shard held ahead on a member is "waiting", and says on what, never "running").
    The pool shows them only to the task's submitter and its owner."""
    title = f"{task.id} ({task.name}): {task.state}, {task.done}/{task.total} done"
    header = ("SHARD", "STATE", "DEVICE", "ATTEMPT", "VALUES", "NOTE")
    rows = [header] + [
        (str(s.index), "waiting" if s.state == ShardState.ASSIGNED else s.state, s.device_id or "-",
         str(s.attempt), describe_values(s.values) if s.values else "-", s.reason)
        for s in shards
    ]
    return f"{printable(title)}\n{_table(rows)}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first a header) as left-aligned columns two spaces apart. Cells are shown
    printable: names and notes come from submitters and shards (a file name an output was
    refused for), and a control character in them would drive the reader's terminal."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


class ProgressBar:
    """``[#####.....] 12/20 shards  ETA 0:07`` redrawn in place on stderr."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._drawn = False

    def draw(self, summary: TaskSummary) -> None:
        done, total = summary.done, max(summary.total, 1)
        filled = BAR_WIDTH * done // total
        elapsed = self._clock() - self._start
        eta = "--:--" if done == 0 else _clock_text(elapsed * (total - done) / done)
        line = (f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{summary.total} shards"
                f"  {summary.running} running  ETA {eta} ")
        sys.stderr.write(line)
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
