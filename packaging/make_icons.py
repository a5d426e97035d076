"""Render resources/icons/poolnet.svg to the PNG sizes, a Windows .ico and a macOS .icns.

Run after changing the SVG: ``.venv/bin/python packaging/make_icons.py``; commit the results.
``--out DIR`` writes them elsewhere (the tests compare a fresh set with the committed one).
Qt's own SVG renderer (PySide6 QtSvg, already a dependency) draws the PNGs; the .ico and
.icns are containers of PNG images, written here with ``struct`` so no imaging library is
needed. The output is byte-for-byte reproducible, so rerunning makes no spurious diff.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # the hicolor theme's usual sizes
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # 256 is the largest an .ico entry can hold
# .icns element types holding PNG data, by pixel size (Apple's icns format, macOS 10.7+).
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09", 1024: b"ic10"}


def render_png(renderer: QSvgRenderer, size: int) -> bytes:
    """The SVG drawn on a transparent ``size`` x ``size`` canvas, as PNG bytes."""
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


def ico(pngs: dict[int, bytes]) -> bytes:
    """An .ico file whose entries are PNG images (Windows Vista and later read these)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    directory, images = b"", b""
    for size, png in sorted(pngs.items()):
        # A width or height of 0 means 256; 32 bits per pixel, one plane, no palette.
        directory += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(png), offset)
        images += png
        offset += len(png)
    return header + directory + images


def icns(pngs: dict[int, bytes]) -> bytes:
    """An .icns file: the magic and total length, then (type, length, PNG) elements."""
    body = b"".join(ICNS_TYPES[size] + struct.pack(">I", 8 + len(png)) + png for size, png in sorted(pngs.items()))
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render poolnet.svg to PNGs, .ico and .icns.")
    parser.add_argument("--out", type=Path, default=ICONS, help=f"output folder (default {ICONS})")
    out = parser.parse_args(argv).out
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # QImage text/fonts need one
    renderer = QSvgRenderer(str(ICONS / "poolnet.svg"))
    if not renderer.isValid():
        print(f"cannot read {ICONS / 'poolnet.svg'}", file=sys.stderr)
        return 1
    pngs = {size: render_png(renderer, size) for size in sorted({*PNG_SIZES, *ICO_SIZES, *ICNS_TYPES})}
    out.mkdir(parents=True, exist_ok=True)
    for size in PNG_SIZES:
        (out / f"poolnet-{size}.png").write_bytes(pngs[size])
    (out / "poolnet.ico").write_bytes(ico({size: pngs[size] for size in ICO_SIZES}))
    (out / "poolnet.icns").write_bytes(icns({size: pngs[size] for size in ICNS_TYPES}))
    print(f"wrote {len(PNG_SIZES)} PNGs, poolnet.ico and poolnet.icns in {out}")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
