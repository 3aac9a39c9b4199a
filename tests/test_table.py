"""What the operator commands print is safe on a terminal: data (file and field names, error
excerpts) cannot move the cursor, clear the screen, or show its text reversed."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingestd.daemon.table import cell, printable

BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_bidirectional_controls_are_shown_not_obeyed():
    # "Trojan Source": a right-to-left override makes "txt.exe" read as "exe.txt".
    assert printable("invoice\u202etxt.exe") == "invoice\\u202etxt.exe"
    assert printable("\u2066a\u2069") == "\\u2066a\\u2069"
    assert printable("\x1b[2J") == "\\x1b[2J"


@given(st.text())
def test_nothing_printed_holds_a_control_or_a_bidirectional_control(text):
    shown = cell(text)
    assert not any(ch in BIDI or ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in shown)
    # Text without them is unchanged (but for cell's one-line whitespace).
    if not any(ch in BIDI or (ord(ch) < 0x20 and ch not in "\t\n") or 0x7f <= ord(ch) <= 0x9f for ch in text):
        assert printable(text) == text
