"""How long since the owner last touched the keyboard or mouse, where the platform tells.

"In use" for the pause rules (``core.pause.in_use``) means recent input, as BOINC reads it; each
platform's own call is used, so no dependency is added: on Wayland (``WAYLAND_DISPLAY``) GNOME's
Mutter through the session bus (``dbus-send``: Wayland gives plain clients no idle time, and
XWayland's sees only input to X windows), X11's screen-saver extension (libXss, through ctypes)
when ``DISPLAY`` is set, Windows' ``GetLastInputInfo``, macOS's
``CGEventSourceSecondsSinceLastEventType``. Where none answers (no display, a server, another
Wayland desktop) the reading is None and the rules fall back to the CPU load. Blocking, but
quick: the watcher calls it off the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

IdleProbe = Callable[[], float | None]


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds since the last input
        ("event_mask", ctypes.c_ulong),
    ]


@functools.cache
def _x11_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    x11_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if x11_name is None or xss_name is None:
        return None
    try:
        x11, xss = ctypes.CDLL(x11_name), ctypes.CDLL(xss_name)
    except OSError:
        return None
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XFree.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverQueryExtension.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)
    ]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
    return x11, xss


def x11_idle_seconds(display_name: str | None = None) -> float | None:
    """Seconds since the last input on the X display (``DISPLAY`` by default), or None where
    there is no display, no libXss or no screen-saver extension. The display is opened for
    each reading: a connection kept open would make Xlib end this process if the X server went
    away (its default I/O error handler exits)."""
    name = display_name if display_name is not None else os.environ.get("DISPLAY")
    libraries = _x11_libraries()
    if not name or libraries is None:
        return None
    x11, xss = libraries
    display = x11.XOpenDisplay(name.encode())
    if not display:
        return None
    try:
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(display, ctypes.byref(event_base), ctypes.byref(error_base)):
            return None
        info = xss.XScreenSaverAllocInfo()
        if not info:
            return None
        try:
            if not xss.XScreenSaverQueryInfo(display, x11.XDefaultRootWindow(display), info):
                return None
            return float(info.contents.idle) / 1000.0
        finally:
            x11.XFree(info)
    finally:
        x11.XCloseDisplay(display)


def windows_idle_seconds() -> float | None:
    """Seconds since the last input in this Windows session (``GetLastInputInfo``)."""

    class LastInputInfo(ctypes.Structure):
        _fields_ = [("size", ctypes.c_uint), ("time", ctypes.c_uint)]

    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return None
    info = LastInputInfo(ctypes.sizeof(LastInputInfo), 0)
    if not windll.user32.GetLastInputInfo(ctypes.byref(info)):
        return None
    # Both are 32-bit millisecond tick counts: the difference wraps every 49.7 days.
    now: int = windll.kernel32.GetTickCount()
    then: int = info.time
    return ((now - then) & 0xFFFFFFFF) / 1000.0


def macos_idle_seconds() -> float | None:
    """Seconds since the last input event of any kind, system wide (CoreGraphics)."""
    try:
        graphics = ctypes.CDLL("/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics")
    except OSError:
        return None
    seconds_since = graphics.CGEventSourceSecondsSinceLastEventType
    seconds_since.restype = ctypes.c_double
    seconds_since.argtypes = [ctypes.c_int32, ctypes.c_uint32]
    hid_system_state, any_input_event = 1, 0xFFFFFFFF
    return float(seconds_since(hid_system_state, any_input_event))


# GNOME's idle monitor on the session bus: milliseconds since the last input, as a uint64.
MUTTER_IDLE_CALL = (
    "--dest=org.gnome.Mutter.IdleMonitor", "/org/gnome/Mutter/IdleMonitor/Core",
    "org.gnome.Mutter.IdleMonitor.GetIdletime",
)


def wayland_idle_seconds() -> float | None:
    """Seconds since the last input in a Wayland session whose compositor tells (GNOME)."""
    dbus_send = shutil.which("dbus-send")
    if not os.environ.get("WAYLAND_DISPLAY") or dbus_send is None:
        return None
    try:
        done = subprocess.run([dbus_send, "--session", "--print-reply=literal", *MUTTER_IDLE_CALL],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.fullmatch(r"\s*uint64 (\d+)\s*", done.stdout)
    return int(found.group(1)) / 1000.0 if done.returncode == 0 and found else None


def desktop_idle_seconds() -> float | None:
    """A Linux (or BSD) desktop's reading: Wayland's where it answers, else X11's."""
    seconds = wayland_idle_seconds()
    return seconds if seconds is not None else x11_idle_seconds()


def idle_probe() -> IdleProbe:
    """This platform's reading of the time since the last input."""
    if sys.platform == "win32":
        return windows_idle_seconds
    if sys.platform == "darwin":
        return macos_idle_seconds
    return desktop_idle_seconds
