"""Human output: plain tables sized to the terminal (full width when piped),
times with their zone, control characters escaped."""
from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

# When stdout is not a terminal (a pipe, a file), lines are not cut.
UNLIMITED = 1 << 16


def output_width() -> int:
    """The terminal's width when stdout is one, else no limit."""
    try:
        if sys.stdout.isatty():
            return max(40, shutil.get_terminal_size((100, 24)).columns)
    except (AttributeError, ValueError):
        pass
    return UNLIMITED


# Control characters (C0 but tab and newline, DEL, C1): a file name or an
# error quoting data may hold ESC sequences that retitle or clear a terminal.
# And the bidirectional controls (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
# with which a field or file name can show its text reversed ("Trojan Source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters as ``\\xNN``,
    bidirectional controls as ``\\uNNNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    text = printable(str(value))
    return " ".join(text.split())  # one line, whatever the value held


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None,
                 shrink: Sequence[int] | None = None, below: int | None = None) -> str:
    """Rows under headers, columns padded; the ``shrink`` columns (default:
    the last), widest first, are cut with an ellipsis so that lines fit
    ``width`` (default: the terminal's; no limit when piped). Other columns
    (ids, times, counts) are never cut.

    ``below``: a column (the last one) that, when it would be cut short,
    moves under its row instead, indented, wrapped to the width: an error
    message is worth reading whole.
    """
    width = output_width() if width is None else width
    text_rows = [[cell(v) for v in row] for row in rows]
    cuttable = set(shrink if shrink is not None else [len(headers) - 1])
    widths = _fit(headers, text_rows, width, cuttable)
    if below is not None and _cut(headers, text_rows, widths, below):
        kept = [h for i, h in enumerate(headers) if i != below]
        main_rows = [[v for i, v in enumerate(r) if i != below] for r in text_rows]
        widths = _fit(kept, main_rows, width, {i - (i > below) for i in cuttable if i != below})
        lines = [_line(kept, widths)]
        for row, full in zip(main_rows, text_rows, strict=True):
            lines.append(_line(row, widths))
            lines += _wrap(f"{headers[below].lower()}: {full[below]}", width, indent="    ")
        return "\n".join(lines)
    return "\n".join([_line(list(headers), widths)] + [_line(r, widths) for r in text_rows])


def _fit(headers: Sequence[str], rows: list[list[str]], width: int, cuttable: set[int]) -> list[int]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    floors = [max(len(h), 12) for h in headers]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        shrinkable = [i for i, w in enumerate(widths) if i in cuttable and w > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _cut(headers: Sequence[str], rows: list[list[str]], widths: list[int], column: int) -> bool:
    return any(len(r[column]) > widths[column] for r in rows) or \
        sum(widths) + 2 * (len(widths) - 1) > output_width()


def _line(values: Sequence[str], widths: list[int]) -> str:
    out = []
    for i, (v, w) in enumerate(zip(values, widths, strict=True)):
        v = v if len(v) <= w else v[: max(0, w - 1)] + "…"
        out.append(v if i == len(widths) - 1 else v.ljust(w))
    return "  ".join(out).rstrip()


def _wrap(text: str, width: int, indent: str) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width=max(20, min(width, 400)), initial_indent=indent,
                         subsequent_indent=indent + "  ", break_long_words=True) or [indent]
