"""Task files: the ``NAME.pool.toml`` manifest, plain scripts, and the ``TaskSpec`` on the wire.

Two shapes, two stages. ``parse_manifest`` and ``script_task`` read text only and return a
``ManifestSpec``: the task plus the file and folder names it declares. The runtime
(``runtime.client.task_files``) then walks those names on disk and fills ``TaskSpec.files`` with a
``FileEntry`` (size, sha256) per file. The ``TaskSpec`` is what travels between submitter,
coordinator and member; it re-checks its own invariants when decoded (``__post_init__`` runs
under ``msgspec`` decoding), so a spec from the network is as safe as one read from disk.

Pure: no file system, no clock.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any

import msgspec

from poolnet_desktop.core.environment import (
    EnvironmentRequest,
    EnvironmentSpec,
    check_requirements,
    is_wheel_path,
)
from poolnet_desktop.core.matrix import (
    MatrixAxis,
    MatrixValue,
    check_axis_name,
    check_matrix,
    check_value,
    combinations,
    format_value,
)
from poolnet_desktop.core.paths import UnsafePathError, safe_relative_path
from poolnet_desktop.core.platforms import PlatformNeed, check_platforms, task_platforms
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.units import BYTES_PER_MB, parse_duration, parse_size
from poolnet_desktop.core.wire import Sha256Hex

MANIFEST_SUFFIX = ".pool.toml"
MAX_SHARDS = 100_000
MAX_RETRIES = 100
MAX_PRIORITY = 1_000_000
# A year: longer than any real job; a bigger figure is a typo (milliseconds, say).
MAX_TIMEOUT_S = 365 * 24 * 3600.0
MAX_CPU_CORES = 100_000.0
MAX_GPUS = 64
MAX_MEGABYTES = 1024.0**4
MAX_ARGS = 4096
MAX_ARG_LENGTH = 32_768
MAX_ENV_VARS = 1024
MAX_PATTERNS = 10_000

# The member replaces this with the interpreter PoolNet itself runs on (``sys.executable``, or
# the bundled one in a frozen build), so a ``.py`` task needs no Python on the member's PATH.
PYTHON_PLACEHOLDER = "{python}"
SHARD_PLACEHOLDER = "{shard}"
SHARDS_PLACEHOLDER = "{shards}"

# Set by PoolNet for every shard; a manifest may not override them.
RESERVED_ENV = frozenset({"POOLNET_SHARD", "POOLNET_SHARDS", "CUDA_VISIBLE_DEVICES"})

_NAME = re.compile(r"^\w[\w .+-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_UNIT = re.compile(r"[A-Za-z]")
_PLACEHOLDER = re.compile(r"\{\w+\}")

_SCRIPT_RUNNERS: dict[str, tuple[str, ...]] = {
    ".py": (PYTHON_PLACEHOLDER,),
    ".sh": ("sh",),
    ".bat": ("cmd", "/c"),
    ".ps1": ("powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File"),
}
SCRIPT_SUFFIXES = tuple(_SCRIPT_RUNNERS)


class ManifestError(ValueError):
    """A task file that cannot run as written; ``str()`` names the file, the key and the fault.

    ``key`` is the dotted TOML key (``"resources.memory"``), or ``None`` when the fault is the
    file as a whole (bad TOML, not UTF-8).
    """

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: key '{key}'" if key else source
        super().__init__(f"{where}: {message}")


class ShardResources(msgspec.Struct, rename="camel", frozen=True):
    """What one shard asks for: CPU cores, memory and storage in MB, whole GPUs.

    CPU must be positive: every shard holds some CPU, which is what bounds how many run at once
    on a member (2,000 one-core shards on a 2-core share run two at a time).
    """

    cpu: Annotated[float, msgspec.Meta(gt=0, le=MAX_CPU_CORES)] = 1.0
    memory_mb: Annotated[float, msgspec.Meta(ge=0, le=MAX_MEGABYTES)] = 0.0
    storage_mb: Annotated[float, msgspec.Meta(ge=0, le=MAX_MEGABYTES)] = 0.0
    gpus: Annotated[int, msgspec.Meta(ge=0, le=MAX_GPUS)] = 0

    def vector(self) -> ResourceVector:
        """The scheduler's view of this demand."""
        return ResourceVector(self.cpu, self.memory_mb, self.storage_mb, self.gpus)


class FileEntry(msgspec.Struct, rename="camel", frozen=True):
    """One file shipped to the member: its path inside the shard's working folder, its size
    in bytes and its sha256 (lower-case hex), checked on arrival."""

    path: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Sha256Hex

    def __post_init__(self) -> None:
        if canonical_path(self.path) != self.path:
            raise ValueError(f"file path {self.path!r} is not in canonical form")


class TaskSpec(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A task as it travels on the wire: everything a member needs to run any of its shards.

    ``command`` is a template: ``{shard}`` (0-based) and ``{shards}`` are replaced per shard by
    ``expand_command``, ``{python}`` by the member's own interpreter. With ``shell`` the command
    is a single string given to the platform's shell; otherwise it runs as an argument list.
    """

    name: str
    command: tuple[str, ...]
    shards: Annotated[int, msgspec.Meta(ge=1, le=MAX_SHARDS)] = 1
    resources: ShardResources = ShardResources()
    files: tuple[FileEntry, ...] = ()
    outputs: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] | None = None
    retries: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETRIES)] = 2
    priority: Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = 0
    shell: bool = False
    # Sweeps and platforms: ``matrix`` makes one shard per combination of its axes (then
    # ``shards`` is their count; ``core.matrix``); ``platform`` lists where shards may run,
    # empty for wherever the command can (``core.platforms``).
    matrix: tuple[MatrixAxis, ...] = ()
    platform: tuple[str, ...] = ()


    # Python packages (issue 16): resolved by the submitter, built once per member; its
    # wheels are among ``files``.
    environment: EnvironmentSpec | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        check_command(self.command, self.shell)
        check_outputs(self.outputs)
        check_env(self.env)
        check_file_layout(entry.path for entry in self.files)
        check_matrix(self.matrix)
        if self.matrix and combinations(self.matrix) != self.shards:
            raise ValueError(
                f"shards is {self.shards} but the matrix makes {combinations(self.matrix)}"
            )
        if self.platform:
            check_platforms(self.platform)
        check_environment_files(self.environment, {entry.path for entry in self.files})

    def platform_need(self) -> PlatformNeed:
        """Where the shards may run: the ``platform`` list, else where the command can."""
        return task_platforms(self.platform, self.command, self.shell)


@dataclass(frozen=True, slots=True)
class ManifestSpec:
    """A parsed task file before its files are read: the spec (with ``files`` still empty) and
    the declared file and folder names, canonical and relative to the manifest's folder (they
    may overlap: a folder and a file inside it).

    Next step: ``runtime.client.task_files.load_task`` walks ``declared_files`` and calls
    ``with_files``.
    """

    source: str
    spec: TaskSpec
    declared_files: tuple[str, ...]
    environment: EnvironmentRequest | None = None

    def with_files(
        self, entries: Iterable[FileEntry], environment: EnvironmentSpec | None = None
    ) -> TaskSpec:
        """The wire spec with its resolved files (sorted by path, duplicates refused) and
        its resolved environment, whose wheels are among ``entries``."""
        return msgspec.structs.replace(
            self.spec, files=tuple(sorted(entries, key=lambda entry: entry.path)),
            environment=environment,
        )


# --- checks shared by the TOML reader and wire decoding ---------------------------------------


def canonical_path(text: str) -> str:
    """``text`` as a normalised relative POSIX path string; ValueError if it could escape."""
    return str(safe_relative_path(text))


def check_name(name: str) -> None:
    """Names become folder names (``results/<task>/``): letters, digits, `` ._+-``, 1..100."""
    if not _NAME.match(name) or name.endswith((" ", ".")):
        raise ValueError(
            f"task name {name!r} must be 1 to 100 letters, digits, spaces or '._+-', "
            "starting with a letter or digit and not ending with a space or dot"
        )


def check_command(command: tuple[str, ...], shell: bool) -> None:
    if not command:
        raise ValueError("command is empty")
    if shell and len(command) != 1:
        raise ValueError("with shell = true, command must be one string")
    if len(command) > MAX_ARGS:
        raise ValueError(f"command has more than {MAX_ARGS} arguments")
    for arg in command:
        if "\x00" in arg:
            raise ValueError("command contains a NUL character")
        if len(arg) > MAX_ARG_LENGTH:
            raise ValueError(f"a command argument is longer than {MAX_ARG_LENGTH} characters")
    if not command[0].strip():
        raise ValueError("command names no program")


def check_outputs(outputs: tuple[str, ...]) -> None:
    """Output globs must stay inside the shard's working folder and be canonical."""
    if len(outputs) > MAX_PATTERNS:
        raise ValueError(f"more than {MAX_PATTERNS} output patterns")
    for pattern in outputs:
        if canonical_path(pattern) != pattern:
            raise ValueError(f"output pattern {pattern!r} is not in canonical form")


def check_env(env: Mapping[str, str]) -> None:
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"more than {MAX_ENV_VARS} environment variables")
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
        if key in RESERVED_ENV or key.startswith("POOLNET_"):
            raise ValueError(f"{key} is set by PoolNet for each shard and cannot be overridden")
        if "\x00" in value:
            raise ValueError(f"environment variable {key} contains a NUL character")


def check_environment_files(environment: EnvironmentSpec | None, paths: set[str]) -> None:
    """Every wheel the environment names is one of the task's files, and no other file sits
    in the wheel folder (a member keeps those out of the shard's working folder)."""
    wheels = {path for path in paths if is_wheel_path(path)}
    named = {w for entry in environment.platforms for w in entry.wheels} if environment else set()
    if named - paths:
        raise ValueError(f"environment wheel {sorted(named - paths)[0]!r} is not a task file")
    if wheels - named:
        raise ValueError(f"{sorted(wheels - named)[0]!r} is in PoolNet's wheel folder")


def check_file_layout(paths: Iterable[str]) -> None:
    """No path twice, and no file that is also another file's folder (``a`` and ``a/b``)."""
    files: set[str] = set()
    folders: set[str] = set()
    for path in paths:
        if path in files:
            raise ValueError(f"file {path!r} is listed twice")
        files.add(path)
        folders.update(str(parent) for parent in PurePosixPath(path).parents)
    clash = files & folders
    if clash:
        raise ValueError(f"{sorted(clash)[0]!r} is both a file and a folder")


# --- reading task files ------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {"name", "command", "shards", "resources", "files", "outputs", "env", "timeout", "retries",
     "priority", "shell", "matrix", "platform", "requirements", "python"}
)
# Python environments (issue 16).
_RESOURCE_KEYS = frozenset({"cpu", "memory", "gpu", "storage"})


def is_manifest_name(name: str) -> bool:
    """A manifest's file name: ``NAME.pool.toml``, in any case (``Job.POOL.TOML`` too)."""
    return name.lower().endswith(MANIFEST_SUFFIX)


def is_task_name(name: str) -> bool:
    """A file PoolNet can run as a task, judged by its name: a manifest or a known script."""
    return is_manifest_name(name) or PurePosixPath(name).suffix.lower() in _SCRIPT_RUNNERS


def folder_manifest(folder: str, file_names: Iterable[str]) -> str:
    """The one manifest among the files directly inside ``folder``, which then stands for the
    task; a folder with none, or with several (which one was meant?), raises ManifestError
    naming what it holds. The one rule for a dropped folder, the file dialog and the loader."""
    found = sorted(name for name in file_names if is_manifest_name(name))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ManifestError(folder, None, f"holds no {MANIFEST_SUFFIX} manifest")
    shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
    raise ManifestError(folder, None, f"holds {len(found)} manifests ({shown}): choose the one to run")


def manifest_stem(source: str) -> str:
    """``"dir/sweep.pool.toml"`` -> ``"sweep"``: the default task name."""
    base = source.replace("\\", "/").rsplit("/", 1)[-1]
    return base[: -len(MANIFEST_SUFFIX)] if is_manifest_name(base) else base


def parse_manifest(text: bytes, source: str) -> ManifestSpec:
    """Read a ``NAME.pool.toml`` manifest; ``source`` is its file name, quoted in errors.

    Raises ``ManifestError`` for bad TOML, unknown keys, wrong types and out-of-range values;
    nothing is queued for a file that fails here.
    """
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(source, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(source, None, f"not valid TOML: {exc}") from None
    reader = _Reader(source, data)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        known = ", ".join(sorted(_TOP_KEYS))
        raise ManifestError(source, unknown[0], f"unknown key (known: {known})")

    shell = reader.boolean("shell", default=False)
    command = reader.command(shell)
    declared = reader.paths("files")
    outputs = reader.paths("outputs")
    matrix = reader.matrix()
    fields: dict[str, Any] = {
        "name": reader.text("name", default=manifest_stem(source)),
        "command": command,
        "shards": combinations(matrix) if matrix else reader.integer(
            "shards", default=1, low=1, high=MAX_SHARDS
        ),
        "resources": reader.resources(),
        "outputs": outputs,
        "env": reader.env(),
        "timeout": reader.timeout(),
        "retries": reader.integer("retries", default=2, low=0, high=MAX_RETRIES),
        "priority": reader.integer("priority", default=0, low=-MAX_PRIORITY, high=MAX_PRIORITY),
        "shell": shell,
        "matrix": matrix,
        "platform": reader.platform(),
    }
    reader.run_check("name", check_name, fields["name"])
    return ManifestSpec(source, TaskSpec(**fields), declared, reader.environment())


def script_task(filename: str) -> ManifestSpec:
    """A plain script as a one-shard task that ships the script and runs it with the right
    interpreter: ``.py`` with PoolNet's own Python, ``.sh`` with ``sh``, ``.bat`` with
    ``cmd /c`` and ``.ps1`` with PowerShell. ``filename`` is the script's bare file name."""
    suffix = PurePosixPath(filename).suffix.lower()
    runner = _SCRIPT_RUNNERS.get(suffix)
    if runner is None:
        known = ", ".join(sorted(_SCRIPT_RUNNERS))
        raise ManifestError(
            filename, None, f"cannot run a '{suffix or filename}' file: use a script ({known}) "
            f"or a *{MANIFEST_SUFFIX} manifest"
        )
    if "/" in filename or "\\" in filename:
        raise ManifestError(filename, None, "give the script's file name, not a path")
    stem = PurePosixPath(filename).stem
    name = stem if _NAME.match(stem) and not stem.endswith((" ", ".")) else "script"
    spec = TaskSpec(name=name, command=(*runner, filename))
    return ManifestSpec(filename, spec, (filename,))


def inline_task(command: Sequence[str], shards: int = 1) -> ManifestSpec:
    """A one-off command typed on the command line (``poolnet run -- CMD ARGS``) as a task
    of ``shards`` shards that ships no files, named after its program. ``{shard}``,
    ``{shards}`` and ``{python}`` work as in a manifest."""
    source = "the command line"
    if not 1 <= shards <= MAX_SHARDS:
        raise ManifestError(source, None, f"--shards must be between 1 and {MAX_SHARDS}, not {shards}")
    try:
        check_command(tuple(command), shell=False)
    except ValueError as exc:
        raise ManifestError(source, None, str(exc)) from None
    program = command[0].replace("\\", "/").rsplit("/", 1)[-1]
    stem = PurePosixPath(program).stem if program != PYTHON_PLACEHOLDER else "python"
    name = stem if _NAME.match(stem) and not stem.endswith((" ", ".")) else "command"
    return ManifestSpec(source, TaskSpec(name=name, command=tuple(command), shards=shards), ())


def expand_command(
    command: Iterable[str],
    shard: int,
    shards: int,
    values: Mapping[str, MatrixValue] | None = None,
) -> list[str]:
    """The argument list for one shard: ``{shard}``, ``{shards}`` and each of the shard's
    matrix ``values`` (``{rate}``, ``core.matrix.shard_values``) replaced in every argument.
    ``{python}`` is left for the member's runner (``runner.build_argv``), which knows its
    interpreter (a frozen build's differs).

    Plain text replacement of known names in one pass, so other braces (JSON, shell) pass
    through untouched and a value that itself reads ``{shard}`` stays as it is.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range 0..{shards - 1}")
    replacements = {f"{{{name}}}": format_value(value) for name, value in (values or {}).items()}
    replacements[SHARD_PLACEHOLDER] = str(shard)
    replacements[SHARDS_PLACEHOLDER] = str(shards)

    def replace(match: re.Match[str]) -> str:
        return replacements.get(match.group(0), match.group(0))

    return [_PLACEHOLDER.sub(replace, arg) for arg in command]


class _Reader:
    """Typed access to the parsed TOML, turning every fault into a ``ManifestError``."""

    def __init__(self, source: str, data: dict[str, Any]) -> None:
        self.source = source
        self.data = data

    def fail(self, key: str, message: str) -> ManifestError:
        return ManifestError(self.source, key, message)

    def run_check(self, key: str, check: Any, value: Any) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {_show(value)}")
        return value

    def text(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {_show(value)}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {_show(value)}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, not {value}")
        return value

    def command(self, shell: bool) -> tuple[str, ...]:
        if "command" not in self.data:
            raise self.fail("command", "missing: say what to run, e.g. command = ['sh', 'x.sh']")
        value = self.data["command"]
        if isinstance(value, str):
            if not shell:
                raise self.fail(
                    "command",
                    "a single string runs through a shell; write a list of arguments "
                    "(['python', 'x.py']) or set shell = true",
                )
            command: tuple[str, ...] = (value,)
        elif isinstance(value, list) and all(isinstance(arg, str) for arg in value):
            if shell:
                raise self.fail("command", "with shell = true, write the command as one string")
            command = tuple(value)
        else:
            raise self.fail("command", f"must be a list of strings, not {_show(value)}")
        self.run_check("command", lambda c: check_command(c, shell), command)
        return command

    def paths(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, f"must be a list of relative paths, not {_show(value)}")
        if len(value) > MAX_PATTERNS:
            raise self.fail(key, f"more than {MAX_PATTERNS} entries")
        result = []
        for item in value:
            try:
                path = canonical_path(item)
            except UnsafePathError as exc:
                raise self.fail(key, str(exc)) from None
            if path not in result:
                result.append(path)
        return tuple(result)

    def env(self) -> dict[str, str]:
        value = self.data.get("env", {})
        if not isinstance(value, dict):
            raise self.fail("env", f"must be a table of NAME = 'value', not {_show(value)}")
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.fail(f"env.{name}", f"must be a string, not {_show(item)}")
        self.run_check("env", check_env, value)
        return dict(value)

    def timeout(self) -> float | None:
        if "timeout" not in self.data:
            return None
        value = self.data["timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.fail("timeout", f"must be seconds or a duration such as '90s' or '2m', not {_show(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail("timeout", str(exc)) from None
        if not 0 < seconds <= MAX_TIMEOUT_S:
            raise self.fail(
                "timeout", f"must be above 0 and at most {MAX_TIMEOUT_S:.0f} seconds, not {value}"
            )
        return seconds

    def matrix(self) -> tuple[MatrixAxis, ...]:
        """``[matrix]``: names with non-empty lists of values, making at most ``MAX_SHARDS``
        shards. It sets the shard count, so ``shards`` beside it is refused rather than
        guessed at (a product? a check?): a repeat of each combination is one more axis
        (``seed = [1, 2, 3]``)."""
        table = self.data.get("matrix")
        if table is None:
            return ()
        if not isinstance(table, dict):
            raise self.fail(
                "matrix", f"must be a table of name = [values] ([matrix]), not {_show(table)}"
            )
        if not table:
            raise self.fail("matrix", "is empty: list the values to sweep, e.g. seed = [1, 2, 3]")
        if "shards" in self.data:
            raise self.fail(
                "shards", "remove it: [matrix] makes one shard per combination; to repeat "
                "each combination, add an axis such as seed = [1, 2, 3]"
            )
        axes = []
        for name, values in table.items():
            key = f"matrix.{name}"
            self.run_check(key, check_axis_name, name)
            if not isinstance(values, list) or not values:
                raise self.fail(key, f"must be a non-empty list of values, not {_show(values)}")
            for value in values:
                if isinstance(value, (list, dict)) or not isinstance(value, (str, int, float)):
                    raise self.fail(
                        key, f"values must be strings, numbers or booleans, not {_show(value)}"
                    )
                self.run_check(key, lambda v, n=name: check_value(n, v), value)
            axes.append(MatrixAxis(name, tuple(values)))
        self.run_check("matrix", check_matrix, axes)
        total = combinations(axes)
        if total > MAX_SHARDS:
            sizes = " x ".join(str(len(axis.values)) for axis in axes)
            raise self.fail("matrix", f"makes {sizes} = {total} shards, more than {MAX_SHARDS}")
        return tuple(axes)

    def platform(self) -> tuple[str, ...]:
        if "platform" not in self.data:
            return ()
        value = self.data["platform"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail("platform", f"must be a list such as ['linux', 'macos'], not {_show(value)}")
        self.run_check("platform", check_platforms, value)
        return tuple(value)


    def environment(self) -> EnvironmentRequest | None:
        """``requirements`` (a list of lines, or a shipped file's name) and ``python``."""
        python = self.data.get("python")
        if python is not None and (
            not isinstance(python, str) or not re.fullmatch(r"3\.\d{1,2}", python)
        ):
            raise self.fail("python", f"must be a version such as '3.12', not {_show(python)}")
        if "requirements" not in self.data:
            if python is not None:
                raise self.fail("python", "needs requirements: list the packages to install")
            return None
        value = self.data["requirements"]
        if isinstance(value, str):
            try:
                return EnvironmentRequest(requirements_file=canonical_path(value), python=python)
            except UnsafePathError as exc:
                raise self.fail("requirements", str(exc)) from None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(
                "requirements",
                f"must be a list of packages (['numpy>=2']) or a file name, not {_show(value)}",
            )
        self.run_check("requirements", check_requirements, value)
        return EnvironmentRequest(requirements=tuple(value), python=python)

    def resources(self) -> ShardResources:
        table = self.data.get("resources", {})
        if not isinstance(table, dict):
            raise self.fail("resources", f"must be a table ([resources]), not {_show(table)}")
        unknown = sorted(set(table) - _RESOURCE_KEYS)
        if unknown:
            known = ", ".join(sorted(_RESOURCE_KEYS))
            raise self.fail(f"resources.{unknown[0]}", f"unknown key (known: {known})")
        cpu = table.get("cpu", 1.0)
        if isinstance(cpu, bool) or not isinstance(cpu, (int, float)):
            raise self.fail("resources.cpu", f"must be a number of cores, not {_show(cpu)}")
        if not 0 < cpu <= MAX_CPU_CORES:
            raise self.fail(
                "resources.cpu", f"must be above 0 and at most {MAX_CPU_CORES:.0f}, not {cpu}"
            )
        gpu = table.get("gpu", 0)
        if isinstance(gpu, bool) or not isinstance(gpu, int):
            raise self.fail("resources.gpu", f"must be a whole number of GPUs, not {_show(gpu)}")
        if not 0 <= gpu <= MAX_GPUS:
            raise self.fail("resources.gpu", f"must be between 0 and {MAX_GPUS}, not {gpu}")
        return ShardResources(
            cpu=float(cpu),
            memory_mb=self.size("memory", table),
            storage_mb=self.size("storage", table),
            gpus=gpu,
        )

    def size(self, key: str, table: dict[str, Any]) -> float:
        """A size with its unit ("2 GiB"), in MB; a bare number is refused as ambiguous."""
        full_key = f"resources.{key}"
        value = table.get(key, "0 B")
        if not isinstance(value, str) or not _UNIT.search(value):
            raise self.fail(
                full_key, f"write a size with its unit, e.g. '2 GiB', not {_show(value)}"
            )
        try:
            megabytes = parse_size(value) / BYTES_PER_MB
        except ValueError as exc:
            raise self.fail(full_key, str(exc)) from None
        if megabytes > MAX_MEGABYTES:
            raise self.fail(full_key, f"{value!r} is more than any machine has")
        return megabytes


def _show(value: Any) -> str:
    """A value and its TOML type, for error messages."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
             dict: "table"}
    kind = kinds.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"
