"""Exact JSON text: records as written, bounded before any parser sees them.

Bronze keeps each JSON record's own text: PostgreSQL's jsonb parser reads
the bytes of the file, so numbers of any size and precision and strings
arrive exactly as written. A Python value of the record is built as well,
for validation only, and every number in it stands for its value as
written: integers are ``int``; a number with a fraction or an exponent is a
``float`` when its double is that value (the shortest text that reads back
as the double has the written value, and below 2**53 in magnitude, or the
double is the value itself), which is the usual case (1.23, 0.5, 1e-05),
and otherwise an ``ExactNumber``: the nearest double, which RecordValidator
compares by its exact decimal value (0.30000000000000001,
1.0000000000000001, 1e23, 1e-400, a number of 5000 digits). Integers too
long for ``int(text)`` are ``WholeNumber``.

Before a parser builds anything for a record, its nesting depth and size
are checked while the bytes stream in (``MAX_DEPTH`` levels, the per-record
byte limit), and scanning is linear in the input: a document of 100 KB of
``[`` or a 200 MB string costs what its bytes cost, no more.

What jsonb cannot store is refused with the record's number and a reason,
never rewritten: an escaped U+0000 (``load_error``), a lone UTF-16
surrogate escape such as ``"\\ud800"`` (``encoding_error``), a number
beyond PostgreSQL's numeric range (``load_error``).
"""
from __future__ import annotations

import json
import math
import operator
import re
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import IO, Any

import orjson

from ingestd.daemon.errors import PermanentError

# Deepest nesting of arrays and objects accepted in a record (or in any value
# of a document). Validation recurses per level; 128 leaves room for the
# most recursive schema within Python's default recursion limit.
MAX_DEPTH = 128
# PostgreSQL numeric: at most 131072 digits before the decimal point and
# 16383 after it (the display scale).
NUMERIC_MAX_WEIGHT = 131071
NUMERIC_MAX_SCALE = 16383
# Python refuses to turn longer digit strings into ``int`` (quadratic time).
INT_MAX_DIGITS = 4300

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
# A number's text (the filter's hits are checked one number at a time).
_NUMBER = re.compile(rb"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_TWO_53 = 2**53
_BLANKS = b" \t\r\n"
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Everything up to the next bracket, strings skipped whole; possessive, so
# matching is linear. A string cut off by the end of the buffer stops the
# match at its opening quote.
_SKIP = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.S)
_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
# The extent of a string (up to its closing quote) or of a bare token
# (number or literal); the JSON parser checks the text afterwards.
_STRING_EXTENT = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.S)
_BARE_EXTENT = re.compile(rb"[-+.0-9A-Za-z]++")
_BARE_START = frozenset(b"-0123456789tfn")
_OPENING = {ord("{"): "an object", ord("["): "an array", ord('"'): "a string", ord("t"): "a boolean",
            ord("f"): "a boolean", ord("n"): "null"}


def _skip_whitespace(text: bytes, pos: int) -> int:
    found = _WHITESPACE.match(text, pos)
    assert found is not None  # matches the empty string too
    return found.end()


def _skip_to_bracket(text: bytes, pos: int) -> int:
    """Where the next bracket (or an unterminated string) starts after ``pos``."""
    found = _SKIP.match(text, pos)
    assert found is not None  # every part of the pattern is optional: it always matches
    return found.end()


def too_large_message(where: str, limit: int) -> str:
    return f"{where}: exceeds landing.max_record_bytes ({limit} bytes), the limit of one record"


def _kind_at(byte: int) -> str:
    if byte in _OPENING:
        return _OPENING[byte]
    if byte == ord("-") or ord("0") <= byte <= ord("9"):
        return "a number"
    return "not JSON"


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
        pos = _skip_to_bracket(text, pos)
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


def doubles_are_written_values(text: bytes) -> bool:
    """Whether every number of ``text`` that orjson reads as a double is
    kept exactly by that double (``is_written_value``). Digits inside
    strings are taken for numbers too: at worst the record is read again
    exactly for nothing."""
    for found in _NUMBER.finditer(text):
        fraction, exponent = found.group(1, 2)
        token = found.group()
        if len(token) > 40:
            return False  # past 64 bits, or a number numeric's range is checked for
        if fraction is None and exponent is None:
            if len(token) >= 19 and not -2**63 <= int(token) < 2**64:
                return False  # past 64 bits: a double for orjson
            continue
        if exponent is None and len(token) <= 16:
            continue  # 15 digits at most: the double's shortest text is this value
        double = float(token)
        if -_TWO_53 < double < _TWO_53 and repr(double).encode() == token:
            continue
        exact = Decimal(token.decode("ascii"))
        if not is_written_value(float(exact), exact):
            return False
    return True


def is_written_value(value: float, exact: Decimal) -> bool:
    """Whether the double ``value`` stands exactly for ``exact``, the value
    written: below 2**53 in magnitude its shortest text must have that value
    (Python's comparisons of such doubles with integers and with each other
    then say what the values say); beyond, the double must be it exactly."""
    if not math.isfinite(value):
        return False
    if -_TWO_53 < value < _TWO_53:
        return Decimal(repr(value)) == exact
    return Decimal(value) == exact


def written_value(value: Any) -> Any:
    """The exact value a number of a record or a schema stands for: an
    ``ExactNumber``'s decimal, an ``int``, a finite float's shortest text
    read as a decimal (0.1 is one tenth, as the schema or file wrote it);
    ``NotImplemented`` for what is no number, None for NaN."""
    if type(value) is ExactNumber:
        return value.exact
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return Decimal(repr(value)) if math.isfinite(value) else Decimal(value)
    if isinstance(value, (Decimal, Fraction)):
        return None if value != value else value
    return NotImplemented


# How an ExactNumber compares: by its exact value while jsonschema validates
# for RecordValidator (set per thread), else as its double (it is the float
# a JSON parser gives), except in code compiled by fastjsonschema, which
# compares doubles: there it refuses (its globals carry COMPILED_MARK; the
# record then goes to jsonschema).
AS_DOUBLE, EXACT = 0, 1
COMPILED_MARK = "_ingestd_compares_doubles"


class _Comparisons(threading.local):
    mode = AS_DOUBLE


comparisons = _Comparisons()


class InexactComparison(Exception):
    """An ExactNumber compared where only doubles are compared."""


def _as_double(number: ExactNumber, caller: Any) -> bool:
    """Whether ``number`` compares as its double where ``caller`` (a frame)
    compares it; raises in code that would take the double for the value."""
    if caller.f_globals.get(COMPILED_MARK):
        raise InexactComparison(f"{number!r} is not its double")
    return True


def _exact_comparison(compare: Callable[[Any, Any], bool], as_double: Callable[[Any, Any], Any],
                      nan: bool) -> Callable[[Any, Any], Any]:
    def method(self: ExactNumber, other: Any) -> Any:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return as_double(self, other)
        value = written_value(other)
        if value is NotImplemented:
            return NotImplemented
        return nan if value is None else compare(self.exact, value)
    return method


class ExactNumber(float):
    """A number of a record whose double is not its value as written
    (0.30000000000000001, 1e23, 1e-400). It is that double, the float any
    JSON parser would give, for arithmetic and comparisons, except while
    RecordValidator validates: on jsonschema's path it compares (``==``,
    ``<``...), hashes and says ``is_integer()`` by its exact value; in the
    compiled validators (fastjsonschema compares doubles) it raises
    ``InexactComparison`` and the record goes to jsonschema. It prints as
    written."""

    __slots__ = ("exact", "text")
    exact: Decimal
    text: str | None

    def __new__(cls, exact: Decimal, text: str | None = None) -> ExactNumber:
        self = super().__new__(cls, float(exact))
        self.exact = exact
        self.text = text
        return self

    __eq__ = _exact_comparison(operator.eq, float.__eq__, False)
    __ne__ = _exact_comparison(operator.ne, float.__ne__, True)
    __lt__ = _exact_comparison(operator.lt, float.__lt__, False)
    __le__ = _exact_comparison(operator.le, float.__le__, False)
    __gt__ = _exact_comparison(operator.gt, float.__gt__, False)
    __ge__ = _exact_comparison(operator.ge, float.__ge__, False)

    def __hash__(self) -> int:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return float.__hash__(self)
        return hash(self.exact)  # equal numbers hash alike across int, float, Decimal

    def is_integer(self) -> bool:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return float.is_integer(self)
        return self.exact == self.exact.to_integral_value()

    def __repr__(self) -> str:
        return self.text if self.text is not None else str(self.exact)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExactNumber, (self.exact, self.text))


class WholeNumber(int):
    """An integer written with more digits than ``int(text)`` takes
    (``INT_MAX_DIGITS``); printed from its decimal, which has no such limit."""

    exact: Decimal

    def __new__(cls, exact: Decimal) -> WholeNumber:
        self = super().__new__(cls, int(exact))
        self.exact = exact
        return self

    def __repr__(self) -> str:
        return str(self.exact)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (WholeNumber, (self.exact,))


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


def has_nul_escape(text: bytes) -> bool:
    """True when JSON text holds an escaped U+0000 (``\\u0000`` after an even
    run of backslashes; ``\\\\u0000`` is a backslash and the text ``u0000``)."""
    return b"\\u0000" in text and _NUL_ESCAPE.search(text) is not None


class _Scanner:
    """A window on a binary stream with an absolute position, for one document."""

    def __init__(self, stream: IO[bytes], chunk: int, exact_numbers: bool = True) -> None:
        self.stream = stream
        self.chunk = chunk
        self.exact_numbers = exact_numbers
        self.data = b""
        self.pos = 0
        self.eof = False
        self.dropped = 0  # bytes before ``data``
        self.lines_dropped = 0

    def fill(self, keep_from: int, want: int) -> bool:
        """Read at least ``want`` more bytes, keeping ``data[keep_from:]``.
        Positions shift by the bytes dropped; False at end of input."""
        if self.eof:
            return False
        if keep_from:
            self.lines_dropped += self.data.count(b"\n", 0, keep_from)
            self.dropped += keep_from
            self.data = self.data[keep_from:]
            self.pos -= keep_from
        got = self.stream.read(max(want, self.chunk))
        if not got:
            self.eof = True
            return False
        self.data += got
        return True

    def line(self, pos: int | None = None) -> int:
        return self.lines_dropped + self.data.count(b"\n", 0, self.pos if pos is None else pos) + 1

    def peek(self) -> int | None:
        """The next byte after whitespace (not consumed), None at the end."""
        while True:
            self.pos = _skip_whitespace(self.data, self.pos)
            if self.pos < len(self.data):
                return self.data[self.pos]
            if not self.fill(self.pos, self.chunk):
                return None

    def expect(self, chars: bytes, what: str) -> int:
        char = self.peek()
        if char is None or char not in chars:
            found = "the end of the file" if char is None else repr(chr(char))
            raise PermanentError("parse_error", f"line {self.line()}: expected {what}, found {found}",
                                 line=self.line())
        self.pos += 1
        return char

    def extent(self, where: str, limit: int) -> bytes:
        """The text of the array or object starting at ``pos`` (bounded by
        depth and ``limit`` bytes), consumed."""
        start = self.pos
        depth, pos = 0, start
        while True:
            pos = _skip_to_bracket(self.data, pos)
            if pos - start > limit:
                raise PermanentError("too_large", too_large_message(where, limit),
                                     limit=limit)
            if pos < len(self.data) and self.data[pos] != 0x22:  # a bracket
                if self.data[pos] in b"[{":
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise PermanentError("parse_error", f"{where}: nested deeper than {MAX_DEPTH} levels",
                                             limit=MAX_DEPTH, line=self.line(pos))
                else:
                    depth -= 1
                    if depth == 0:
                        self.pos = pos + 1
                        return self.data[start:pos + 1]
                pos += 1
                continue
            # The end of the window, or a string it cuts: read more. The held
            # part doubles at least, so rescanning a long string stays linear.
            held = len(self.data) - start
            if held > limit:
                raise PermanentError("too_large", too_large_message(where, limit),
                                     limit=limit)
            pos -= start
            if not self.fill(start, held):
                raise PermanentError("parse_error", f"{where}: the file ends inside it (truncated?)",
                                     line=self.line(start))
            start = 0
            self.pos = 0

    def scalar(self, where: str, limit: int) -> bytes:
        """The text of the string, number or literal at ``pos``, consumed
        (checked as JSON by the caller)."""
        char = self.data[self.pos]
        if char == 0x22:
            pattern = _STRING_EXTENT
        elif char in _BARE_START:
            pattern = _BARE_EXTENT
        else:
            raise PermanentError("parse_error", f"line {self.line()}: {where} is not valid JSON", line=self.line())
        while True:
            found = pattern.match(self.data, self.pos)
            # A bare token reaching the window's end may go on in the next read.
            if found and (char == 0x22 or found.end() < len(self.data) or self.eof):
                self.pos = found.end()
                return found.group()
            held = len(self.data) - self.pos
            if held > limit:
                raise PermanentError("too_large", too_large_message(where, limit),
                                     limit=limit)
            if not self.fill(self.pos, held) and not found:
                raise PermanentError("parse_error", f"line {self.line()}: the file ends inside {where}",
                                     line=self.line())

    def value(self, where: str, limit: int) -> bytes:
        char = self.peek()
        if char is None:
            raise PermanentError("parse_error", f"line {self.line()}: the file ends where a value should be")
        if char in b"[{":
            return self.extent(where, limit)
        return self.scalar(where, limit)


def read_json_records(stream: IO[bytes], records_path: str | None, max_record_bytes: int,
                      chunk: int = 1 << 20, exact_numbers: bool = True) -> Iterator[tuple[Value, bytes]]:
    """``(value, text)`` of each record of a JSON document: an array of
    objects, one object (one record), or an object holding an array of
    objects at the dotted ``records_path``.

    The whole document is checked (a record, a value outside the records,
    what follows the end); an empty array there gives no records, a missing
    one is a parse error.
    """
    scanner = _Scanner(stream, chunk, exact_numbers)
    head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
    if head[:3] == b"\xef\xbb\xbf":
        stream.read(3)  # a UTF-8 byte order mark, which JSON parsers refuse
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise PermanentError("encoding_error", "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                             "JSON must be UTF-8")
    first = scanner.peek()
    if first is None:
        raise PermanentError("parse_error", "the file holds no JSON document (only whitespace)")
    path = records_path.split(".") if records_path else []
    if not path:
        if first == ord("{"):
            # One object is one record (an API response saved to disk).
            text = scanner.extent("record 1", max_record_bytes)
            yield parse_record(text, "record 1", depth_checked=True, exact_numbers=scanner.exact_numbers), text
        elif first == ord("["):
            scanner.pos += 1
            yield from _records(scanner, max_record_bytes, _TOP_LEVEL)
        elif _kind_at(first) == "not JSON":
            raise PermanentError("parse_error", f"line {scanner.line()}: unexpected character {chr(first)!r}, "
                                 "not JSON", line=scanner.line())
        else:
            raise PermanentError("parse_error", f"the document is {_kind_at(first)}, {_TOP_LEVEL}")
    else:
        if first != ord("{"):
            raise PermanentError("parse_error", f"the document is {_kind_at(first)}, not an object "
                                 f"(records_path = {records_path!r})")
        scanner.pos += 1
        found = yield from _members(scanner, path, max_record_bytes)
        if not found:
            raise PermanentError("parse_error", f"no array at records_path {records_path!r}")
    if scanner.peek() is not None:
        raise PermanentError("parse_error", f"line {scanner.line()}: more data after the end of the JSON document",
                             line=scanner.line())


def _members(scanner: _Scanner, path: list[str], limit: int):
    """The members of an object (its ``{`` consumed) with ``path[0]`` the key
    to follow; yields the records found; returns whether the path was found."""
    found = False
    if scanner.peek() == ord("}"):
        scanner.pos += 1
        return False
    while True:
        if scanner.peek() != ord('"'):
            scanner.expect(b'"', "a key")
        key = parse_record(scanner.scalar("a key", limit), f"line {scanner.line()}, a key")
        scanner.expect(b":", "':' after a key")
        if key == path[0]:
            if found:
                raise PermanentError("parse_error", f"line {scanner.line()}: key {key!r} of records_path appears "
                                     "twice in one object")
            found = True
            char = scanner.peek()
            if len(path) == 1 and char == ord("["):
                scanner.pos += 1
                yield from _records(scanner, limit)
            elif len(path) > 1 and char == ord("{"):
                scanner.pos += 1
                found = yield from _members(scanner, path[1:], limit)
            else:
                what = _kind_at(char) if char is not None else "nothing"
                raise PermanentError("parse_error", f"line {scanner.line()}: records_path key {key!r} holds {what}, "
                                     f"not {'an array' if len(path) == 1 else 'an object'}")
        else:
            # Not on the path: checked as JSON, then dropped.
            text = scanner.value(f"the value of key {key!r}", limit)
            parse_record(text, f"line {scanner.line()}, the value of key {key!r}")
        if scanner.expect(b",}", "',' or '}'") == ord("}"):
            return found


_TOP_LEVEL = "not an object or an array of objects"
_PLURAL = {"a number": "numbers", "a string": "strings", "an array": "arrays", "a boolean": "booleans",
           "null": "nulls"}


def _records(scanner: _Scanner, limit: int, shape: str = "") -> Iterator[tuple[Value, bytes]]:
    """The elements of the records array (its ``[`` consumed), up to its
    ``]``; ``shape`` says what the document should be, when it is not."""
    number = 0
    if scanner.peek() == ord("]"):
        scanner.pos += 1
        return
    while True:
        number += 1
        where = f"record {number}"
        char = scanner.peek()
        if char == ord("]") and number > 1:
            raise PermanentError("parse_error", f"line {scanner.line()}: a trailing comma after record {number - 1}",
                                 line=scanner.line())
        if char != ord("{"):
            what = "the end of the file" if char is None else _kind_at(char)
            if char is not None and what == "not JSON":
                what = f"unexpected character {chr(char)!r}, not JSON"
            whole = "" if not shape else f" (the document is an array of {_PLURAL[what]}, {shape})" \
                if number == 1 and what in _PLURAL else " (the document must be an object or an array of objects)"
            raise PermanentError("parse_error", f"{where} (line {scanner.line()}): {what}, not an object{whole}",
                                 record=number, line=scanner.line())
        found = _flat_record(scanner, limit)
        try:
            if found is not None:
                value, text = found
                value = parse_record(text, where, exact_numbers=scanner.exact_numbers, parsed=value)
            else:
                text = scanner.extent(where, limit)
                value = parse_record(text, where, depth_checked=True, exact_numbers=scanner.exact_numbers)
        except PermanentError as exc:
            # The record's number with every refusal of it (a U+0000 deep inside, a number out of range):
            # the dead letter says which record, not only the message.
            exc.failure.detail.setdefault("record", number)
            raise
        yield value, text
        if scanner.expect(b",]", f"',' or ']' after record {number}") == ord("]"):
            return


def _flat_record(scanner: _Scanner, limit: int) -> tuple[Value, bytes] | None:
    """The common case, fast: the object at ``pos`` ends at the next ``}``
    of the window. A JSON object cannot be a prefix of a longer one, so if
    the text up to that brace is valid JSON, it is the record; otherwise (a
    brace in a string, a nested object, a record past the window) None, and
    the bracket scanner takes over."""
    data, pos = scanner.data, scanner.pos
    end = data.find(b"}", pos)
    if end < 0 or end - pos >= limit:
        return None
    text = data[pos:end + 1]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    scanner.pos = end + 1
    return value, text


def with_context(context: dict[str, Any], value: dict[str, Any], text: bytes) -> tuple[dict[str, Any], bytes]:
    """A record with ``context``'s fields added in front (the record's own
    fields win, in the value as in jsonb, where the last of a key wins)."""
    if not context:
        return value, text
    prefix = orjson.dumps(context)
    inner = text.strip(b" \t\r\n")[1:-1]
    merged = prefix[:-1] + b"," + inner + b"}" if inner.strip(b" \t\r\n") else prefix
    return {**context, **value}, merged
