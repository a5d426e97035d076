"""The icon files made by packaging/make_icons.py and the task standard library list; fast,
no build. The committed icons are checked, and regenerated elsewhere to prove they are current."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ICONS = ROOT / "resources" / "icons"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

sys.path.insert(0, str(ROOT / "packaging"))
from task_stdlib import task_stdlib  # noqa: E402


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return struct.unpack(">II", data[16:24])


def test_pngs_have_their_sizes() -> None:
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        assert png_size((ICONS / f"poolnet-{size}.png").read_bytes()) == (size, size)


def test_ico_directory_points_at_pngs() -> None:
    data = (ICONS / "poolnet.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind, count) == (0, 1, 7)
    sizes = []
    for i in range(count):
        width, height, _, _, planes, bits, length, offset = struct.unpack("<BBBBHHII", data[6 + 16 * i: 22 + 16 * i])
        assert png_size(data[offset:offset + length]) == (width or 256, height or 256)
        sizes.append(width or 256)
    assert sizes == [16, 24, 32, 48, 64, 128, 256]


def test_icns_elements_are_sized_pngs() -> None:
    data = (ICONS / "poolnet.icns").read_bytes()
    assert data[:4] == b"icns" and struct.unpack(">I", data[4:8])[0] == len(data)
    found, at = {}, 8
    while at < len(data):
        kind, length = data[at:at + 4], struct.unpack(">I", data[at + 4:at + 8])[0]
        found[kind] = png_size(data[at + 8:at + length])[0]
        at += length
    assert found == {b"icp4": 16, b"icp5": 32, b"icp6": 64, b"ic07": 128, b"ic08": 256, b"ic09": 512, b"ic10": 1024}


def test_committed_icons_match_the_svg(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    make = [sys.executable, str(ROOT / "packaging" / "make_icons.py"), "--out", str(tmp_path)]
    subprocess.run(make, env=env, check=True, capture_output=True, timeout=60)
    for fresh in tmp_path.iterdir():
        assert fresh.read_bytes() == (ICONS / fresh.name).read_bytes(), "run packaging/make_icons.py and commit"
    assert len(list(tmp_path.iterdir())) == 10


def test_task_stdlib_has_what_scripts_import_and_no_tk() -> None:
    names = set(task_stdlib())
    assert {"statistics", "csv", "json", "email.mime.text", "concurrent.futures", "sqlite3", "multiprocessing.pool"} <= names
    assert not {name for name in names if name.split(".")[0] in ("tkinter", "idlelib", "test", "lib2to3")}
    assert not {name for name in names if ".test." in f".{name}." or name.endswith((".tests", ".idle_test"))}
