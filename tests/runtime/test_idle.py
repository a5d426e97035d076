"""The time since the last keyboard or mouse input, read from a real X server (Xvfb) and from
a session bus as a GNOME Wayland session serves it."""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolnet_desktop.runtime.member.idle import desktop_idle_seconds, wayland_idle_seconds, x11_idle_seconds
from tests.conftest import linux_only

pytestmark = linux_only("X11 (Xvfb) and D-Bus desktops are tested on Linux")


def free_display() -> int:
    """A display number no X server here uses."""
    for number in range(150, 400):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    pytest.skip("no free X display number")


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb (unix socket only, no TCP), ended by its PID. ``-noreset``: a desktop's
    X server has clients all along; this one would reset (and its idle time with it) each time
    its last client, the probe, disconnects."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    number = free_display()
    server = subprocess.Popen(["Xvfb", f":{number}", "-nolisten", "tcp", "-noreset"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            assert server.poll() is None, "Xvfb ended at start"
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def move_the_pointer(display_name: str) -> None:
    """Input as a person's mouse gives it, through the XTest extension."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    handle = x11.XOpenDisplay(display_name.encode())
    assert handle
    xtst.XTestFakeMotionEvent(handle, -1, 40, 60, 0)
    x11.XFlush(handle)
    x11.XCloseDisplay(handle)


def test_idle_time_grows_without_input_and_restarts_at_a_pointer_move(display: str) -> None:
    first = x11_idle_seconds(display)
    assert first is not None
    time.sleep(1.2)
    later = x11_idle_seconds(display)
    assert later is not None and later >= first + 1.0
    time.sleep(1.2)
    latest = x11_idle_seconds(display)  # reading it is no input: it goes on growing
    assert latest is not None and latest >= later + 1.0
    move_the_pointer(display)
    after_input = x11_idle_seconds(display)
    assert after_input is not None and after_input < later


def test_no_reading_without_an_x_server(monkeypatch: pytest.MonkeyPatch) -> None:
    number = free_display()
    assert x11_idle_seconds(f":{number}") is None
    monkeypatch.delenv("DISPLAY", raising=False)
    assert x11_idle_seconds() is None


# GNOME's compositor cannot run here: this stand-in serves its idle monitor's one call on a
# private session bus, as Mutter does (milliseconds since the last input, a uint64).
MUTTER_STAND_IN = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Slot
from PySide6.QtDBus import QDBusConnection

class IdleMonitor(QObject):
    @Slot(result="qulonglong")
    def GetIdletime(self):
        return int(sys.argv[1])

app = QCoreApplication(sys.argv)
bus = QDBusConnection.sessionBus()
monitor = IdleMonitor()
assert bus.registerService("org.gnome.Mutter.IdleMonitor"), bus.lastError().message()
assert bus.registerObject("/org/gnome/Mutter/IdleMonitor/Core", "org.gnome.Mutter.IdleMonitor", monitor,
                          QDBusConnection.RegisterOption.ExportAllSlots)
print("ready", flush=True)
app.exec()
"""


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private D-Bus session bus (dbus-daemon), ended by its PID; this process uses it."""
    if shutil.which("dbus-daemon") is None or shutil.which("dbus-send") is None:
        pytest.skip("dbus-daemon and dbus-send are not installed")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", daemon.stdout.readline().strip())
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-poolnet-test")
        monkeypatch.delenv("DISPLAY", raising=False)
        yield
    finally:
        daemon.terminate()
        daemon.communicate(timeout=10)


def test_a_gnome_wayland_session_tells_the_idle_time_over_the_session_bus(session_bus: None) -> None:
    assert desktop_idle_seconds() is None  # no compositor on the bus: no reading (the CPU decides)
    mutter = subprocess.Popen([sys.executable, "-c", MUTTER_STAND_IN, "4321"], stdout=subprocess.PIPE, text=True)
    try:
        assert mutter.stdout is not None and mutter.stdout.readline() == "ready\n"
        assert wayland_idle_seconds() == 4.321
        assert desktop_idle_seconds() == 4.321
    finally:
        mutter.terminate()
        mutter.communicate(timeout=10)
