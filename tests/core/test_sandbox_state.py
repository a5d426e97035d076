"""Whether a member takes tasks, from whether it can make a sandbox and its owner's choice."""

from poolnet_desktop.core.sandbox_state import describe, sandbox_state, short, takes_tasks


def test_a_member_with_a_sandbox_uses_it_whatever_the_owner_allowed() -> None:
    assert sandbox_state(True, False) == sandbox_state(True, True) == "bwrap"
    assert takes_tasks("bwrap")


def test_without_a_sandbox_tasks_run_only_if_the_owner_opted_in() -> None:
    assert sandbox_state(False, False) == "none" and not takes_tasks("none")
    assert sandbox_state(False, True) == "unsandboxed" and takes_tasks("unsandboxed")


def test_the_lines_say_what_happens_and_why() -> None:
    assert describe("bwrap") == "tasks run in a sandbox (bubblewrap)"
    line = describe("none", "bubblewrap (bwrap) is not installed")
    assert "(bubblewrap (bwrap) is not installed)" in line and "--allow-unsandboxed" in line
    assert describe("unsandboxed") == "runs tasks without a sandbox"
    assert describe("") == short("") == ""  # an older member that did not say
    assert [short(s) for s in ("bwrap", "none", "unsandboxed")] == [
        "sandboxed", "no sandbox: no tasks", "no sandbox"]


def test_a_member_run_as_root_that_takes_tasks_warns_its_owner() -> None:
    assert describe("bwrap", as_root=True).startswith("tasks run in a sandbox (bubblewrap); as root, shards can read")
    assert "change the device files the sandbox shares (/dev/null" in describe("bwrap", as_root=True)
    assert "a task can do anything" in describe("unsandboxed", as_root=True)
    for state in ("bwrap", "unsandboxed"):
        assert describe(state, as_root=True).endswith("run poolnet as an ordinary user")
    assert "as root" not in describe("none", "bwrap is not installed", as_root=True)
