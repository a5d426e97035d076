"""The sandbox's flags as plain values, and the probe on this machine (bwrap installed)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

from poolnet_desktop.runtime.member.sandbox import (
    MAX_PROCESS_LIMIT,
    MIN_PROCESS_LIMIT,
    bwrap_argv,
    kept_under_run,
    listening_sockets,
    probe,
    process_limit,
    process_room,
    socket_masks,
)

HOME = Path("/home/u")
DATA = HOME / ".local/share/poolnet"
WORK = HOME / ".cache/poolnet/work-1234abcd"
SLOT = WORK / "slot-1"


def _argv(**kw: object) -> list[str]:
    args: dict = dict(network=True, gpus=False, visible_ro=[], hidden=[HOME, DATA, WORK])
    args.update(kw)
    return bwrap_argv(["python", "x.py"], SLOT, **args)


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _bound_back(argv: list[str]) -> list[str]:
    """What is bound read-only besides the system, /proc/sys and the masks over /proc files."""
    return [source for source in _pairs(argv, "--ro-bind") if source not in ("/", "/proc/sys", "/dev/null")]


def test_the_kernels_settings_are_read_only_and_the_key_list_is_masked() -> None:
    """A shard of a member run as root could write /proc/sys (kernel.core_pattern: a command
    run as root outside) and read /proc/keys: the keys of every keyring it may view."""
    argv = _argv()
    at = argv.index("/proc/sys")
    assert argv[at - 1:at + 2] == ["--ro-bind", "/proc/sys", "/proc/sys"] and at > argv.index("--proc")
    if Path("/proc/keys").exists():
        at = argv.index("/proc/keys")
        assert argv[at - 2:at + 1] == ["--ro-bind", "/dev/null", "/proc/keys"]


def test_the_command_comes_after_the_separator_unchanged() -> None:
    argv = _argv()
    assert argv[0] == "bwrap"
    assert argv[argv.index("--") + 1:] == ["python", "x.py"]


def test_hidden_folders_get_a_tmpfs_nested_ones_only_once() -> None:
    assert sorted(_pairs(_argv(), "--tmpfs")) == sorted(["/tmp", "/var/tmp", "/dev/shm", str(HOME)])


def test_dev_and_the_hidden_folders_are_made_read_only_once_every_mount_in_them_is_made() -> None:
    """bwrap's /dev is a tmpfs: a shard left files in it, or moved /dev/shm aside full, for
    the next shard of its lane (a review of issue 14's lanes). So was the tmpfs over a hidden
    folder (the home here, which holds the data folder and the work root). The temporary
    folders stay writable: the lane's launcher empties them after each shard."""
    argv = _argv(gpus=True, gpu_devices=["/dev/nvidia0"], visible_ro=[HOME / "proj/.venv"])
    assert _pairs(argv, "--remount-ro") == [str(HOME), "/dev"]
    first = argv.index("--remount-ro")
    assert argv[first:argv.index("--")] == ["--remount-ro", str(HOME), "--remount-ro", "/dev"]
    assert first > max(argv.index(str(SLOT)), argv.index(str(HOME / "proj/.venv")), argv.index("/dev/shm"),
                       argv.index("/dev/nvidia0"))


def test_the_workdir_is_the_only_writable_bind_and_the_cwd() -> None:
    argv = _argv()
    i = argv.index("--bind")
    assert argv[i + 1:i + 3] == [str(SLOT), str(SLOT)]
    assert argv.count("--bind") == 1
    assert _pairs(argv, "--chdir") == [str(SLOT)]
    # the bind comes after the tmpfs over its parents, else the tmpfs would hide it
    assert i > max(j for j, a in enumerate(argv) if a == "--tmpfs")


def test_an_interpreter_under_a_hidden_folder_is_bound_back_read_only() -> None:
    venv, system = HOME / "proj/.venv", Path("/usr")
    argv = _argv(visible_ro=[venv, system])
    assert _bound_back(argv) == [str(venv)]
    assert argv.index(str(venv)) > argv.index(str(HOME))


def test_an_interpreter_under_tmp_is_bound_back_over_the_private_tmp() -> None:
    """CI clones the project anywhere, /tmp included: its virtualenv's Python must still run
    (every {python} shard failed with 'execvp .../.venv/bin/python: No such file')."""
    venv = Path("/tmp/ci/main/.venv")
    argv = _argv(visible_ro=[venv])
    assert _bound_back(argv) == [str(venv)]
    assert argv.index(str(venv)) > argv.index("/tmp")


def test_namespaces_and_death_with_the_parent_are_always_asked() -> None:
    argv = _argv()
    for flag in ("--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
                 "--unshare-uts"):
        assert flag in argv


def test_network_off_unshares_the_network() -> None:
    assert "--unshare-net" not in _argv(network=True)
    assert "--unshare-net" in _argv(network=False)


def test_gpu_nodes_are_bound_only_when_the_shard_has_gpus() -> None:
    nodes = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/dri"]
    assert "--dev-bind" not in _argv(gpus=False, gpu_devices=nodes)
    assert _pairs(_argv(gpus=True, gpu_devices=nodes), "--dev-bind") == nodes


def test_prlimit_sets_the_process_limit_inside_and_runs_the_command_in_its_place() -> None:
    argv = _argv(process_limit=("/usr/bin/prlimit", 2048))
    assert argv[argv.index("--") + 1:] == ["/usr/bin/prlimit", "--nproc=2048:2048", "--", "python", "x.py"]


def test_a_sandbox_holds_an_eighth_of_the_machines_room_for_processes_within_bounds() -> None:
    assert process_limit(32768) == 4096  # the kernel's default pid_max
    assert process_limit(4194304) == MAX_PROCESS_LIMIT  # systemd's
    assert process_limit(4096) == MIN_PROCESS_LIMIT
    assert process_limit(32768, hard_limit=1500) == 1500  # never more than the member may have
    assert process_room() > 0


def test_bwrap_can_make_a_sandbox_here() -> None:
    assert probe() == (True, "")


def test_a_resolver_configuration_under_run_is_bound_back_alone(tmp_path: Path) -> None:
    """/run is hidden (its sockets give a shard the machine's root); /etc/resolv.conf is often
    a link into it, and only that file comes back, read-only."""
    folder = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/run"))
    try:
        (folder / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
        (tmp_path / "resolv.conf").symlink_to(folder / "stub-resolv.conf")
        files = kept_under_run(tmp_path / "resolv.conf")
        assert files == [folder / "stub-resolv.conf"]
        argv = _argv(visible_ro=files, hidden=[Path("/run"), HOME])
        assert _bound_back(argv) == [str(folder / "stub-resolv.conf")]
        assert kept_under_run(folder.parent / "nothing-here") == []
    finally:
        shutil.rmtree(folder)


def test_the_folder_of_a_bound_socket_is_hidden_or_else_the_socket_masked(tmp_path: Path) -> None:
    """Path sockets are reachable from every namespace: each one bound when a sandbox is
    made loses its folder (two levels deep or more, holding nothing shown and no temporary
    folder), or is masked itself. A path that is no socket (a forged line of the table)
    is nothing to hide."""
    root = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/var/local"))
    venv = root / "tool" / ".venv"
    sockets = [root / "db" / "mysqld.sock", root / "db" / "x.sock", root / "tool" / "run.sock", tmp_path / "alone.sock"]
    bound = [socket.socket(socket.AF_UNIX) for _ in sockets]
    try:
        venv.mkdir(parents=True)
        (root / "db").mkdir()
        for listening, path in zip(bound, sockets):
            listening.bind(str(path))
        claimed = [*sockets, Path("/usr/lib/x"), Path("/run/user/0/bus"), Path("/dev/log")]
        folders, files = socket_masks(claimed, hidden=[Path("/run"), tmp_path], shown=[venv])
        assert folders == [root / "db"]  # tmp_path's is hidden anyway
        assert files == [root / "tool" / "run.sock"]  # its folder holds the shown venv
        argv = _argv(masked=files)
        at = argv.index(str(files[0]))
        assert argv[at - 2:at + 1] == ["--ro-bind", "/dev/null", str(files[0])]
    finally:
        for listening in bound:
            listening.close()
        shutil.rmtree(root)


def test_the_sockets_bound_here_are_read_from_the_kernels_table(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000: 00000002 00000000 00010000 0001 01 20 /var/lib/db/mysqld.sock\n"
        "0000: 00000002 00000000 00010000 0001 01 21 @abstract\n"
        "0000: 00000003 00000000 00000000 0001 03 22\n"
        "0000: 00000002 00000000 00010000 0001 01 23 /srv/my app/control sock\n")
    assert listening_sockets(table) == [Path("/var/lib/db/mysqld.sock"), Path("/srv/my app/control sock")]
    assert listening_sockets(tmp_path / "missing") == []
