"""``poolnet submit/tasks/cancel/retry/logs`` against real ``poolnet host`` and ``poolnet join``
subprocesses, including a host killed with SIGKILL halfway through a batch."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.test_cli import POOLNET, environment, free_port, read_line_with

pytestmark = linux_only(SANDBOXED_SHARDS)

CODE = "TEST-CODE"


@dataclass
class Pool:
    port: int
    host_dir: Path
    home: Path
    processes: list[subprocess.Popen[str]]

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    def start_host(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*POOLNET, "host", "--port", str(self.port), "--bind", "127.0.0.1", "--no-discovery",
             "--no-member", "--legacy-port", str(free_port()), "--data-dir", str(self.host_dir)],
            env=environment(self.home, code=CODE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.processes.append(process)
        return process

    def join(self, name: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*POOLNET, "join", self.url, "--name", name, "--no-discovery",
             "--data-dir", str(self.home / name)],
            env=environment(self.home, code=CODE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.processes.append(process)
        return process

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A ``poolnet`` command as the host's owner (same data folder: trusted)."""
        return subprocess.run(
            [*POOLNET, *args, "--url", self.url, "--data-dir", str(self.host_dir)],
            env=environment(self.home), capture_output=True, text=True, timeout=timeout,
            cwd=self.home,
        )

    def tasks(self) -> list[dict]:
        result = self.run("tasks", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else []


def wait_until(condition, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """A host (coordinating only) and two members, all ``poolnet`` subprocesses."""
    home = tmp_path
    pool = Pool(free_port(), home / "host", home, [])
    host = pool.start_host()
    wait_until(lambda: pool.run("tasks", timeout=20).returncode == 0 or host.poll() is not None,
               "the host")
    assert host.poll() is None, host.communicate()
    pool.join("alpha")
    pool.join("beta")
    probe = write_manifest(home / "probe", "probe", 'command = ["true"]\nshards = 4\n')
    wait_until(lambda: pool.run("submit", str(probe)).returncode == 0, "members to take work")
    yield pool
    for process in pool.processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def write_manifest(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pool.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_submit_wait_brings_every_output_back_and_exits_zero(pool: Pool, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "echo", "echo", """
        command = "mkdir -p out && echo shard-{shard}-of-{shards} > out/r.txt && cat in.txt"
        shell = true
        shards = 6
        files = ["in.txt"]
        outputs = ["out/*.txt"]
    """)
    (tmp_path / "echo" / "in.txt").write_text("input bytes\n")
    result = pool.run("submit", str(manifest), "--wait", "--results", str(tmp_path / "res"))
    assert result.returncode == 0, result.stderr
    assert "6/6 shards" in result.stderr  # the progress bar's last state
    task_id = result.stdout.split(":")[0]
    assert f"results in {tmp_path / 'res' / task_id}" in result.stdout
    for shard in range(6):
        text = (tmp_path / "res" / task_id / str(shard) / "out" / "r.txt").read_text()
        assert text == f"shard-{shard}-of-6\n"
    logs = pool.run("logs", task_id, "--shard", "3")
    assert logs.stdout == "input bytes\n"
    listed = {t["id"]: t for t in pool.tasks()}
    assert listed[task_id]["state"] == "succeeded"


def test_failing_shards_make_submit_wait_exit_nonzero_and_retry_runs_them_again(
    pool: Pool, tmp_path: Path, visible_to_shards: Path
) -> None:
    fixed = visible_to_shards / "fixed"  # shards see their own /tmp, not the test's
    manifest = write_manifest(tmp_path / "bad", "bad", f"""
        command = "test $((POOLNET_SHARD % 2)) = 0 || test -e {fixed}"
        shell = true
        shards = 4
        retries = 0
    """)
    result = pool.run("submit", str(manifest), "--wait", "--json", "--results", str(tmp_path / "r"))
    assert result.returncode == 1
    summary = json.loads(result.stdout)["task"]
    assert (summary["state"], summary["succeeded"], summary["total"]) == ("failed", 2, 4)

    fixed.touch()  # what made shards 1 and 3 fail is fixed: run them again
    retried = pool.run("retry", summary["id"])
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"{summary['id']}: ")
    wait_until(lambda: any(t["id"] == summary["id"] and t["state"] == "succeeded"
                           for t in pool.tasks()), "the retried shards")
    with sqlite3.connect(pool.host_dir / "tasks" / "tasks.sqlite3") as db:
        rows = db.execute("SELECT idx, attempt, reported FROM shards WHERE task_id = ? ORDER BY idx",
                          (summary["id"],)).fetchall()
    assert [(idx, attempt, json.loads(reported)) for idx, attempt, reported in rows] == [
        (0, 1, [1]), (1, 2, [1, 2]), (2, 1, [1]), (3, 2, [1, 2]),
    ]
    unknown = pool.run("retry", "no-such-task")
    assert unknown.returncode == 1 and "no task 'no-such-task'" in unknown.stderr


def test_a_broken_manifest_is_refused_clearly_and_nothing_is_queued(
    pool: Pool, tmp_path: Path
) -> None:
    before = len(pool.tasks())
    manifest = write_manifest(tmp_path / "broken", "broken", """
        command = ["true"]
        shards = "many"
    """)
    result = pool.run("submit", str(manifest))
    assert result.returncode == 1
    assert "broken.pool.toml: key 'shards': must be a whole number" in result.stderr
    huge = write_manifest(tmp_path / "huge", "huge", """
        command = ["true"]
        [resources]
        cpu = 4096
    """)
    result = pool.run("submit", str(huge))
    assert result.returncode == 1
    assert "refused" in result.stderr and "more than any member shares" in result.stderr
    assert len(pool.tasks()) == before


def test_the_host_killed_mid_batch_resumes_and_every_result_is_recorded_once(
    pool: Pool, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "batch", "batch", """
        command = "sleep 0.25 && mkdir -p out && echo {shard} > out/n.txt"
        shell = true
        shards = 24
        outputs = ["out/n.txt"]
        [resources]
        cpu = 1
    """)
    submitted = pool.run("submit", str(manifest))
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()

    def done() -> int:
        return next((t["done"] for t in pool.tasks() if t["id"] == task_id), 0)

    wait_until(lambda: done() >= 4, "a few shards to finish")
    host = pool.processes[0]
    host.send_signal(signal.SIGKILL)
    host.communicate()
    pool.start_host()
    wait_until(lambda: any(t["id"] == task_id and t["state"] == "succeeded" for t in pool.tasks()),
               "the batch to complete after the restart", timeout=90)

    fetched = pool.run("submit", str(write_manifest(tmp_path / "noop", "noop", 'command=["true"]')))
    assert fetched.returncode == 0
    with sqlite3.connect(pool.host_dir / "tasks" / "tasks.sqlite3") as db:
        rows = db.execute(
            "SELECT idx, state, reported FROM shards WHERE task_id = ? ORDER BY idx", (task_id,)
        ).fetchall()
    assert [r[0] for r in rows] == list(range(24))
    assert {r[1] for r in rows} == {"succeeded"}
    assert all(len(json.loads(r[2])) == 1 for r in rows), rows  # one recorded attempt each
    results = pool.host_dir / "tasks" / "results" / task_id
    for shard in range(24):
        assert (results / str(shard) / "out" / "n.txt").read_text() == f"{shard}\n"


def test_a_second_poolnet_on_a_members_data_folder_is_refused_and_leaves_the_first_running(
    pool: Pool, tmp_path: Path
) -> None:
    """Two instances on one data folder used to displace each other, and the second wiped the
    first's work folder under its running shards."""
    manifest = write_manifest(tmp_path / "long", "long", 'command = ["sleep", "60"]\nshards = 2\n')
    task_id = pool.run("submit", str(manifest)).stdout.strip()
    # Both shards on members: running, or held on a member behind the other (the scheduler's choice).
    wait_until(lambda: any(t["id"] == task_id and t["running"] >= 1 and t["running"] + t["waiting"] == 2
                           for t in pool.tasks()), "both shards placed")
    members = {name: next(p for p in pool.processes if name in p.args) for name in ("alpha", "beta")}
    name, first = next((n, p) for n, p in members.items() if psutil.Process(p.pid).children(recursive=True))
    sleepers = [c for c in psutil.Process(first.pid).children(recursive=True) if c.name() == "sleep"]
    assert sleepers

    second = subprocess.run(
        [*POOLNET, "join", pool.url, "--no-discovery", "--data-dir", str(pool.home / name)],
        env=environment(pool.home), capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == 1
    assert f"poolnet join (process {first.pid}) is already sharing this computer" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None and all(s.is_running() for s in sleepers)
    assert [t["running"] + t["waiting"] for t in pool.tasks() if t["id"] == task_id] == [2]
    pool.run("cancel", task_id)


def test_logs_of_several_shards_come_as_whole_lines_labelled_by_shard(pool: Pool, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "halves", "halves", """
        command = "printf 'start-{shard} '; sleep 0.3; printf 'end-{shard}\\\\nno newline'"
        shell = true
        shards = 3
    """)
    result = pool.run("submit", str(manifest), "--wait")
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.split(":")[0]
    logs = pool.run("logs", task_id)
    assert sorted(logs.stdout.splitlines()) == sorted(
        [f"[{n}] start-{n} end-{n}" for n in range(3)] + [f"[{n}] no newline" for n in range(3)]
    )
    assert pool.run("logs", task_id, "--shard", "1").stdout == "start-1 end-1\nno newline"


def test_a_task_may_be_given_by_its_name_and_its_newest_namesake_is_meant(pool: Pool, tmp_path: Path) -> None:
    """``poolnet logs sweep`` answered "no task 'sweep'": only IDs were taken. What cannot be
    undone is refused a name that several tasks share."""
    ids = []
    for word in ("first", "second"):
        manifest = write_manifest(tmp_path / "named", "named", f'command = ["echo", "{word}"]\nshards = 1\n')
        result = pool.run("submit", str(manifest), "--wait")
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.split(":")[0])
    first, second = ids
    assert pool.run("logs", "named").stdout == "[0] second\n"
    assert pool.run("tasks", "named").stdout.startswith(f"{second} (named): succeeded")
    refused = pool.run("forget", "named")
    assert refused.returncode == 1
    assert refused.stderr == f"poolnet: 2 tasks are named 'named': give the ID of one ({second}, {first})\n"
    assert pool.run("forget", first).returncode == 0
    assert pool.run("forget", "named").stdout == f"{second}: forgotten\n"
    unknown = pool.run("logs", "named")
    assert unknown.returncode == 1 and "no task 'named'" in unknown.stderr


def test_logs_read_by_a_reader_that_leaves_end_quietly(pool: Pool, tmp_path: Path) -> None:
    """``poolnet logs ID | head``: the closed pipe was taken for the pool's link lost, so it
    said "lost the pool ... Broken pipe; reconnecting" and fetched the logs again."""
    manifest = write_manifest(tmp_path / "long", "long", 'command = ["seq", "1", "100000"]\nshards = 1\n')
    result = pool.run("submit", str(manifest), "--wait")
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.split(":")[0]
    reading = subprocess.Popen([*POOLNET, "logs", task_id, "--url", pool.url, "--data-dir", str(pool.host_dir)],
                               env=environment(pool.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=pool.home)
    assert reading.stdout is not None and reading.stderr is not None
    assert reading.stdout.readline() == "[0] 1\n"
    reading.stdout.close()  # as head does once it has its lines
    with reading.stderr:
        assert reading.wait(timeout=30) == 1
        assert reading.stderr.read() == ""


def test_tasks_follow_prints_pushed_changes_and_forget_deletes_a_task(pool: Pool, tmp_path: Path) -> None:
    follow = subprocess.Popen(
        [*POOLNET, "tasks", "--follow", "--url", pool.url, "--data-dir", str(pool.host_dir)],
        env=environment(pool.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pool.processes.append(follow)
    assert follow.stdout is not None
    assert follow.stdout.readline().startswith("ID")  # the list as of now comes first
    manifest = write_manifest(tmp_path / "twice", "twice", 'command = ["true"]\nshards = 2\n')
    result = pool.run("submit", str(manifest), "--wait", "--results", str(tmp_path / "res"))
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.split(":")[0]
    seen: list[str] = []
    while f"{task_id}  succeeded  2/2" not in seen:
        seen.append(follow.stdout.readline().strip())  # a line per change the pool pushed

    running = pool.run("submit", str(write_manifest(tmp_path / "slow", "slow", 'command = ["sleep", "60"]\n')))
    refused = pool.run("forget", running.stdout.strip())
    assert refused.returncode == 1 and refused.stderr.strip().endswith("has not ended: cancel it first")
    forgotten = pool.run("forget", task_id)
    assert forgotten.returncode == 0 and forgotten.stdout == f"{task_id}: forgotten\n"
    while f"{task_id}  forgotten" not in seen:
        seen.append(follow.stdout.readline().strip())
    assert task_id not in {t["id"] for t in pool.tasks()}
    again = pool.run("forget", task_id)
    assert again.returncode == 1 and f"no task '{task_id}'" in again.stderr and "Traceback" not in again.stderr
    follow.terminate()


def online_members(pool: Pool) -> int:
    result = pool.run("status", "--json", timeout=20)
    if result.returncode != 0:
        return 0
    return sum(1 for d in json.loads(result.stdout)["devices"] if d["isOnline"] and d["resources"]["cpuCores"] > 0)


def test_submit_wait_and_logs_follow_ride_out_a_host_restart(
    pool: Pool, tmp_path: Path, visible_to_shards: Path
) -> None:
    """The host is killed while shards wait on a file the test writes after its restart:
    ``submit --wait`` and ``logs --follow`` (which traced back before) reconnect, the results
    come back, and no log line is shown twice."""
    go = visible_to_shards / "go"
    manifest = write_manifest(tmp_path / "held", "held", f"""
        command = "echo before-{{shard}}; while [ ! -e {go} ]; do sleep 0.1; done; mkdir -p out; echo {{shard}} > out/n.txt; echo after-{{shard}}"
        shell = true
        shards = 2
        outputs = ["out/n.txt"]
        [resources]
        cpu = 0.25
    """)
    as_owner = ["--url", pool.url, "--data-dir", str(pool.host_dir)]
    submitted = pool.run("submit", str(manifest))
    assert submitted.returncode == 0, submitted.stderr
    logged_id = submitted.stdout.strip()
    following = subprocess.Popen([*POOLNET, "logs", logged_id, "--follow", *as_owner],
                                 env=environment(pool.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pool.processes.append(following)
    waiting = subprocess.Popen(
        [*POOLNET, "submit", str(manifest), "--wait", "--results", str(tmp_path / "res"), *as_owner],
        env=environment(pool.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=pool.home,
    )
    pool.processes.append(waiting)
    first_line = read_line_with(following, "stdout", "before-")
    wait_until(lambda: sum(t["running"] for t in pool.tasks()) == 4, "both tasks' shards to run")

    host = pool.processes[0]
    host.send_signal(signal.SIGKILL)
    host.communicate()
    pool.start_host()
    wait_until(lambda: online_members(pool) == 2, "the members back in the restarted pool", timeout=90)
    go.write_text("")

    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "lost the pool" in err and "reconnected" in err and "Traceback" not in err
    task_id = out.split(":")[0]
    for shard in range(2):
        assert (tmp_path / "res" / task_id / str(shard) / "out" / "n.txt").read_text() == f"{shard}\n"

    following.wait(timeout=120)  # then read through the pipe's buffer, which read_line_with filled
    out, err = following.stdout.read(), following.stderr.read()
    assert following.returncode == 0, err
    assert "reconnected" in err and "Traceback" not in err
    lines = [first_line.rstrip("\n"), *out.splitlines()]
    assert sorted(lines) == ["[0] after-0", "[0] before-0", "[1] after-1", "[1] before-1"], (lines, err)


def test_what_submitters_and_shards_named_cannot_drive_the_owners_terminal() -> None:
    """A task's name and a shard's note (a file name an output was refused for) come from the
    submitter's code; ``poolnet tasks ID`` printed them as they were, escape sequences and all,
    to whoever reads the pool: its owner too."""
    from poolnet_desktop.commands.tasks import render_shards
    from poolnet_desktop.core.task_protocol import ShardSummary, TaskSummary

    task = TaskSummary(id="t-1", name="x\x1b]0;owned\x07", state="succeeded", total=1, done=1,
                       succeeded=1, running=0, queued=0, submitted_at=0.0)
    shard = ShardSummary(index=0, state="succeeded", attempt=1, device_id="d", exit_code=0,
                         reason="outputs not kept: \x1b[2Jevil: is a link; outputs are files")
    shown = render_shards(task, [shard])
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b]0;owned\\x07" in shown and "\\x1b[2Jevil" in shown


def test_what_a_shard_failed_with_is_shown_printable_and_only_the_first_ten() -> None:
    from poolnet_desktop.commands.tasks import render_failures
    from poolnet_desktop.core.task_protocol import ShardSummary

    shards = [ShardSummary(index=n, state="failed", attempt=1 + n % 3, device_id="d", exit_code=3,
                           reason="exited with code 3\x1b[2J") for n in range(12)]
    shards.insert(1, ShardSummary(index=99, state="succeeded", attempt=1, device_id="d", exit_code=0, reason=""))
    lines = render_failures("t-1", shards)
    assert lines[0] == "poolnet: shard 0 failed: exited with code 3\\x1b[2J"
    assert lines[1] == "poolnet: shard 1 failed (attempt 2): exited with code 3\\x1b[2J"
    assert len(lines) == 11 and lines[-1] == "poolnet: and 2 more (poolnet tasks t-1)"


def test_a_shards_next_attempt_is_announced_and_a_late_chunk_of_the_last_one_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from poolnet_desktop.commands.tasks import OutputPrinter
    from poolnet_desktop.core.task_protocol import ShardOutput, ShardRef

    def chunk(shard: int, attempt: int, data: str) -> ShardOutput:
        return ShardOutput(shard=ShardRef("t-1", shard, attempt), stream="stdout", data=data)

    alone = OutputPrinter(labelled=False)
    for output in (chunk(0, 1, "half"), chunk(0, 2, "again\n"), chunk(0, 1, "late\n")):
        alone.show(output)
    out, err = capsys.readouterr()
    assert (out, err) == ("halfagain\n", "\npoolnet: shard 0, attempt 2:\n")

    labelled = OutputPrinter(labelled=True)
    for output in (chunk(0, 1, "half"), chunk(1, 1, "one\n"), chunk(0, 2, "again\n")):
        labelled.show(output)
    out, err = capsys.readouterr()
    assert out == "[1] one\n[0] half\n[0] again\n" and err == "poolnet: shard 0, attempt 2:\n"


def test_ctrl_c_on_run_cancels_its_task_and_on_submit_wait_leaves_it_running(pool: Pool, tmp_path: Path) -> None:
    """A newcomer's run: Ctrl-C on ``poolnet run`` exited 0 and left the command running in the
    pool; on ``submit --wait`` it exited 0 too, which a script takes for success."""
    def started(command: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*POOLNET, command, "--url", pool.url, "--data-dir", str(pool.host_dir), *args],
                                env=environment(pool.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=pool.home)

    running = started("run", "--", "sh", "-c", "echo begun; sleep 60")
    assert running.stdout is not None and running.stdout.readline() == "begun\n"
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=30)
    assert running.returncode == 130, stderr
    assert stderr.strip().endswith("cancelled"), stderr
    task_id = stderr.split()[-2]
    assert {t["id"]: t["state"] for t in pool.tasks()}[task_id] == "cancelled"

    slow = write_manifest(tmp_path / "slow", "slow", 'command = ["sleep", "60"]\nshards = 1\n')
    waiting = started("submit", str(slow), "--wait")
    wait_until(lambda: any(t["name"] == "slow" and t["state"] == "running" for t in pool.tasks()), "the shard")
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 130, stderr
    assert "stopped waiting" in stderr
    [slow_task] = [t for t in pool.tasks() if t["name"] == "slow"]
    assert slow_task["state"] == "running" and f"poolnet cancel {slow_task['id']}" in stderr
