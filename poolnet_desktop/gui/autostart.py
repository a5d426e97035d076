"""Start PoolNet when the user logs in, through each desktop's own mechanism.

Linux desktops read an XDG autostart entry (``~/.config/autostart/poolnet.desktop``), Windows
the current user's ``Run`` key, macOS a LaunchAgent. The entry itself is the setting: the
checkbox shows whether it exists, so removing it by hand (or from the system's own settings
panel) is seen too. PoolNet starts minimised to the tray from there.
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path

APP_NAME = "PoolNet"
_LAUNCH_AGENT = "org.poolnet.PoolNet"
_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def launch_command() -> list[str]:
    """The argv that starts this same installation's window, minimised."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--minimised"]
    script = Path(sys.executable).with_name("poolnet-desktop.exe" if os.name == "nt" else "poolnet-desktop")
    if script.exists():
        return [str(script), "--minimised"]
    return [sys.executable, "-m", "poolnet_desktop.app", "--minimised"]


class Autostart:
    """Whether PoolNet starts at login, read from and written to the platform's own place."""

    def __init__(self, platform: str = sys.platform, home: Path | None = None) -> None:
        self._platform = platform
        self._home = home if home is not None else Path.home()

    @property
    def entry(self) -> Path | None:
        """The file that makes it start (None on Windows, where it is a registry value)."""
        if self._platform == "win32":
            return None
        if self._platform == "darwin":
            return self._home / "Library" / "LaunchAgents" / f"{_LAUNCH_AGENT}.plist"
        config = os.environ.get("XDG_CONFIG_HOME") or str(self._home / ".config")
        return Path(config) / "autostart" / "poolnet.desktop"

    def enabled(self) -> bool:
        if self._platform == "win32":
            return self._windows_command() is not None
        entry = self.entry
        return entry is not None and entry.exists()

    def set(self, on: bool) -> None:
        """Create or remove the entry; raises OSError when the place cannot be written."""
        command = launch_command()
        if self._platform == "win32":
            self._set_windows(subprocess.list2cmdline(command) if on else None)
            return
        entry = self.entry
        assert entry is not None
        if not on:
            entry.unlink(missing_ok=True)
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        if self._platform == "darwin":
            entry.write_bytes(plistlib.dumps({"Label": _LAUNCH_AGENT, "ProgramArguments": command, "RunAtLoad": True}))
        else:
            entry.write_text(desktop_entry(command))

    def _windows_command(self) -> str | None:
        if sys.platform != "win32":  # the Run key exists on Windows only
            return None
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY) as key:
                return str(winreg.QueryValueEx(key, APP_NAME)[0])
        except OSError:
            return None

    def _set_windows(self, line: str | None) -> None:
        if sys.platform != "win32":
            raise OSError("the Run key exists on Windows only")
        import winreg

        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, _RUN_KEY) as key:
            if line is not None:
                winreg.SetValueEx(key, APP_NAME, 0, winreg.REG_SZ, line)
            elif self._windows_command() is not None:
                winreg.DeleteValue(key, APP_NAME)


def desktop_entry(command: list[str]) -> str:
    """An XDG autostart entry running ``command``."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={APP_NAME}\n"
        "Comment=Share this computer in your PoolNet pool\n"
        f"Exec={' '.join(_exec_quoted(arg) for arg in command)}\n"
        "Icon=poolnet\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def _exec_quoted(arg: str) -> str:
    """One Exec argument as the Desktop Entry spec quotes it: in double quotes with ``"``,
    backtick, ``$`` and backslash escaped, where it holds a reserved character; ``%`` doubled."""
    arg = arg.replace("%", "%%")
    if not re.search(r"""[\s"'\\><~|&;$*?#()`]""", arg):
        return arg
    return '"' + re.sub(r'(["`$\\])', r"\\\1", arg) + '"'
