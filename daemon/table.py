"""Human output: plain tables that fit a terminal of 100 columns."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Sequence

WIDTH = 100


# Control characters (C0 but tab and newline, DEL, C1): a file name or an
# error quoting data may hold ESC sequences that retitle or clear a terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    text = printable(str(value))
    return " ".join(text.split())  # one line, whatever the value held


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int = WIDTH,
                 shrink: Sequence[int] | None = None) -> str:
    """Rows under headers, columns padded; the ``shrink`` columns (default:
    the last), widest first, are cut with an ellipsis so that lines fit
    ``width``. Other columns (ids, times, counts) are never cut."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    cuttable = set(shrink if shrink is not None else [len(headers) - 1])
    floors = [max(len(h), 12) for h in headers]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        shrinkable = [i for i, w in enumerate(widths) if i in cuttable and w > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1

    def line(values: Sequence[str]) -> str:
        out = []
        for i, (v, w) in enumerate(zip(values, widths)):
            v = v if len(v) <= w else v[: max(0, w - 1)] + "…"
            out.append(v if i == len(widths) - 1 else v.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers))] + [line(r) for r in text_rows])
