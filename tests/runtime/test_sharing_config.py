"""The pause rules file in the data folder: written whole, read back, refused clearly."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from poolnet_desktop.cli import build_parser
from poolnet_desktop.commands.join import pause_rules
from poolnet_desktop.core.pause import PauseRules
from poolnet_desktop.runtime.member.sharing_config import (
    SHARING_FILE,
    SharingConfigError,
    read_pause_rules,
    write_pause_rules,
)


def test_rules_written_are_read_back_and_no_file_means_the_defaults(tmp_path: Path) -> None:
    assert read_pause_rules(tmp_path) == PauseRules()
    rules = PauseRules(when_in_use=True, in_use_threshold=55.5, on_battery=True, idle_minutes=0.5)
    write_pause_rules(tmp_path, rules)
    assert read_pause_rules(tmp_path) == rules
    assert [p.name for p in tmp_path.iterdir()] == [SHARING_FILE]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("idle_minutes = 'three'", "idle_minutes must be a number"),
        ("pause_on_battery = 1", "pause_on_battery must be true or false"),
        ("busy_percent = 150", "busy_percent must be above 0 and at most 100"),
        ("idle_minutes = 0", "idle_minutes must be above 0"),
        ("pause_when_idle = true", "unknown setting 'pause_when_idle'"),
        ("idle_minutes = ", "sharing.toml"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_the_setting(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / SHARING_FILE).write_text(text + "\n")
    with pytest.raises(SharingConfigError) as raised:
        read_pause_rules(tmp_path)
    message = str(raised.value)
    assert says in message and str(tmp_path / SHARING_FILE) in message and "\n" not in message


def join_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["join", "127.0.0.1:3000", *flags])


def test_join_takes_the_files_rules_and_its_flags_override_them(tmp_path: Path) -> None:
    write_pause_rules(tmp_path, PauseRules(when_in_use=True, in_use_threshold=20.0, on_battery=True, idle_minutes=4.0))
    assert pause_rules(join_args(), tmp_path) == PauseRules(True, 20.0, True, 4.0)
    assert pause_rules(join_args("--pause-when-busy", "70", "--idle-minutes", "9"), tmp_path) == PauseRules(
        True, 70.0, True, 9.0)
    assert pause_rules(join_args("--no-pause-when-busy", "--no-pause-on-battery"), tmp_path) == PauseRules(
        False, 20.0, False, 4.0)
