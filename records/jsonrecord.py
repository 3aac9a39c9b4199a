"""One record's JSON text: its Python value for validation, and what
PostgreSQL jsonb cannot store refused.

Bronze keeps each JSON record's own text: PostgreSQL's jsonb parser reads
the bytes of the file, so numbers of any size and precision and strings
arrive exactly as written. ``parse_record`` builds a Python value of the
record as well, for validation only, and every number in it stands for its
value as written: integers are ``int``; a number with a fraction or an
exponent is a ``float`` when its double is that value (the shortest text
that reads back as the double has the written value, and below 2**53 in
magnitude, or the double is the value itself), which is the usual case
(1.23, 0.5, 1e-05), and otherwise an ``ExactNumber``: the nearest double,
which RecordValidator compares by its exact decimal value
(0.30000000000000001, 1.0000000000000001, 1e23, 1e-400, a number of 5000
digits). Integers too long for ``int(text)`` are ``WholeNumber``. Those
numbers are records/exactnumbers.py's.

A record nested deeper than ``MAX_DEPTH`` levels is refused before a
parser builds anything of it (``nesting_depth``, linear in its bytes), and
what jsonb cannot store is refused with the record's number and a reason,
never rewritten: an escaped U+0000 (``load_error``), a lone UTF-16
surrogate escape such as ``"\\ud800"`` (``encoding_error``), a number
beyond PostgreSQL's numeric range (``load_error``).
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from ingestd.daemon.errors import PermanentError

from .exactnumbers import (
    INT_MAX_DIGITS,
    NUMERIC_MAX_SCALE,
    NUMERIC_MAX_WEIGHT,
    ExactNumber,
    WholeNumber,
    doubles_are_written_values,
    is_written_value,
)

# Deepest nesting of arrays and objects accepted in a record (or in any value
# of a document). Validation recurses per level; 128 leaves room for the
# most recursive schema within Python's default recursion limit.
MAX_DEPTH = 128

Value = Any

# A fast filter. A number's double may not be its value as written only if
# it has 16 or more digits (with its point: a run of 16 here), or an
# exponent (1e23, 1e-400); orjson turns integers beyond 64 bits (20
# digits) into doubles, and a scale past numeric's 16383 needs a long digit
# run or an exponent; nesting needs brackets. One byte translation (digits
# and the point to "0"), then substring counts and searches: several times
# faster than a regular expression for runs of digits.
_SHAPE = bytes(0x30 if 0x30 <= b <= 0x39 or b == 0x2E else 0x5B if b in (0x5B, 0x7B)
               else 0x65 if b in (0x45, 0x65) else 0x2D if b == 0x2D else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 16
_EXPONENT = b"0e"  # a digit, then e or E: one search finds every exponent
_BLANKS = b" \t\r\n"
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Everything up to the next bracket, strings skipped whole; possessive, so
# matching is linear. A string cut off by the end of the buffer stops the
# match at its opening quote.
_SKIP = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.S)


def skip_to_bracket(text: bytes, pos: int) -> int:
    """Where the next bracket (or an unterminated string) starts after ``pos``."""
    found = _SKIP.match(text, pos)
    assert found is not None  # every part of the pattern is optional: it always matches
    return found.end()


def too_large_message(where: str, limit: int) -> str:
    return f"{where}: exceeds landing.max_record_bytes ({limit} bytes), the limit of one record"


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(type(value), "a number")


def nesting_depth(text: bytes, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of ``text`` (brackets inside strings ignored),
    stopping as soon as it passes ``limit``."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return 0  # cannot be deeper than its number of brackets: nothing to scan
    depth = deepest = pos = 0
    end = len(text)
    while True:
        pos = skip_to_bracket(text, pos)
        if pos >= end:
            return deepest
        char = text[pos]
        if char in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in b"]}":
            depth -= 1
        else:
            return deepest  # an unterminated string: the parser will say so
        pos += 1


_UNPARSED = object()


def parse_record(text: bytes, where: str, depth_checked: bool = False, exact_numbers: bool = True,
                 parsed: Any = _UNPARSED) -> Value:
    """The Python value of one record's JSON text, or ``PermanentError``.

    ``where`` names the record in messages ("record 3", "line 7"). The text
    itself is what bronze stores; the value is for validation, and
    ``exact_numbers=False`` (a source without a schema) spares the check
    that makes its integers past 64 bits exact.
    """
    # One pass over the bytes serves both quick checks (this runs for every
    # record: it is written for speed).
    shape = text.translate(_SHAPE) if exact_numbers or not depth_checked else b""
    if not depth_checked and shape.count(b"[") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise PermanentError("parse_error", f"{where}: nested deeper than {MAX_DEPTH} levels", limit=MAX_DEPTH)
    try:
        value = orjson.loads(text) if parsed is _UNPARSED else parsed
    except orjson.JSONDecodeError:
        # Valid JSON that orjson refuses (a lone surrogate, 1e400), or the
        # precise error.
        value = _parse_exactly(text, where)
    else:
        # orjson gives doubles: one that is not the number's value as written
        # (an integer past 64 bits, 0.30000000000000001, 1e-400 as 0.0, 1e23)
        # has the record read again, exactly. (A number past numeric's range
        # is refused then, or by PostgreSQL itself: a load_error all the same,
        # naming the row.)
        if exact_numbers and (_LONG_DIGITS in shape or _EXPONENT in shape) and _holds_float(value) \
                and not _shortest_texts(text, value) and not doubles_are_written_values(text):
            value = _parse_exactly(text, where)
    if b"\\u0000" in text and _NUL_ESCAPE.search(text):
        pointer = find_string(value, lambda s: "\x00" in s)
        raise PermanentError("load_error", f"{where}: the string at {pointer} holds U+0000 (\\u0000), which "
                             "PostgreSQL jsonb cannot store", pointer=pointer)
    return value


def _shortest_texts(text: bytes, value: Any) -> bool:
    """Whether every number of ``text`` is written as the shortest text of
    its double, as most writers of JSON write floats (Python, JavaScript,
    orjson: 323.83276483316234), and no double is past 1e16, where it may not
    be its text's value: ``text`` is ``value`` written again by orjson, but
    for whitespace (strings and structure are the same; the numbers align)."""
    try:
        again = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return b"e+" not in again and text.translate(None, _BLANKS) == again.translate(None, _BLANKS)


def _holds_float(value: Any) -> bool:
    if type(value) is float:
        return True
    if type(value) is dict:
        return any(_holds_float(v) for v in value.values())
    if type(value) is list:
        return any(_holds_float(v) for v in value)
    return False


class _Number:
    """A number's text, kept until its range is checked."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_exactly(text: bytes, where: str) -> Value:
    """The slow, exact parse: every number's text checked against PostgreSQL's
    numeric range, lone surrogates found, then numbers turned into the
    validation view (``_number``)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError("encoding_error", f"{where}: not valid UTF-8 (byte 0x{text[exc.start]:02x} at "
                             f"offset {exc.start} of the record)", offset=exc.start) from None
    try:
        raw = json.loads(decoded, parse_float=_Number, parse_int=_Number, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise PermanentError("parse_error", f"{where}: {exc.msg} (line {exc.lineno}, column {exc.colno} of the "
                             "record)") from None
    except ValueError as exc:
        raise PermanentError("parse_error", f"{where}: {exc}") from None
    except RecursionError:
        raise PermanentError("parse_error", f"{where}: nested too deeply") from None
    return _finish(raw, where, [])


def _finish(value: Any, where: str, path: list[str]) -> Value:
    if isinstance(value, _Number):
        return _number(value.text, where, path)
    if isinstance(value, str):
        _check_string(value, where, path)
        return value
    if isinstance(value, list):
        return [_finish(v, where, path + [str(i)]) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            _check_string(key, where, path + [key])
            out[key] = _finish(v, where, path + [key])
        return out
    return value


def _pointer(path: list[str]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)


def _check_string(value: str, where: str, path: list[str]) -> None:
    found = _SURROGATE.search(value)
    if found:
        pointer = _pointer(path).encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise PermanentError("encoding_error", f"{where}: the string at {pointer} holds a lone UTF-16 surrogate "
                             f"(\\u{ord(found.group()):04x}), which is not Unicode text", pointer=pointer)


def _number(text: str, where: str, path: list[str]) -> int | float:
    is_int = text.lstrip("-").isdigit()
    if is_int and len(text) <= INT_MAX_DIGITS:
        return int(text)
    if not is_int and len(text) <= 16 and "e" not in text and "E" not in text:
        return float(text)  # 15 digits at most: its double's shortest text is this value
    exact = Decimal(text)
    sign, digits, exponent = exact.as_tuple()
    scale = max(0, -int(exponent))
    if scale > NUMERIC_MAX_SCALE or (digits != (0,) and exact.adjusted() > NUMERIC_MAX_WEIGHT):
        excerpt = text if len(text) <= 40 else text[:20] + "…" + text[-10:]
        raise PermanentError("load_error", f"{where}: the number {excerpt} at {_pointer(path)} is beyond the "
                             "range of PostgreSQL numeric (131072 digits before the point, 16383 after)",
                             pointer=_pointer(path))
    # The validation view (bronze keeps the text): the double where it is
    # the value written, else a number that compares by its exact value.
    if is_int:
        return WholeNumber(exact)
    value = float(exact)
    return value if is_written_value(value, exact) else ExactNumber(exact, text)


def find_string(value: Any, test, path: list[str] | None = None) -> str:
    """JSON pointer of the first string (key or value) passing ``test``."""
    path = path or []
    if isinstance(value, str):
        return _pointer(path) if test(value) else ""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, v in items:
        if isinstance(key, str) and test(key):
            return _pointer(path + [key])
        found = find_string(v, test, path + [str(key)])
        if found:
            return found
    return ""


def plain_numbers(text: bytes) -> bool:
    """True when every number in ``text`` (one record or many) is one whose
    double is its value as written: none has 16 digits or more, none an
    exponent. Then ``parse_record``'s value is orjson's (a line break
    parts digit runs: the check of many lines at once is that of each)."""
    shape = text.translate(_SHAPE)
    return _LONG_DIGITS not in shape and _EXPONENT not in shape


def has_nul_escape(text: bytes) -> bool:
    """True when JSON text holds an escaped U+0000 (``\\u0000`` after an even
    run of backslashes; ``\\\\u0000`` is a backslash and the text ``u0000``)."""
    return b"\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def with_context(context: dict[str, Any], value: dict[str, Any], text: bytes) -> tuple[dict[str, Any], bytes]:
    """A record with ``context``'s fields added in front (the record's own
    fields win, in the value as in jsonb, where the last of a key wins)."""
    if not context:
        return value, text
    prefix = orjson.dumps(context)
    inner = text.strip(b" \t\r\n")[1:-1]
    merged = prefix[:-1] + b"," + inner + b"}" if inner.strip(b" \t\r\n") else prefix
    return {**context, **value}, merged
