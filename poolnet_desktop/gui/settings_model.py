"""The app's preferences, kept with QSettings so they survive a restart of the window.

``Preferences`` is one immutable value holding every setting; ``SettingsStore`` reads it from and
writes it to a ``QSettings`` and emits ``changed`` with the new value, so the bridge and the
pages react to one signal instead of one per key. Tests pass an INI file under ``tmp_path``.
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
    in_use_threshold: float = 40.0  # other programs' CPU, in percent of the whole machine
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
        return PauseRules(self.pause_when_in_use, self.in_use_threshold, self.pause_on_battery)

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
        if new == self._prefs:
            return new
        self._prefs = new
        for name, value in asdict(new).items():
            self._settings.setValue(name, value)
        self._settings.sync()
        self.changed.emit(new)
        return new

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
        return replace(_DEFAULTS, **values)


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
