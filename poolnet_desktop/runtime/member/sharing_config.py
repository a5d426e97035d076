"""The pause rules kept in the data folder (``DATA/sharing.toml``), one file for every front.

The window writes the file whenever its pause settings change, and ``poolnet join`` reads it
(its flags override it), so a computer pauses by the same rules whichever front shares it.
TOML, so that an owner of a headless member can write it by hand; ``core.pause`` checks it.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from poolnet_desktop.core.pause import PauseRules, rules_from_settings, settings_of

SHARING_FILE = "sharing.toml"
_HEADER = "# When this computer pauses sharing: written by PoolNet's window, read by `poolnet join`\n" \
          "# (whose flags override it). busy_percent applies where keyboard and mouse cannot be read.\n"


class SharingConfigError(Exception):
    """The file cannot be read or holds a bad rule; the message is one line, naming the file."""


def read_pause_rules(data_dir: Path, base: PauseRules = PauseRules()) -> PauseRules:
    """The rules in ``data_dir``'s file over ``base``; ``base`` itself when there is no file."""
    path = data_dir / SHARING_FILE
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return base
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SharingConfigError(f"{path}: {exc}") from None
    try:
        return rules_from_settings(values, base)
    except ValueError as exc:
        raise SharingConfigError(f"{path}: {exc}") from None


def write_pause_rules(data_dir: Path, rules: PauseRules) -> None:
    """Replace the file at once (a reader never sees half of it)."""
    lines = [f"{key} = {_toml_value(value)}\n" for key, value in settings_of(rules).items()]
    handle, temporary = tempfile.mkstemp(dir=data_dir, prefix=".sharing-", suffix=".toml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(_HEADER + "".join(lines))
        os.replace(temporary, data_dir / SHARING_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _toml_value(value: bool | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}"
