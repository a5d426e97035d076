"""The bubblewrap sandbox a shard runs in on Linux: what it may see, write and reach.

A shard is untrusted code. In the sandbox it sees the system read-only (``/dev`` too), a
private ``/tmp``, ``/var/tmp`` and ``/dev/shm``, its own working folder read-write and nothing
else writable; the user's home, PoolNet's data
folder and the work root of other shards are hidden under empty tmpfs mounts (only the
interpreter's prefix is bound back, read-only, when it lives under one of them, so that
``{python}`` still runs). It holds no capability, even on a member run as root. It gets
its own PID, IPC and UTS namespaces (it cannot see or
signal the member's processes), no network when the member's setting says so, and GPU device
nodes only when it was given GPUs.

``bwrap_argv`` is a pure function of plain values (tested without running anything);
``probe`` runs bwrap once to learn whether this machine can make a sandbox at all (bwrap
installed, user namespaces allowed).

Killing: the runner holds bwrap's pid. With ``--die-with-parent`` the namespace's init dies
when bwrap is killed, and the kernel then kills every process in the PID namespace, so the
runner's kill on timeout, cancel or memory limit still takes down the whole tree even though
``--new-session`` puts the shard in a session of its own.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.platform != "win32":  # sandboxes are Linux's; the executor imports this file everywhere
    import resource

from poolnet_desktop.runtime.member.landlock import scopes_supported, spawn_scoped
from poolnet_desktop.runtime.member.seccomp_filter import program_pipe

# Only these are inherited by a sandboxed shard; everything else is the task's or PoolNet's.
SCRUBBED_PATH = "/usr/local/bin:/usr/bin:/bin"
KEPT_LOCALE_VARIABLES = ("LANG", "LC_ALL")
_PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """The member owner's choices: may tasks use the network; may tasks run without a
    sandbox where none can be made (off by default: the member then takes no tasks)."""

    network: bool = True
    allow_unsandboxed: bool = False
    # Folders to hide besides the member's own (the host's data folder, for the host's member).
    hidden: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A sandbox ready to wrap shard commands: the network choice and the folders to hide."""

    network: bool
    hidden: tuple[Path, ...]

    def wrap(
        self, argv: Sequence[str], workdir: Path, gpus: Sequence[int], visible: Sequence[Path],
        seccomp_fd: int | None, sockets: Sequence[Path] | None = None,
    ) -> list[str]:
        """``argv`` run inside this sandbox with ``workdir`` as its only writable folder;
        ``visible`` folders (the shard's Python environment) are bound in read-only.
        ``seccomp_fd``: ``seccomp_filter.program_pipe()``'s, for bwrap to inherit.
        ``sockets``: those bound on this machine, as ``listening_sockets`` read them (None:
        read now)."""
        shown = [*interpreter_prefixes(), *kept_under_run(), *visible]
        bound = listening_sockets() if sockets is None else sockets
        folders, sockets = socket_masks(bound, [*self.hidden, *PRIVATE_TEMP], [*shown, workdir])
        return bwrap_argv(
            argv, workdir, network=self.network, gpus=bool(gpus), visible_ro=shown,
            hidden=[*self.hidden, *folders], masked=sockets,
            links=links_out_of_run() if any(RUN.is_relative_to(folder) for folder in self.hidden) else (),
            gpu_devices=gpu_device_nodes() if gpus else [], seccomp_fd=seccomp_fd,
            process_limit=shard_process_limit(),
        )


# Files of /proc that list what is not the sandbox's: every key a shard's uid may view in every
# keyring on the machine (their types and descriptions: Kerberos caches named by principal,
# systemd's cached passwords), and the timers and scheduling of every process. Those this
# kernel has.
MASKED_PROC_FILES = tuple(
    path for path in (Path("/proc/keys"), Path("/proc/key-users"), Path("/proc/timer_list"), Path("/proc/sched_debug"))
    if path.exists()
)

# Each shard gets temporary folders of its own, empty at its start: mounts of their own, which
# a shard can neither move nor replace (a lane's launcher checks them by their ``lstat``).
PRIVATE_TEMP = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def bwrap_argv(
    argv: Sequence[str],
    workdir: Path,
    *,
    network: bool,
    gpus: bool,
    visible_ro: Sequence[Path],
    hidden: Sequence[Path],
    gpu_devices: Sequence[str] = (),
    seccomp_fd: int | None = None,
    masked: Sequence[Path] = (),
    links: Sequence[tuple[Path, str]] = (),
    process_limit: tuple[str, int] | None = None,
) -> list[str]:
    """The bwrap command line that runs ``argv`` in ``workdir``.

    ``hidden`` folders, ``/tmp`` and ``/var/tmp`` get an empty tmpfs; each ``visible_ro``
    folder that lies under one of them is bound back read-only (one outside them all is
    visible anyway): PoolNet's own Python may live in a virtualenv under ``/tmp`` or the home.
    ``gpu_devices`` (``/dev/nvidia*``, ``/dev/dri``) are bound in only when ``gpus``.
    ``seccomp_fd`` holds the seccomp program (``seccomp_filter``) the shard runs under.
    ``masked`` files (sockets) get the null device over them; each of ``links`` (a path in a
    hidden folder, and its target) is made again inside. ``process_limit`` (prlimit's path,
    and a count: ``shard_process_limit``) is the most processes and threads the sandbox may
    hold, set by prlimit inside it, which then runs ``argv`` in its place (the same process).
    """
    out = [
        "bwrap", "--die-with-parent", "--new-session",
        # Run as root, bwrap keeps every capability unless told: the shard could unmount
        # what hides the keys and remount / writable. Unprivileged, it drops them anyway.
        "--cap-drop", "ALL",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        # The kernel's settings: bwrap covers /proc/sys only where access(W_OK) says it is
        # writable, which it never says of the folder, even to root; but root owns most of the
        # files in it, so a shard of a member run as root set them (kernel.core_pattern: a
        # command run as root outside the sandbox). Read-only, as Docker has it.
        "--ro-bind", "/proc/sys", "/proc/sys",
        # The namespace's POSIX message queues, where a lane's launcher can see and remove
        # what a shard left in them (its IPC namespace outlives the shard).
        "--mqueue", "/dev/mqueue",
    ]
    for listing in MASKED_PROC_FILES:  # the key list and other processes' timers, as Docker hides them
        out += ["--ro-bind", "/dev/null", str(listing)]
    masks = _outermost([*PRIVATE_TEMP, *hidden])
    for folder in masks:
        out += ["--tmpfs", str(folder)]
    for folder in _outermost(visible_ro):
        if any(folder.is_relative_to(m) for m in masks):
            out += ["--ro-bind", str(folder), str(folder)]
    for path in masked:
        out += ["--ro-bind", "/dev/null", str(path)]
    for link, target in links:
        out += ["--symlink", target, str(link)]
    out += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    if not network:
        out.append("--unshare-net")
    if gpus:
        for device in gpu_devices:
            out += ["--dev-bind", device, device]
    # Last, once every mount in them is made: the tmpfs over a hidden folder, and bwrap's
    # /dev, are file systems the shard could write. What it left there would be the next
    # shard's in a lane (only the temporary folders are emptied), and each could hold half
    # the machine's memory. What is bound inside them (the shard's folder, the interpreter,
    # /dev's devices, /dev/shm, /dev/pts, /dev/mqueue) is a mount of its own and unchanged.
    for folder in masks:
        if folder not in PRIVATE_TEMP:
            out += ["--remount-ro", str(folder)]
    out += ["--remount-ro", "/dev"]
    if seccomp_fd is not None:
        out += ["--seccomp", str(seccomp_fd)]
    if process_limit is not None:
        prlimit, count = process_limit
        return [*out, "--", prlimit, f"--nproc={count}:{count}", "--", *argv]
    return [*out, "--", *argv]


# A fork bomb in a shard would take every process id the machine has (32,768 on many
# kernels) and leave its owner's own programs unable to start any. A sandbox holds at most an
# eighth of the room, within these bounds (a shard of a big machine's many cores may run a
# thread per core in each of many processes).
MIN_PROCESS_LIMIT = 1024
MAX_PROCESS_LIMIT = 16384


def process_limit(room: int, hard_limit: int = -1) -> int:
    """The most processes and threads one sandbox may hold at once, on a machine with
    ``room`` for them (``process_room``), for a member whose own hard limit is ``hard_limit``
    (-1: none; a shard cannot be given more than the member has)."""
    share = min(MAX_PROCESS_LIMIT, max(MIN_PROCESS_LIMIT, room // 8))
    return share if hard_limit < 0 else min(share, hard_limit)


def process_room() -> int:
    """The processes and threads this machine has room for: the smaller of its pid_max and
    threads-max."""
    return min(_kernel_setting("pid_max"), _kernel_setting("threads-max"))


@functools.cache
def shard_process_limit() -> tuple[str, int] | None:
    """prlimit's path and this machine's ``process_limit``, or None where util-linux's
    prlimit is missing. The kernel counts a sandbox's processes apart from the owner's own
    (the sandbox is a user namespace of its own, RLIMIT_NPROC counts per namespace) and
    exempts a member run as root: its shards run as root's own user id."""
    prlimit = shutil.which("prlimit", path=SCRUBBED_PATH)
    if prlimit is None:
        return None
    return prlimit, process_limit(process_room(), resource.getrlimit(resource.RLIMIT_NPROC)[1])


def _kernel_setting(name: str) -> int:
    try:
        return int(Path(f"/proc/sys/kernel/{name}").read_text())
    except (OSError, ValueError):
        return 32768  # pid_max's smallest default


def temporary_files_size(pid: int) -> int:
    """Bytes in the private temporary folders of the sandbox process ``pid`` is in: they are
    tmpfs, memory that no process's resident size counts. Read from outside, through that
    process's root (which a shard cannot change for another process); 0 for what cannot be
    read (it ended)."""
    total = 0
    for folder in PRIVATE_TEMP:
        try:
            usage = os.statvfs(f"/proc/{pid}/root{folder}")
        except OSError:
            continue
        total += (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    return total


def _outermost(folders: Sequence[Path]) -> list[Path]:
    """The folders with those nested in another of them dropped (a mount over the outer
    one would hide the inner mount), in a stable order."""
    unique = sorted(set(folders), key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for folder in unique:
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return kept


def interpreter_prefixes() -> list[Path]:
    """The folders the Python that runs ``{python}`` needs (resolved: a venv's symlinks
    point into the base prefix)."""
    return [Path(p).resolve() for p in {sys.prefix, sys.base_prefix}]


def gpu_device_nodes() -> list[str]:
    """The GPU device nodes on this machine. Not testable here (no GPU): a shard given GPUs
    on a machine with an NVIDIA card gets these bound in, others see none."""
    return sorted(glob.glob("/dev/nvidia*")) + (["/dev/dri"] if Path("/dev/dri").exists() else [])


# Where the system keeps sockets that give whoever connects the machine's root (Docker's,
# containerd's, libvirt's, systemd's private bus, in /run; in /var: LXD's, Incus's, MicroK8s's
# containerd in /var/snap, libvirt's QEMU monitors, the kubelet's, and containers' own in their
# storage), or a command run outside the sandbox (the system bus). A read-only bind does not
# stop ``connect()``, and a path socket is in no network namespace: these folders are hidden,
# and so is the folder of each socket bound elsewhere when a sandbox is made (``socket_masks``).
RUN = Path("/run")
RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEM_SOCKET_FOLDERS = (RUN, Path("/var/run"), Path("/var/lib/lxd"), Path("/var/snap"),
                         Path("/var/lib/incus"), Path("/var/lib/libvirt"), Path("/var/lib/kubelet"),
                         Path("/var/lib/docker"), Path("/var/lib/containers"))
# NixOS keeps its programs (on PATH) and its GPU drivers under /run.
NIXOS_RUN_PATHS = (Path("/run/current-system"), Path("/run/opengl-driver"), Path("/run/opengl-driver-32"))


def hidden_folders(data_dir: Path, work_root: Path) -> tuple[Path, ...]:
    """What a shard must not see: the user's home, root's home, the data folder, the work
    root (every shard's folder; its own is bound back), the system's sockets, and the user's
    runtime folder (its session bus) where it is not under /run."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    sockets = [*SYSTEM_SOCKET_FOLDERS, *([Path(runtime)] if runtime else [])]
    return (*(p.resolve() for p in (Path.home(), Path("/root"), data_dir, work_root)),
            *(p.resolve() for p in sockets if p.is_dir()))


def kept_under_run(resolv_conf: Path | None = None) -> list[Path]:
    """What programs need from the hidden ``/run``, bound back read-only: the resolver's
    configuration where ``/etc/resolv.conf`` (``RESOLV_CONF``) points into it
    (systemd-resolved's, NetworkManager's; the file alone, as it is when the sandbox is
    made), and on NixOS the system's programs (on PATH) and its GPU drivers."""
    resolver = (resolv_conf or RESOLV_CONF).resolve()
    kept = [resolver] if resolver.is_relative_to(RUN) and resolver.is_file() else []
    return kept + [path for path in NIXOS_RUN_PATHS if path.exists()]


def resolver_state(resolv_conf: Path | None = None) -> tuple[object, ...]:
    """Which resolver configuration a sandbox made now would show, where it is a file bound
    in from ``/run`` (``kept_under_run``): its path and its identity. A bound file stays the
    file it was, and NetworkManager writes a new one (a rename) when the network changes: a
    lane made before shows the old name servers. Empty where ``/etc/resolv.conf`` lies
    outside ``/run``: the system's view shows it as it is now."""
    resolver = (resolv_conf or RESOLV_CONF).resolve()
    if not resolver.is_relative_to(RUN):
        return ()
    try:
        info = os.stat(resolver)
    except OSError:
        return (resolver,)
    return (resolver, info.st_dev, info.st_ino)


def links_out_of_run() -> list[tuple[Path, str]]:
    """The links in /run that lead out of it (Debian's /run/shm, to the sandbox's own
    /dev/shm): made again in the hidden /run, where they still lead somewhere."""
    try:
        entries = list(os.scandir(RUN))
    except OSError:
        return []
    links = [(Path(entry.path), os.readlink(entry.path)) for entry in entries if entry.is_symlink()]
    return sorted((link, target) for link, target in links
                  if Path(target).is_absolute() and not Path(target).is_relative_to(RUN))


def listening_sockets(table: Path = Path("/proc/net/unix")) -> list[Path]:
    """The paths of the Unix sockets bound in this network namespace now (a path socket is
    reachable from every namespace, so these are what a shard could connect to). The kernel
    writes a path as it is, a line break included: a line may be forged, and what it names
    is only a claim (``socket_masks`` checks it)."""
    try:
        rows = table.read_text(errors="replace").splitlines()[1:]
    except OSError:
        return []
    fields = (row.split(maxsplit=7) for row in rows)
    return [Path(cells[7]) for cells in fields if len(cells) == 8 and cells[7].startswith("/")]


def socket_masks(sockets: Sequence[Path], hidden: Sequence[Path], shown: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """How to keep ``sockets`` out of a shard's reach besides the ``hidden`` folders: the
    folders to hide (a socket's folder, two levels deep or more, that holds nothing ``shown``
    and no temporary folder: whatever else it holds is the daemon's), and the sockets to mask
    one by one (where their folder cannot go: ``/var``, ``/opt``). Only a path that is a
    socket counts: a user's socket named with a line break and a line of the table after it
    (``.../a\n0: 2 0 10000 1 1 9 /usr/lib/x``) named /usr/lib, whose hiding broke every
    sandbox made after it."""
    folders: set[Path] = set()
    files: set[Path] = set()
    for socket_path in sockets:
        if any(socket_path.is_relative_to(place) for place in (*hidden, Path("/dev"), Path("/proc"), Path("/sys"))):
            continue
        if not _is_socket(socket_path):
            continue
        folder = socket_path.parent
        if len(folder.parts) >= 3 and not any(path.is_relative_to(folder) for path in (*shown, *PRIVATE_TEMP)):
            folders.add(folder)
        else:
            files.add(socket_path)
    return sorted(folders), sorted(f for f in files if not any(f.is_relative_to(folder) for folder in folders))


def _is_socket(path: Path) -> bool:
    """Whether ``path`` itself (no link followed) is a socket."""
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


@functools.cache
def probe() -> tuple[bool, str]:
    """Whether a sandbox can be made here: ``(True, "")`` or ``(False, why not)``. Runs
    bwrap once per process (cached): it fails where user namespaces are off."""
    if not sys.platform.startswith("linux"):
        return False, f"no sandbox on {sys.platform} (bubblewrap is Linux only)"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap (bwrap) is not installed"
    try:
        # The program run inside is bwrap itself, by its full path: this process's PATH (a
        # launcher's may be bare) must not decide whether a sandbox can be made. The
        # namespaces and file systems are those every sandbox makes.
        def start() -> subprocess.Popen[bytes]:
            with program_pipe() as seccomp:
                filtered = ["--seccomp", str(seccomp)] if seccomp is not None else []
                return subprocess.Popen(
                    [bwrap, "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/", "--dev", "/dev",
                     "--proc", "/proc", "--mqueue", "/dev/mqueue", *filtered, bwrap, "--version"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=[seccomp] if seccomp is not None else [],
                )

        # Scoped as every sandbox is (no_new_privs included): a setuid bwrap would fail here.
        running = spawn_scoped(start) if scopes_supported() else start()
        try:
            _, stderr = running.communicate(timeout=_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            running.kill()
            running.communicate()
            raise
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap cannot run: {exc}"
    if running.returncode != 0:
        why = stderr.decode(errors="replace").strip().splitlines()
        return False, f"bwrap cannot make a sandbox: {why[-1] if why else running.returncode}"
    return True, ""
