"""The app's preferences, kept with QSettings so they survive a restart of the window.

``Preferences`` is one immutable value holding every setting; ``SettingsStore`` reads it from and
writes it to a ``QSettings`` and emits ``changed`` with the new value, so the bridge and the
pages react to one signal instead of one per key. Tests pass an INI file under ``tmp_path``.

The pause rules are also kept in the data folder's ``sharing.toml`` (``runtime.member.sharing_config``),
which ``poolnet join`` reads: the file wins when the window starts, and every change made here
is written to it, so the window and the CLI pause by one rule.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QObject, QSettings, Signal

from poolnet_desktop.core.environment import DEFAULT_CACHE_LIMIT
from poolnet_desktop.core.pause import PauseRules
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.runtime.datadir import default_data_dir
from poolnet_desktop.runtime.member.sharing_config import (
    SHARING_FILE,
    SharingConfigError,
    read_pause_rules,
    write_pause_rules,
)


@dataclass(frozen=True)
class Preferences:
    """Everything the user can set; the defaults are those of a first start.

    ``host_port`` 0 takes any free port (tests); ``pool_address`` is the pool this machine
    joins when it does not host one itself; ``data_dir`` empty means the platform's folder.
    """

    host_pool: bool = False
    host_port: int = 3000
    pool_address: str = ""
    device_name: str = socket.gethostname()
    cpu_percent: float = 80.0
    memory_percent: float = 80.0
    storage_percent: float = 50.0
    share_gpu: bool = True
    accept_tasks: bool = True
    task_network: bool = True  # tasks may use the network
    allow_unsandboxed: bool = False  # run tasks where no sandbox can be made
    env_cache_gb: float = DEFAULT_CACHE_LIMIT / 1e9  # room for tasks' Python environments
    pause_when_in_use: bool = False
    idle_minutes: float = 3.0  # in use: keyboard or mouse input this recently
    in_use_threshold: float = 40.0  # where input cannot be read: other programs' CPU, in percent
    pause_on_battery: bool = True
    start_minimised: bool = False
    discovery: bool = True
    data_dir: str = ""

    @property
    def limits(self) -> SharingLimits:
        return SharingLimits(
            cpu_percent=self.cpu_percent,
            memory_percent=self.memory_percent,
            storage_percent=self.storage_percent,
            gpu=self.share_gpu,
        )

    @property
    def env_cache_limit(self) -> int:
        """The environment cache's limit in bytes."""
        return int(self.env_cache_gb * 1e9)

    @property
    def pause_rules(self) -> PauseRules:
        return PauseRules(self.pause_when_in_use, self.in_use_threshold, self.pause_on_battery, self.idle_minutes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()


log = logging.getLogger(__name__)
_DEFAULTS = Preferences()
_TYPES: dict[str, type] = {f.name: type(getattr(_DEFAULTS, f.name)) for f in fields(Preferences)}
_GEOMETRY = "window/geometry"
_PAGE = "window/page"


class SettingsStore(QObject):
    """Reads and writes ``Preferences``; ``changed`` carries the new value after ``update``."""

    changed = Signal(object)  # Preferences

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings if settings is not None else QSettings("PoolNet", "PoolNet")
        self._prefs = self._load()

    @property
    def prefs(self) -> Preferences:
        return self._prefs

    def update(self, **changes: Any) -> Preferences:
        """Apply ``changes`` (field names of ``Preferences``), save them, and emit ``changed``
        if anything differs. Raises ``TypeError`` for an unknown name."""
        new = replace(self._prefs, **changes)
        if new.data_path != self._prefs.data_path:
            new = _with_rules_of_folder(new)  # another data folder: its own rules, if it has some
        if new == self._prefs:
            return new
        old, self._prefs = self._prefs, new
        for name, value in asdict(new).items():
            self._settings.setValue(name, value)
        self._settings.sync()
        if (old.pause_rules, old.data_path) != (new.pause_rules, new.data_path):
            self._write_pause_rules()
        self.changed.emit(new)
        return new

    def share_pause_rules(self) -> None:
        """Write the pause rules to a data folder that has none yet, so ``poolnet join`` there
        pauses as the window does. Called once the data folder is made (and an old one moved)."""
        if not (self._prefs.data_path / SHARING_FILE).exists():
            self._write_pause_rules()

    def _write_pause_rules(self) -> None:
        folder = self._prefs.data_path
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_pause_rules(folder, self._prefs.pause_rules)
        except OSError as exc:
            log.warning("cannot save the pause rules for poolnet join in %s: %s", folder, exc)

    def window_layout(self) -> tuple[QByteArray | None, int]:
        """Where the window was and which page it showed when it was last hidden (none on a
        first start). Kept beside the preferences, not among them: nobody sets them by hand."""
        geometry = self._settings.value(_GEOMETRY)
        try:
            page = int(self._settings.value(_PAGE, 0))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            page = 0
        return (geometry if isinstance(geometry, QByteArray) and not geometry.isEmpty() else None), page

    def save_window_layout(self, geometry: QByteArray, page: int) -> None:
        self._settings.setValue(_GEOMETRY, geometry)
        self._settings.setValue(_PAGE, page)
        self._settings.sync()

    def _load(self) -> Preferences:
        values: dict[str, Any] = {}
        for name, kind in _TYPES.items():
            if self._settings.contains(name):
                try:
                    values[name] = _convert(self._settings.value(name), kind)
                except ValueError:  # a hand-edited file: keep the default
                    log.warning("ignoring the setting %s=%r: not a %s", name, self._settings.value(name), kind.__name__)
        return _with_rules_of_folder(replace(_DEFAULTS, **values))


def _with_rules_of_folder(prefs: Preferences) -> Preferences:
    """``prefs`` with the pause rules of its data folder's file, where it has a readable one."""
    try:
        rules = read_pause_rules(prefs.data_path, prefs.pause_rules)
    except SharingConfigError as exc:
        log.warning("ignoring the pause rules file: %s", exc)
        return prefs
    return replace(prefs, pause_when_in_use=rules.when_in_use, idle_minutes=rules.idle_minutes,
                   in_use_threshold=rules.in_use_threshold, pause_on_battery=rules.on_battery)


def _convert(raw: object, kind: type) -> Any:
    """A stored value as ``kind``. INI files give strings back, and QSettings' own conversion
    turns a bad number into 0 silently, so the conversion is done here, strictly."""
    if type(raw) is kind:
        return raw
    text = str(raw).strip()
    if kind is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(text)
    return kind(text)
