"""The .deb, end to end on this machine: build it with the one command, ``dpkg -i`` it, start
the installed app and see its Dashboard's tiles and charts, host a pool with the installed
``poolnet`` and run a ``.py`` task using numpy on the bundle's own interpreter with no Python on
the PATH, then ``dpkg -r`` it and find nothing left.

The package is built once per session (about 1-2 minutes) and removed at the end even when a
test fails. It refuses to touch a ``poolnet`` package that was installed before the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = Path("/opt/poolnet")
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
CODE = "TEST-CODE"

# The build alone takes 1-2 minutes on two busy cores: past the suite-wide 120 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _installed() -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "poolnet"], capture_output=True, text=True)
    return "install ok installed" in status.stdout


def _skip_reason() -> str | None:
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        return "dpkg-deb/dpkg not found: the .deb builds and installs on Debian or Ubuntu only"
    if os.geteuid() != 0:
        return "dpkg -i needs root"
    if importlib.util.find_spec("PyInstaller") is None:
        return "PyInstaller is not installed: pip install -e '.[packaging]'"
    if _installed():
        return "a poolnet package is already installed; this test will not replace it (dpkg -r poolnet)"
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Build and install the .deb; yields the paths ``dpkg -L`` lists, and removes it after."""
    if reason := _skip_reason():
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("build")
    env = dict(os.environ, PYTHON=sys.executable, DIST_DIR=str(work / "dist"), WORK_DIR=str(work / "build"))
    with (work / "build.log").open("w") as out:
        built = subprocess.run(
            [str(ROOT / "packaging" / "build_deb.sh")], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600
        )
    assert built.returncode == 0, (work / "build.log").read_text()[-4000:]
    [deb] = (work / "dist").glob("poolnet_*.deb")
    install = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True, timeout=120)
    try:
        assert install.returncode == 0, install.stderr
        listed = subprocess.run(["dpkg", "-L", "poolnet"], capture_output=True, text=True, check=True)
        yield [Path(line) for line in listed.stdout.splitlines() if line.startswith("/")]
    finally:
        if _installed():
            subprocess.run(["dpkg", "-r", "poolnet"], capture_output=True, timeout=120)


def bare_environment(home: Path) -> dict[str, str]:
    """No Python anywhere on the PATH, nothing inherited from this test's virtualenv; only
    bubblewrap, the .deb's dependency that members run shards in."""
    bare = home / "bare-bin"
    bare.mkdir(exist_ok=True)
    bwrap = shutil.which("bwrap")
    if bwrap is not None and not (bare / "bwrap").exists():
        (bare / "bwrap").symlink_to(bwrap)
    return {"PATH": str(bare), "HOME": str(home), "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_files_are_where_the_desktop_looks(installed: list[Path]) -> None:
    for command in ("poolnet", "poolnet-desktop"):
        assert Path("/usr/bin", command).resolve() == PREFIX / command
    entry = Path("/usr/share/applications/poolnet.desktop").read_text()
    assert "Exec=poolnet-desktop" in entry and "Icon=poolnet" in entry
    for size in ICON_SIZES:
        assert Path(f"/usr/share/icons/hicolor/{size}x{size}/apps/poolnet.png") in installed
    assert Path("/usr/share/icons/hicolor/scalable/apps/poolnet.svg").is_file()
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", "/usr/share/applications/poolnet.desktop"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_installed_app_shows_its_window(installed: list[Path], tmp_path: Path) -> None:
    env = bare_environment(tmp_path)
    options = ["--no-discovery", "--data-dir", str(tmp_path / "data"), "--settings", str(tmp_path / "settings.ini")]
    probe = str(ROOT / "packaging" / "window_probe.py")
    shown = subprocess.run(
        [str(PREFIX / "poolnet-desktop"), "--poolnet-run-python", probe, *options],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0 and "window-shown PoolNet" in shown.stdout, shown.stderr

    # The real entry point, as the menu starts it: it runs until asked to quit, then quits cleanly.
    app = subprocess.Popen(["/usr/bin/poolnet-desktop", *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        running = app.poll() is None
        app.send_signal(signal.SIGTERM)
        _, errors = app.communicate(timeout=15)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert running and app.returncode == 0, errors
    assert "Traceback" not in errors, errors


def test_installed_dashboard_shows_its_tiles_and_charts(installed: list[Path], tmp_path: Path) -> None:
    # The charts import pyqtgraph and numpy in a Qt slot after the window shows: a bundled
    # library that fails to load there left an empty dashboard and a traceback nobody saw.
    options = ["--no-discovery", "--data-dir", str(tmp_path / "data"), "--settings", str(tmp_path / "settings.ini")]
    probe = str(ROOT / "packaging" / "dashboard_probe.py")
    shown = subprocess.run(
        [str(PREFIX / "poolnet-desktop"), "--poolnet-run-python", probe, *options],
        env=bare_environment(tmp_path), capture_output=True, text=True, timeout=90,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "dashboard tiles=6 charts=5" in shown.stdout, shown.stdout + shown.stderr
    assert "Error" not in shown.stderr, shown.stderr


def test_bundled_python_computes_with_numpy(installed: list[Path], tmp_path: Path) -> None:
    # A task's numpy is the bundle's: its linear algebra loads the bundled OpenBLAS.
    code = "import numpy; print(numpy.linalg.det(numpy.diag([1.0, 2.0, 3.0, 4.0])).round(6))"
    ran = subprocess.run(
        [str(PREFIX / "poolnet"), "--poolnet-run-python", "-c", code],
        env=bare_environment(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "24.0", ran.stdout + ran.stderr


def test_the_installed_member_runs_the_lane_launcher_built_from_c(installed: list[Path], tmp_path: Path) -> None:
    """The bundle carries the launcher's build and the C text whose hash names it, where the
    member looks for them: its lanes do not fall back to the Python launcher."""
    code = "from poolnet_desktop.runtime.member import native_launcher; print(native_launcher.find())"
    ran = subprocess.run(
        [str(PREFIX / "poolnet"), "--poolnet-run-python", "-c", code],
        env=bare_environment(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    build = Path(ran.stdout.strip())
    assert build.is_relative_to(PREFIX) and os.access(build, os.X_OK), ran.stdout


TASK = '''\
import json, os, statistics, sys
import numpy
os.makedirs("out", exist_ok=True)
report = {"executable": sys.executable, "frozen": getattr(sys, "frozen", False),
          "shard": int(sys.argv[1]), "mean": statistics.mean([1, 2, 3, 4]),
          "product": float(numpy.linalg.det(numpy.diag([1.0, 2.0, 3.0, 4.0])).round(6))}
with open(f"out/shard-{sys.argv[1]}.json", "w") as out:
    json.dump(report, out)
'''
MANIFEST = '''\
name = "bundled-python"
command = ["{python}", "probe.py", "{shard}"]
shards = 2
files = ["probe.py"]
outputs = ["out/*.json"]
timeout = 60
'''


def test_installed_pool_runs_a_py_task_on_the_bundled_python(installed: list[Path], tmp_path: Path) -> None:
    env = bare_environment(tmp_path)
    port, data = free_port(), tmp_path / "host"
    (tmp_path / "probe.py").write_text(TASK)
    (tmp_path / "probe.pool.toml").write_text(MANIFEST)
    host = subprocess.Popen(
        ["/usr/bin/poolnet", "host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery",
         "--data-dir", str(data)],
        env={**env, "POOLNET_PAIRING_CODE": CODE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert host.stdout is not None
        first = host.stdout.readline()
        assert "is up at" in first, first
        submitted = subprocess.run(
            ["/usr/bin/poolnet", "submit", "probe.pool.toml", "--wait", "--results", "results",
             "--url", f"wss://127.0.0.1:{port}/ws", "--data-dir", str(data)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    finally:
        host.send_signal(signal.SIGTERM)
        host.communicate(timeout=20)

    reports = [json.loads(path.read_text()) for path in sorted((tmp_path / "results").rglob("shard-*.json"))]
    assert [report["shard"] for report in reports] == [0, 1]
    for report in reports:
        assert report["frozen"] is True
        assert Path(report["executable"]).parent == PREFIX
        assert report["mean"] == 2.5  # statistics: a module the app never imports itself
        assert report["product"] == 24.0  # numpy's linear algebra: the bundled OpenBLAS


def test_removal_leaves_nothing_behind(installed: list[Path], tmp_path: Path) -> None:
    # Runs last in this module: it removes the package the fixture installed.
    removed = subprocess.run(["dpkg", "-r", "poolnet"], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    left = [path for path in installed if path.is_symlink() or (path.exists() and not path.is_dir())]
    assert left == []
    assert not PREFIX.exists(), sorted(str(p) for p in PREFIX.rglob("*"))[:20]
    assert not _installed()
