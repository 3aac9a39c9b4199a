"""JSON Lines: one object per line, each kept as its own text."""
from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Mapping
from typing import IO, Any

import orjson

from ingestd.daemon.errors import PermanentError

from . import reading
from .jsonrecord import MAX_DEPTH, json_type, parse_record, plain_numbers, too_large_message
from .reading import (
    GZIP_ERRORS,
    MAX_RECORD_BYTES,
    Format,
    JsonRecord,
    TextRecord,
    check_byte_order_mark,
    gzip_guard,
)

JSON_WHITESPACE = b" \t\r\n"
_BLANK_START = frozenset(JSON_WHITESPACE)
_BLANKS = re.compile(rb"[ \t\r\n]*")


def read_jsonl(stream: IO[bytes], max_record_bytes: int = MAX_RECORD_BYTES,
               exact_numbers: bool = True) -> Iterator[JsonRecord]:
    """JSON Lines: one object per line, each kept as its own text; blank
    lines are skipped; a line longer than ``max_record_bytes`` is
    ``too_large``, refused before it is held. A file with no record at all
    is a ``parse_error``.

    The lines already in the stream's buffer are taken a buffer at a time
    (``_buffered``): what ``parse_record`` checks of each line (long
    numbers, exponents, an escaped U+0000) is checked once for them all,
    and a buffer without any has its lines parsed by orjson alone; blank
    lines among them are skipped there. A line the buffer does not hold
    whole is read alone."""
    found = False
    readline = stream.readline
    peek = getattr(stream, "peek", None)
    try:
        check_byte_order_mark(stream)
        line_no = _skip_whitespace(stream)
        while True:
            if peek is not None:
                ahead = peek(reading.TEXT_CHUNK)
                block = ahead[:ahead.rfind(b"\n") + 1]
                del ahead
                if block:
                    line_no, held, blank_end = yield from _buffered(block, line_no, max_record_bytes, exact_numbers)
                    found = found or held
                    stream.read(len(block))
                    if blank_end:  # the indent of the line after them is no record's
                        line_no += _skip_whitespace(stream)
                    continue
            # A record of max_record_bytes and its line end (CRLF: 2 bytes) are read whole.
            line = readline(max_record_bytes + 2)
            if not line:
                break
            line_no += 1
            if line[0] in _BLANK_START and not line.strip(JSON_WHITESPACE):
                # The breaks passed; this line's own among them when it was cut short.
                line_no += _skip_whitespace(stream) - (not line.endswith(b"\n"))
                continue
            found = True
            yield _record(line, line_no, max_record_bytes, exact_numbers, False), line
    except GZIP_ERRORS as exc:
        raise gzip_guard(exc) from None
    if not found:
        raise PermanentError("parse_error", "the file holds no records (only blank lines)")


def _buffered(block: bytes, line_no: int, max_record_bytes: int,
              exact_numbers: bool) -> Generator[JsonRecord, None, tuple[int, bool, bool]]:
    """The records of ``block`` (whole lines), every line of it taken: a run
    of blank lines is passed at once and its line breaks counted, and the
    indent of the line after it is no record's (as ``_skip_whitespace`` has
    it), so that the block is scanned once however records and blank lines
    alternate (a block a record would scan the buffer once a line).
    Returns the last line's number, whether a record was found, and whether
    the block ends with blank lines."""
    plain = b"\\u0000" not in block and (not exact_numbers or plain_numbers(block))
    start, end, find, blanks = 0, len(block), block.find, _BLANKS.match
    found = False
    while start < end:
        if block[start] in _BLANK_START:
            run = blanks(block, start).end()  # type: ignore[union-attr]
            breaks = block.count(b"\n", start, run)
            if breaks:  # blank lines (else the indent of a record's line, kept)
                line_no, start = line_no + breaks, run
                if start == end:
                    return line_no, found, True
        stop = find(b"\n", start) + 1
        line = block[start:stop]
        start = stop
        line_no += 1
        found = True
        yield _record(line, line_no, max_record_bytes, exact_numbers, plain), line
    return line_no, found, False


def _record(line: bytes, line_no: int, max_record_bytes: int, exact_numbers: bool, plain: bool) -> dict:
    """One line's record. ``plain``: the line holds no number orjson may
    not read exactly and no escaped U+0000 (``_buffered``), so orjson's
    value is parse_record's unless the line may nest too deep or fails."""
    if len(line) > max_record_bytes and len(line) - _line_end(line) > max_record_bytes:
        raise PermanentError("too_large", too_large_message(f"line {line_no}", max_record_bytes),
                             limit=max_record_bytes)
    value = None
    if plain and line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # parse_record says why
    if value is None:
        value = parse_record(line, f"line {line_no}", exact_numbers=exact_numbers)
    if type(value) is not dict:
        raise PermanentError("parse_error", f"line {line_no}: {json_type(value)}, not an object", line=line_no)
    return value


def _line_end(line: bytes) -> int:
    return 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0


def _skip_whitespace(stream: IO[bytes]) -> int:
    """Consume the whitespace ahead (blank lines, and the indent of the next
    line), a buffer at a time; the line breaks passed. Blank lines carry no
    record and count to no line's size: a gigabyte of them costs seconds."""
    if not hasattr(stream, "peek"):
        return 0
    breaks = 0
    while ahead := stream.peek(reading.TEXT_CHUNK):
        blank = len(ahead) - len(ahead.lstrip(JSON_WHITESPACE))
        if not blank:
            break
        breaks += ahead.count(b"\n", 0, blank)
        stream.read(blank)
        if blank < len(ahead):
            break
    return breaks


def _read(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
          exact_numbers: bool) -> Iterator[TextRecord]:
    return read_jsonl(content, max_record_bytes, exact_numbers)


FORMAT = Format("jsonl", (".jsonl", ".ndjson"), _read)
