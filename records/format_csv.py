"""CSV: a header row, then one record per row, values kept as text."""
from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import orjson

from ingestd.daemon.errors import PermanentError

from . import reading
from .jsonrecord import too_large_message
from .reading import GZIP_ERRORS, MAX_RECORD_BYTES, Format, TextRecord, gzip_guard, refuse_wide

# The row bound of the reader (max_record_bytes) bounds its fields, so the
# stdlib's own field limit (128 KiB, which refuses many real exports) is lifted.
csv.field_size_limit(256 * 1024 * 1024)


def read_csv(stream: IO[bytes], delimiter: str = ",", skip_lines: int = 0,
             max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[TextRecord]:
    """CSV with a header row; UTF-8 with or without BOM (or UTF-16 with its
    BOM, as spreadsheet programs write "Unicode text"); any line ending.

    Values stay strings (bronze keeps the text as written). ``skip_lines``
    lines before the header are ignored (preambles such as Valet's TERMS and
    SERIES sections). Ragged rows, duplicate or empty header names and broken
    quoting are ``parse_error``; bytes that are not UTF-8 are ``encoding_error``.
    """
    try:
        head = stream.peek(4)[:4]  # type: ignore[attr-defined]
        refuse_wide(stream, "CSV must be UTF-8 (or UTF-16 with its byte order mark)")
    except GZIP_ERRORS as exc:
        raise gzip_guard(exc) from None
    encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    lines = _RowLines(text, max_record_bytes)
    json_hint = ""
    try:
        reader, header, json_hint = _header(lines, delimiter, skip_lines)
        width = len(header)
        for row in reader:
            if len(row) != width:
                if not row:  # a blank line carries no record, nor any of its size
                    lines.skip_blank_lines()
                    continue
                line = lines.lines
                hint = " (a preamble before the header? see skip_lines)" if not skip_lines and line < 50 else ""
                raise PermanentError("parse_error", f"line {line}: {len(row)} fields where the header has "
                                     f"{width}{hint}{json_hint}", line=line)
            lines.held = 0
            yield dict(zip(header, row, strict=True)), None
    except csv.Error as exc:
        raise _csv_error(exc, lines, max_record_bytes, json_hint) from None
    except UnicodeDecodeError as exc:
        raise _not_decodable(exc, encoding, lines) from None
    except GZIP_ERRORS as exc:
        raise gzip_guard(exc) from None


def _header(lines: _RowLines, delimiter: str, skip_lines: int) -> tuple[Iterator[list[str]], list[str], str]:
    """The rows after the preamble, the header read and checked, and the
    hint a failure past it adds when its first line looks like JSON."""
    try:
        for _ in range(skip_lines):
            next(lines, None)
            lines.held = 0
        first = next(lines)
        _refuse_json(first, lines.lines)
        reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter, strict=True)
        header = next(reader)
    except StopIteration:
        raise PermanentError("parse_error", "the file has no header row (nothing but a byte order mark "
                             "or preamble lines)") from None
    # A line of "{" or "[" alone may be a CSV header, or pretty-printed JSON: said if the rest fails.
    json_hint = _JSON_HINT if first.lstrip(" \t")[:1] in ("{", "[") else ""
    _check_header(header, lines.lines, json_hint)
    lines.held = 0
    return reader, header, json_hint


def _csv_error(exc: csv.Error, lines: _RowLines, max_record_bytes: int, json_hint: str) -> PermanentError:
    if "field larger than field limit" in str(exc):
        return PermanentError("too_large", too_large_message(f"line {lines.lines}", max_record_bytes),
                              limit=max_record_bytes)
    line = lines.lines
    if "unexpected end of data" in str(exc):
        # A quote opened and never closed takes every line after it into one field: the
        # line to look at is where it opened, not where the file ends.
        line = lines.row_start
        where = f" (the file ends at line {lines.lines})" if lines.lines > line else ""
        return PermanentError("parse_error", f"line {line}: a quoted field that opens on this line is never "
                              f"closed{where}", line=line)
    return PermanentError("parse_error", f"line {line}: {exc}{json_hint}", line=line)


def _not_decodable(exc: UnicodeDecodeError, encoding: str, lines: _RowLines) -> PermanentError:
    # The text layer decodes a chunk ahead of the CSV reader: the lines the
    # reader took (and those read ahead), plus the line breaks before the bad
    # byte in the chunk.
    newline = "\n".encode(encoding.removesuffix("-sig")) if encoding == "utf-16" else b"\n"
    ahead = lines.buf.count("\n", lines.pos) if lines.buf is not None else 0
    line = lines.lines + ahead + bytes(exc.object[: exc.start]).count(newline) + 1
    return PermanentError("encoding_error", f"near line {line}: not valid {encoding.removesuffix('-sig').upper()} "
                          f"({exc.reason}, byte 0x{exc.object[exc.start]:02x})", line=line)


class _RowLines:
    """The lines of a text stream for the CSV reader, refusing (``too_large``)
    a line, or a row of quoted lines, longer than ``limit`` characters: the
    reader builds a row whole, so its size is bounded before it is held.

    After a blank row, ``skip_blank_lines`` passes the run of empty lines
    that follows a chunk at a time: it carries no record, counts to no row's
    size, and a gigabyte of it costs seconds."""

    def __init__(self, text: IO[str], limit: int) -> None:
        self.text = text
        self.limit = limit
        self.held = 0  # characters of the row being read; reset after each row
        self.lines = 0  # lines consumed, skipped ones included
        self.row_start = 1  # the line the row being read began on
        self.buf: str | None = None  # text read past a blank run, given out from ``pos``
        self.pos = 0
        self._read: Callable[[int], str] = text.readline

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        line = self._read(self.limit + 1)
        if not line:
            raise StopIteration
        if not self.held:
            self.row_start = self.lines + 1  # the first line of a row (a quote may open there)
        self.held += len(line)
        self.lines += 1
        if self.held > self.limit:
            raise PermanentError("too_large", too_large_message(f"the row ending at line {self.lines}", self.limit),
                                 limit=self.limit)
        return line

    def _readline(self, size: int) -> str:
        assert self.buf is not None  # _read is this method only while text is read ahead
        found = _LINE.match(self.buf, self.pos, min(len(self.buf), self.pos + size))
        line, self.pos = found.group(), found.end()  # type: ignore[union-attr]
        if self.pos < len(self.buf) or len(line) > self.limit or line.endswith("\n"):
            return line  # a whole line (or one over the limit)
        # The text read ahead ends inside this line, or after a CR whose LF may follow.
        self._keep(None)
        more = self.text.readline(self.limit + 1)
        if line.endswith("\r") and not more.startswith("\n"):
            self._keep(more)
            return line
        return line + more

    def _keep(self, text: str | None) -> None:
        self.buf, self.pos = text or None, 0
        self._read = self.text.readline if self.buf is None else self._readline

    def skip_blank_lines(self) -> None:
        """Pass the run of empty lines ahead (after a blank row), a chunk at a time."""
        self.held = 0
        while True:
            if self.buf is None or self.pos == len(self.buf):
                self._keep(self.text.read(reading.TEXT_CHUNK))
                if self.buf is None:
                    return
            buf, start = self.buf, self.pos
            end = _BLANK_LINES.match(buf, start).end()  # type: ignore[union-attr]
            if end == len(buf) and buf.endswith("\r") and end > start:
                end -= 1  # a CR at the end: its LF may be in the next chunk
            self.lines += buf.count("\n", start, end) + buf.count("\r", start, end) - buf.count("\r\n", start, end)
            self.pos = end
            if end < len(buf) - 1 or (end == len(buf) - 1 and buf[-1] != "\r"):
                return
            if end == len(buf) - 1:  # only that CR is left
                more = self.text.read(reading.TEXT_CHUNK)
                if not more:
                    self.lines += 1
                    self._keep(None)
                    return
                self._keep("\r" + more)


_BLANK_LINES = re.compile(r"[\r\n]*")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")


_JSON_HINT = (" (the file starts with a line of JSON's shape; this source reads CSV: a JSON file belongs "
              "in a source with format = \"json\" or \"jsonl\")")
# A quote after nothing but brackets and blanks at the start of a line: JSON's
# '{"', '[{"', '["'. CSV quotes a field that holds a quote, so no CSV writer starts
# a header like that.
_JSON_START = re.compile(r'[ \t]*(?:\[[ \t]*)*(?:\{[ \t]*)?"')


def _refuse_json(first: str, line: int) -> None:
    """A JSON file dropped into a CSV source, refused as such rather than
    loaded as a CSV of strange column names (one line of JSON is a valid
    CSV header). Only lines that no CSV writer produces, or that are a JSON
    object or array of objects whole, are taken for JSON."""
    text = first.lstrip(" \t").rstrip("\r\n")
    if not text.startswith(("{", "[")):
        return
    json_like = _JSON_START.match(text) is not None
    if not json_like:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        json_like = (isinstance(value, dict) and bool(value)) or (
            isinstance(value, list) and any(isinstance(v, dict) and v for v in value))
    if json_like:
        raise PermanentError("parse_error", f"line {line}: the file does not look like CSV: it starts with "
                             f"{text[0]!r}, as JSON does; this source reads CSV (format = \"csv\"): a "
                             "JSON file belongs in a source with format = \"json\" or \"jsonl\"", line=line)


def _check_header(header: list[str], line: int, json_hint: str = "") -> None:
    if not header:
        raise PermanentError("parse_error", f"line {line}: blank where the header row should be", line=line)
    if any(name.strip() == "" for name in header):
        position = next(i for i, n in enumerate(header, 1) if n.strip() == "")
        raise PermanentError("parse_error", f"line {line}: header column {position} has no name{json_hint}",
                             line=line)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise PermanentError("parse_error", f"line {line}: header name {name!r} appears twice{json_hint}",
                                 line=line)
        seen.add(name)


def _read(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
          exact_numbers: bool) -> Iterator[TextRecord]:
    return read_csv(content, options["delimiter"], options["skip_lines"], max_record_bytes)


FORMAT = Format("csv", (".csv",), _read, {
    # A quote opens a quoted field and a line break ends a row: neither can
    # separate fields, nor can NUL (a file holding it is refused as UTF-16).
    "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "not": {"enum": ['"', "\r", "\n", "\0"]},
                  "x-expected": "one character other than a double quote, a line break or NUL", "default": ","},
    "skip_lines": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0},
})
