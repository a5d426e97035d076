"""packaging/safe_strip.py on real libraries: numpy's OpenBLAS, which a plain ``strip`` breaks
(the installed app's empty Dashboard), and an ordinary extension module, which it may strip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))
from safe_strip import loader_view, loads_the_same, strip_where_safe  # noqa: E402

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("strip") is None, reason="ELF libraries and binutils' strip: Linux only"
)


def openblas() -> Path:
    found = sorted((Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*.so"))
    if not found:
        pytest.skip("this numpy carries no bundled OpenBLAS")
    return found[0]


def psutil_extension() -> Path:
    [found] = Path(psutil.__file__).parent.glob("_psutil_linux*.so")
    return found


def load_error(library: Path) -> str:
    """What the dynamic loader says when a fresh Python loads ``library`` ('' if it loads)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(library)],
        capture_output=True, text=True, timeout=60,
    )
    return loaded.stderr.strip().splitlines()[-1] if loaded.returncode else ""


def test_plain_strip_breaks_openblas_and_the_check_sees_it(tmp_path: Path) -> None:
    original = openblas()
    stripped = tmp_path / original.name
    subprocess.run(["strip", "-o", str(stripped), str(original)], check=True)
    assert "not page-aligned" in load_error(stripped)
    assert load_error(original) == ""
    assert not loads_the_same(original.read_bytes(), stripped.read_bytes())


def test_strip_where_safe_strips_the_ordinary_and_keeps_openblas(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    # OpenBLAS with the libraries it loads from beside it (libgfortran, libquadmath).
    shutil.copytree(openblas().parent, bundle / "numpy.libs")
    blas = bundle / "numpy.libs" / openblas().name
    extension = Path(shutil.copy2(psutil_extension(), bundle))
    before = {path: path.read_bytes() for path in (blas, extension)}

    report = strip_where_safe(bundle)

    assert f"numpy.libs/{blas.name}" in report.kept
    assert blas.read_bytes() == before[blas]
    assert len(extension.read_bytes()) < len(before[extension])
    assert report.stripped >= 1 and report.saved_bytes >= len(before[extension]) - len(extension.read_bytes())
    assert loads_the_same(before[extension], extension.read_bytes())
    assert load_error(extension) == "" and load_error(blas) == ""


def test_loader_view_refuses_what_is_not_elf() -> None:
    with pytest.raises(ValueError, match="not an ELF file"):
        loader_view(b"#!/bin/sh\necho not a library\n" * 4)
