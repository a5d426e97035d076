"""``poolnet run -- CMD ARGS`` and ``poolnet tasks ID`` against real ``poolnet host`` and
``poolnet join`` subprocesses on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess

from tests.test_cli import POOLNET, environment
from tests.test_task_cli import Pool, pool, write_manifest  # noqa: F401 (the fixture)


def run(pool: Pool, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """``poolnet run ARGS`` as the host's owner: the options go before ``--``, since
    everything after it is the command."""
    return subprocess.run(
        [*POOLNET, "run", "--url", pool.url, "--data-dir", str(pool.host_dir), *args],
        env=environment(pool.home), capture_output=True, text=True, timeout=60, cwd=pool.home,
    )


def test_run_prints_the_commands_output_and_exits_with_its_success(pool: Pool) -> None:  # noqa: F811
    hi = run(pool, "--", "echo", "hi")
    assert (hi.returncode, hi.stdout) == (0, "hi\n"), hi.stderr
    assert "succeeded, 1/1 shards succeeded" in hi.stderr

    several = run(pool, "--shards", "3", "--", "sh", "-c", "echo shard {shard} of {shards}")
    assert several.returncode == 0, several.stderr
    assert sorted(several.stdout.splitlines()) == [
        f"[{n}] shard {n} of 3" for n in range(3)
    ]

    failing = run(pool, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert failing.returncode == 1
    assert "oops" in failing.stderr and "0/1 shards succeeded" in failing.stderr

    listed = {t["name"]: t for t in pool.tasks()}
    assert listed["echo"]["state"] == "succeeded"


def test_run_refuses_a_missing_command_in_one_line(pool: Pool) -> None:  # noqa: F811
    for args in ([], ["--"], ["--shards", "0", "--", "true"]):
        result = run(pool, *args)
        assert result.returncode == 2
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr == "poolnet: the command line: --shards must be between 1 and 100000, not 0\n"


def test_tasks_id_shows_each_shards_sweep_values(pool: Pool) -> None:  # noqa: F811
    manifest = write_manifest(pool.home / "mc", "mc", """
        command = ["sh", "-c", "echo $POOLNET_PARAM_RATE"]
        [matrix]
        rate = [0.1, 0.2]
        seed = [7, 8]
    """)
    submitted = pool.run("submit", str(manifest), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.split(":")[0]
    shown = pool.run("tasks", task_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{task_id} (mc): succeeded, 4/4 done"
    assert lines[1].split() == ["SHARD", "STATE", "DEVICE", "ATTEMPT", "VALUES", "NOTE"]
    values = [line.split("  1  ")[-1].strip() for line in lines[2:]]
    assert values == ["rate=0.1 seed=7", "rate=0.1 seed=8", "rate=0.2 seed=7", "rate=0.2 seed=8"]
    unknown = pool.run("tasks", "no-such-task")
    assert unknown.returncode == 1
    assert unknown.stderr == "poolnet: the pool has no task 'no-such-task'\n"


def test_run_says_why_each_shard_failed_and_marks_each_retry(pool: Pool) -> None:  # noqa: F811
    """A newcomer's run: a mistyped command printed nothing at all with several shards (a
    lane says why it could not start it, but nothing showed it); a failing command printed its
    output once per attempt with nothing between, and never its exit code."""
    # A lane's launcher says it; a sandbox of its own (one-shard tasks, a task's first shards
    # while a lane is made) starts the command through its prlimit, which exits with 127.
    not_found = r"(cannot start 'no-such-program-here': program not found|exited with code 127 \(command not found\))"
    for shards in (1, 3):
        missing = run(pool, "--shards", str(shards), "--", "no-such-program-here")
        assert missing.returncode == 1
        failures = [line for line in missing.stderr.splitlines() if " failed (attempt" in line]
        assert len(failures) == shards, missing.stderr
        for n, line in enumerate(sorted(failures)):
            assert re.fullmatch(rf"poolnet: shard {n} failed \(attempt 3\): {not_found}", line), line

    failing = run(pool, "--", "sh", "-c", "echo try; exit 3")
    assert failing.stdout == "try\n" * 3
    assert [line for line in failing.stderr.splitlines() if line.startswith("poolnet: shard")] == [
        "poolnet: shard 0, attempt 2:", "poolnet: shard 0, attempt 3:",
        "poolnet: shard 0 failed (attempt 3): exited with code 3",
    ]
