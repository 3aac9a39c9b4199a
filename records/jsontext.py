"""JSON documents read record by record, each record's exact text bounded
before any parser sees it.

Bronze keeps each JSON record's own text: PostgreSQL's jsonb parser reads
the bytes of the file, so numbers of any size and precision and strings
arrive exactly as written. ``read_json_records`` finds the records of a
document (an array of objects, one object, or an object holding the array
at ``records_path``) and gives each record's text with its Python value
for validation (``parse_record``, records/jsonrecord.py; its numbers are
those of records/exactnumbers.py).

Before a parser builds anything for a record, its nesting depth and size
are checked while the bytes stream in (``MAX_DEPTH`` levels, the per-record
byte limit), and scanning is linear in the input: a document of 100 KB of
``[`` or a 200 MB string costs what its bytes cost, no more. The whole
document is checked: what lies outside the records must be JSON too, and
nothing may follow its end.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

import orjson

from ingestd.daemon.errors import PermanentError

from .jsonrecord import MAX_DEPTH, Value, parse_record, skip_to_bracket, too_large_message

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


def _kind_at(byte: int) -> str:
    if byte in _OPENING:
        return _OPENING[byte]
    if byte == ord("-") or ord("0") <= byte <= ord("9"):
        return "a number"
    return "not JSON"


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
            pos = skip_to_bracket(self.data, pos)
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
