"""safe_relative_path: the one gate for shipped files and outputs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.paths import MAX_PATH_LENGTH, UnsafePathError, safe_relative_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.txt", "a.txt"),
        ("data/in/a.csv", "data/in/a.csv"),
        ("./a//b/", "a/b"),
        ("a/./b/../c", "a/c"),
        ("data\\win\\a.csv", "data/win/a.csv"),
        ("a/b/../../c", "c"),
        ("name with spaces/ü.txt", "name with spaces/ü.txt"),
        ("..hidden", "..hidden"),
    ],
)
def test_accepts_and_normalises(text: str, expected: str) -> None:
    assert safe_relative_path(text) == PurePosixPath(expected)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        (".", "names no file"),
        ("a/..", "names no file"),
        ("/etc/passwd", "absolute"),
        ("\\\\server\\share\\x", "absolute"),
        ("\\x", "absolute"),
        ("..", "escapes"),
        ("../x", "escapes"),
        ("a/../../x", "escapes"),
        ("..\\..\\x", "escapes"),
        ("C:\\Windows\\x", "drive letter"),
        ("c:x", "drive letter"),
        ("z:/x", "drive letter"),
        ("./C:x", "drive letter"),
        ("a/../C:\\x", "drive letter"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_PATH_LENGTH + 1), "longer than"),
        ("a/" + "y" * 256, "component longer"),
    ],
)
def test_refuses_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(UnsafePathError, match=why):
        safe_relative_path(text)


def test_refuses_non_text() -> None:
    with pytest.raises(UnsafePathError, match="must be text"):
        safe_relative_path(b"a.txt")  # type: ignore[arg-type]


def test_error_is_a_value_error() -> None:
    assert issubclass(UnsafePathError, ValueError)


@given(st.text(alphabet="ab./\\:C\x00", max_size=20))
def test_any_accepted_path_stays_inside(text: str) -> None:
    """Whatever is accepted, joined to a root, never climbs out of it or is absolute."""
    try:
        rel = safe_relative_path(text)
    except UnsafePathError:
        return
    assert not rel.is_absolute()
    assert ".." not in rel.parts and "." not in rel.parts
    assert "\\" not in str(rel) and "\x00" not in str(rel)
    assert str(rel) and not re.match(r"[A-Za-z]:", str(rel))
    assert safe_relative_path(str(rel)) == rel
