"""The member's spool: real files in tmp_path, a new Spool object standing in for a restart,
and a real full disk (a 64 KiB tmpfs in a private mount namespace)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.member.spool import Spool, SpoolError


def make_outputs(workdir: Path, files: dict[str, bytes]) -> ShardResult:
    entries = []
    for rel, data in files.items():
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(FileEntry(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return ShardResult(
        reason="succeeded", exit_code=0, started=10.0, ended=11.5, outputs=entries
    )


def test_put_survives_a_restart_and_remove_forgets(tmp_path: Path) -> None:
    work = tmp_path / "work"
    outcome = make_outputs(work, {"out/a.txt": b"alpha", "b.bin": bytes(range(256)) * 10})
    spool = Spool(tmp_path / "spool")
    spool.put("task1-0-1", outcome, work, meta={"task": "task1", "shard": "0"}, now=2.0)
    spool.put("task1-1-1", make_outputs(work, {}), work, now=1.0)
    shutil.rmtree(work)  # the working folder is gone; the spool holds copies

    reopened = Spool(tmp_path / "spool")
    pending = reopened.pending()
    assert [e.key for e in pending] == ["task1-1-1", "task1-0-1"]  # oldest first
    entry = pending[1]
    assert entry.outcome == outcome
    assert entry.meta == {"task": "task1", "shard": "0"}
    assert (entry.files_dir / "out/a.txt").read_bytes() == b"alpha"
    assert (entry.files_dir / "b.bin").read_bytes() == bytes(range(256)) * 10

    assert reopened.remove("task1-0-1") is True
    assert reopened.remove("task1-0-1") is False
    assert [e.key for e in Spool(tmp_path / "spool").pending()] == ["task1-1-1"]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["task1-1-1"]


@pytest.mark.parametrize("key", ["", ".hidden", "a/b", "../x", "x" * 129, "a b", "ü"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(SpoolError, match="bad spool key"):
        spool.put(key, make_outputs(tmp_path / "w", {}), tmp_path / "w")
    with pytest.raises(SpoolError, match="bad spool key"):
        spool.remove(key)


def test_duplicate_key_is_refused_and_keeps_the_first(tmp_path: Path) -> None:
    work = tmp_path / "w"
    spool = Spool(tmp_path / "spool")
    spool.put("k", make_outputs(work, {"a": b"first"}), work)
    with pytest.raises(SpoolError, match="already exists"):
        spool.put("k", make_outputs(work, {"a": b"second"}), work)
    assert (spool.pending()[0].files_dir / "a").read_bytes() == b"first"


def test_changed_or_missing_output_leaves_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    spool = Spool(tmp_path / "spool")
    outcome = make_outputs(work, {"a": b"one", "b": b"two"})
    (work / "b").write_bytes(b"tampered")
    with pytest.raises(SpoolError, match="output b changed"):
        spool.put("k", outcome, work)
    (work / "b").unlink()
    with pytest.raises(SpoolError, match="output b is missing"):
        spool.put("k", outcome, work)
    assert spool.pending() == []
    assert list((tmp_path / "spool").iterdir()) == []


def test_output_symlinked_out_of_the_workdir_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "w"
    outcome = make_outputs(work, {"a": b"secret"})
    (tmp_path / "secret").write_bytes(b"secret")
    (work / "a").unlink()
    (work / "a").symlink_to(tmp_path / "secret")
    with pytest.raises(SpoolError, match="is no file in the working folder"):
        Spool(tmp_path / "spool").put("k", outcome, work)


def test_leftovers_of_a_crash_are_cleaned_and_corrupt_entries_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    (root / ".tmp-k-1234").mkdir()  # a put that crashed before its rename
    (root / ".tmp-k-1234" / "entry.json").write_text("{}")
    (root / ".trash-j-1234").mkdir()  # a remove that crashed before its delete
    (root / "broken").mkdir()
    (root / "broken" / "entry.json").write_text("{not json")
    spool = Spool(root)
    assert spool.pending() == []
    names = sorted(p.name for p in root.iterdir())
    assert len(names) == 1 and names[0].startswith(".corrupt-broken-")


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="cannot create the spool folder"):
        Spool(tmp_path / "file" / "spool")


FULL_DISK = """
import hashlib, json, os, sys
from pathlib import Path
from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.member.spool import Spool, SpoolError

work, root = Path(sys.argv[1]), Path(sys.argv[2])
big = os.urandom(256 * 1024)
(work / "big.bin").write_bytes(big)
entry = FileEntry(path="big.bin", size=len(big), sha256=hashlib.sha256(big).hexdigest())
outcome = ShardResult(reason="succeeded", exit_code=0, started=0.0, ended=1.0, outputs=[entry])
spool = Spool(root)
result = {}
try:
    spool.put("big", outcome, work)
    result["error"] = None
except SpoolError as exc:
    result["error"] = str(exc)
result["left"] = sorted(p.name for p in root.iterdir())
result["pending"] = [e.key for e in Spool(root).pending()]
small = ShardResult(reason="failed", exit_code=1, started=0.0, ended=1.0)
result["small"] = spool.put("small", small, work).key
print(json.dumps(result))
"""


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to mount")
def test_full_disk_is_a_clear_error_and_leaves_no_half_entry(tmp_path: Path) -> None:
    work, root = tmp_path / "work", tmp_path / "spool"
    work.mkdir()
    root.mkdir()
    (tmp_path / "full_disk.py").write_text(textwrap.dedent(FULL_DISK))
    shell = (
        f"mount -t tmpfs -o size=64k tmpfs {root} && "
        f"exec {sys.executable} {tmp_path / 'full_disk.py'} {work} {root}"
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "big" not in proc.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["error"] == f"cannot spool 'big': the disk holding {root} is full"
    assert result["left"] == []
    assert result["pending"] == []
    assert result["small"] == "small"
