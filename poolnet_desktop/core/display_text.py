"""Text that came from another device, made safe to show.

Device names, platforms, GPU names, task names and shards' notes are chosen by whoever sends
them: an unapproved device names itself in its hello. Printed as they came, an escape sequence
in one drives the reader's terminal (retitles it, clears it, rewrites what is above); shown in a
Qt label, which takes text that looks like HTML for rich text, markup in one draws a different
approval prompt than the one the owner means to answer; a line break or a right-to-left
override moves the address and platform shown after it out of sight.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` on one line, with each control or format character (line breaks, escapes,
    bidirectional overrides) written as its escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
