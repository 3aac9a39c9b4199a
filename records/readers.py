"""Format readers: bytes of a landed file in, records (dicts) out, streamed.

Each reader takes a binary stream and yields records one at a time, so
memory does not grow with the file: ``(value, text)`` pairs, where ``text``
is the record's exact JSON text for the JSON formats (what bronze stores)
and None where the JSON is encoded from the values (CSV, Parquet). Problems of the data raise
``PermanentError`` with ``parse_error`` or ``encoding_error`` and where they
were found (record or line number).
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingestd.daemon.errors import PermanentError

from . import parquetpages, parquetplan
from .arrowjson import ColumnError, Expansion, batch_texts, civil_date, leaf_count, record_error, row_text
from .jsontext import json_type, parse_record, read_json_records, too_large_message

Record = dict[str, Any]
# A record and its exact JSON text where the format has one (JSON, JSON
# Lines); None where bronze's JSON is encoded from the values (CSV, Parquet).
TextRecord = tuple[Record, bytes | None]
JsonRecord = tuple[Record, bytes]  # the JSON formats always have the text
JSON_WHITESPACE = b" \t\r\n"
_BLANK_START = frozenset(JSON_WHITESPACE)

# One record (a JSON record, a JSON Lines line, a CSV row) may be large, but
# not without bound: past this (landing.max_record_bytes) it is refused as
# too_large before it is held in memory. The row bound of the CSV reader
# bounds its fields, so the stdlib's own field limit (128 KiB, which refuses
# many real exports) is lifted.
MAX_RECORD_BYTES = 16 * 1024 * 1024
csv.field_size_limit(256 * 1024 * 1024)
PARQUET_BATCH_ROWS = parquetplan.DEFAULT_BATCH_ROWS
# Bytes of strings a batch may expand its dictionaries to (each byte costs
# about BYTE_COST while its text is built); a larger batch is halved.
PARQUET_EXPANSION = parquetplan.BATCH_BUDGET // parquetplan.BYTE_COST
PARQUET_READ_BUFFER = parquetplan.READ_BUFFER
# A row of more values than this is encoded piece by piece (arrowjson.row_text).
PARQUET_ROW_VALUES = parquetplan.BATCH_BUDGET // parquetplan.VALUE_COST
TEXT_CHUNK = 1 << 20


class LimitedReader(io.RawIOBase):
    """A binary stream that raises ``too_large`` past ``limit`` bytes.

    Wraps the *decompressed* stream, so a small gzip bomb is refused before
    its expansion reaches memory or the database.
    """

    def __init__(self, raw: IO[bytes], limit: int | None) -> None:
        self._raw = raw
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        self.count += n
        if self._limit is not None and self.count > self._limit:
            raise PermanentError("too_large", f"the content (expanded, if gzipped) exceeds landing.max_file_bytes "
                                 f"({self._limit} bytes)", limit=self._limit)
        buffer[:n] = data
        return n


def open_content(path, limit: int | None) -> IO[bytes]:
    """The file's content as a buffered binary stream, un-gzipped by suffix."""
    raw: IO[bytes] = open(path, "rb")
    if str(path).endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    return io.BufferedReader(LimitedReader(raw, limit), buffer_size=TEXT_CHUNK)


def gzip_declared_size(path) -> int | None:
    """The uncompressed size a gzip file declares in its trailer (modulo 4 GiB)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def check_file_size(path, size: int, max_file_bytes: int | None, shown: str) -> None:
    """Refuse before reading: an empty file (``parse_error``: almost always a
    failed export, quarantined for a human rather than loaded as 0 rows) and
    a file, or a gzip file's declared content, over ``max_file_bytes``."""
    if size == 0:
        raise PermanentError("parse_error", "the file is empty (0 bytes)", path=shown)
    if max_file_bytes is not None and size > max_file_bytes:
        raise PermanentError("too_large", f"file of {size} bytes exceeds landing.max_file_bytes "
                             f"({max_file_bytes})", size=size, limit=max_file_bytes)
    if max_file_bytes is not None and str(path).endswith(".gz"):
        declared = gzip_declared_size(path)
        if declared is not None and declared > max_file_bytes:
            # The gzip trailer's own size: refused without expanding anything. (It
            # can lie; the streaming limit of the reader still holds then.)
            raise PermanentError("too_large", f"gzip content of {declared} bytes exceeds landing.max_file_bytes "
                                 f"({max_file_bytes})", size=declared, limit=max_file_bytes)


def wide_encoding(head: bytes) -> str | None:
    """The encoding the start of a file looks like when it is UTF-32 (with
    or without its byte order mark) or UTF-16 without one: text whose code
    units are mostly zero bytes, which UTF-8 text never holds. None else."""
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return f"UTF-32{'LE' if head[0] else 'BE'} (it starts with a UTF-32 byte order mark)"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None  # UTF-16 with its mark: the reader decides
    units = len(head) // 4 * 4
    if units >= 4:
        for order, high, top in (("LE", 3, 2), ("BE", 0, 1)):
            # Every code point is below 0x110000: one byte of each unit is 0, the next at most 0x10.
            if not any(head[high:units:4]) and max(head[top:units:4]) <= 0x10:
                return f"UTF-32{order} without a byte order mark (every fourth byte is 0)"
    pairs = len(head) // 2
    even, odd = head[0:pairs * 2:2].count(0), head[1:pairs * 2:2].count(0)
    for order, zeros, others in (("LE", odd, even), ("BE", even, odd)):
        # ASCII in UTF-16 has a 0 in every other byte; stray NULs in UTF-8 do not line up.
        if zeros >= max(2, pairs // 8) and others <= zeros // 16:
            return f"UTF-16{order} without a byte order mark (every other byte is 0)"
    return None


WIDE_SAMPLE = 4096  # bytes looked at for UTF-16 and UTF-32


def _refuse_wide(stream: IO[bytes], what: str) -> None:
    head = stream.peek(WIDE_SAMPLE)[:WIDE_SAMPLE] if hasattr(stream, "peek") else b""
    found = wide_encoding(head)
    if found:
        raise PermanentError("encoding_error", f"the file looks like {found}; {what}", encoding=found.split()[0])


def _gzip_guard(exc: Exception) -> PermanentError:
    return PermanentError("parse_error", f"corrupt gzip stream: {exc}")


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
        _refuse_wide(stream, "CSV must be UTF-8 (or UTF-16 with its byte order mark)")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None
    encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    lines = _RowLines(text, max_record_bytes)
    json_hint = ""
    try:
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
        if "field larger than field limit" in str(exc):
            raise PermanentError("too_large", too_large_message(f"line {lines.lines}", max_record_bytes),
                                 limit=max_record_bytes) from None
        line = lines.lines
        if "unexpected end of data" in str(exc):
            # A quote opened and never closed takes every line after it into one field: the
            # line to look at is where it opened, not where the file ends.
            line = lines.row_start
            where = f" (the file ends at line {lines.lines})" if lines.lines > line else ""
            raise PermanentError("parse_error", f"line {line}: a quoted field that opens on this line is never "
                                 f"closed{where}", line=line) from None
        raise PermanentError("parse_error", f"line {line}: {exc}{json_hint}", line=line) from None
    except UnicodeDecodeError as exc:
        raise _not_decodable(exc, encoding, lines) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None


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
                self._keep(self.text.read(TEXT_CHUNK))
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
                more = self.text.read(TEXT_CHUNK)
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


def _check_byte_order_mark(stream: IO[bytes]) -> None:
    """Skip a UTF-8 byte order mark; refuse UTF-16 and UTF-32 (JSON is UTF-8)."""
    _refuse_wide(stream, "JSON must be UTF-8")
    head = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
    if head == b"\xef\xbb\xbf":
        stream.read(3)
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise PermanentError("encoding_error", "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                             "JSON must be UTF-8")


def _skip_whitespace(stream: IO[bytes]) -> int:
    """Consume the whitespace ahead (blank lines, and the indent of the next
    line), a buffer at a time; the line breaks passed. Blank lines carry no
    record and count to no line's size: a gigabyte of them costs seconds."""
    if not hasattr(stream, "peek"):
        return 0
    breaks = 0
    while ahead := stream.peek(TEXT_CHUNK):
        blank = len(ahead) - len(ahead.lstrip(JSON_WHITESPACE))
        if not blank:
            break
        breaks += ahead.count(b"\n", 0, blank)
        stream.read(blank)
        if blank < len(ahead):
            break
    return breaks


def read_jsonl(stream: IO[bytes], max_record_bytes: int = MAX_RECORD_BYTES,
               exact_numbers: bool = True) -> Iterator[JsonRecord]:
    """JSON Lines: one object per line, each kept as its own text; blank
    lines are skipped; a line longer than ``max_record_bytes`` is
    ``too_large``, refused before it is held. A file with no record at all
    is a ``parse_error``."""
    found = False
    readline = stream.readline
    try:
        _check_byte_order_mark(stream)
        line_no = _skip_whitespace(stream)
        # A record of max_record_bytes and its line end (CRLF: 2 bytes) are read whole.
        while line := readline(max_record_bytes + 2):
            line_no += 1
            if line[0] in _BLANK_START and not line.strip(JSON_WHITESPACE):
                # The breaks passed; this line's own among them when it was cut short.
                line_no += _skip_whitespace(stream) - (not line.endswith(b"\n"))
                continue
            if len(line) - _line_end(line) > max_record_bytes:
                raise PermanentError("too_large", too_large_message(f"line {line_no}", max_record_bytes),
                                     limit=max_record_bytes)
            value = parse_record(line, f"line {line_no}", exact_numbers=exact_numbers)
            if type(value) is not dict:
                raise PermanentError("parse_error", f"line {line_no}: {json_type(value)}, not an object",
                                     line=line_no)
            found = True
            yield value, line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None
    if not found:
        raise PermanentError("parse_error", "the file holds no records (only blank lines)")


def _line_end(line: bytes) -> int:
    return 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0


def read_json(stream: IO[bytes], records_path: str | None = None, max_record_bytes: int = MAX_RECORD_BYTES,
              exact_numbers: bool = True) -> Iterator[JsonRecord]:
    """A JSON array of objects, or an object holding it at ``records_path``
    (dotted, e.g. ``observations`` or ``data.items``), each record kept as
    its own text. An empty array there gives no records; a missing path, a
    document of only whitespace and anything after the document are parse
    errors. NaN and Infinity are not JSON and are refused."""
    try:
        _check_byte_order_mark(stream)
        yield from read_json_records(stream, records_path, max_record_bytes, TEXT_CHUNK, exact_numbers)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None


def read_parquet(path, max_record_bytes: int = MAX_RECORD_BYTES, values: bool = True) -> Iterator[TextRecord]:
    """Parquet via pyarrow, a batch of rows at a time, each row as JSON text
    built from the Arrow columns (one form per type: records/arrowjson.py).
    The value validation sees is read back from that text (one view of the
    row, the stored one); with ``values`` False (nothing validates) it is {}.

    Memory is bounded whatever the file claims: the page headers say how
    many rows a batch may hold (records/parquetplan.py), a row whose
    JSON cannot fit ``max_record_bytes`` is too_large before it is decoded
    or expanded. Two columns (or struct fields) of one name are a
    ``parse_error``: a JSON object keeps one. Whatever pyarrow raises on a
    file it cannot read whole is a ``parse_error`` naming what failed; a
    value without a JSON form names its record."""
    number = 0
    try:
        # The footer is read and checked here first: some of pyarrow's
        # accessors abort the process on a corrupt one (parquetpages.Footer).
        with open(path, "rb") as fh:
            footer = parquetpages.read_footer(fh)
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
        _check_names(schema, "")
        layout = parquetplan.plan(path, footer, max_record_bytes, _dictionary_columns(path, metadata, footer),
                                  (_name_bytes(list(schema), False), _name_bytes(list(schema), True)))
        # No pre-buffering and a small read buffer: pyarrow otherwise holds
        # whole compressed column chunks (row groups of hundreds of MB).
        parquet = pq.ParquetFile(path, metadata=metadata, read_dictionary=layout.dictionaries or None,
                                 pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)
        # INT96 timestamps are read at nanoseconds (their precision), which
        # wrap past the years 1677 to 2262; read again at milliseconds (any
        # INT96 fits), the wrapped ones are told apart and made exact.
        int96 = sorted({leaf.path.split(".")[0] for leaf in footer.leaves if leaf.physical_type == "INT96"}
                       & set(schema.names))
        coarse = pq.ParquetFile(path, metadata=metadata, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER,
                                coerce_int96_timestamp_unit="ms") if int96 else None
        for group, rows in layout.batches:
            checks = coarse.iter_batches(batch_size=rows, row_groups=[group], columns=int96) if coarse else None
            for batch in parquet.iter_batches(batch_size=rows, row_groups=[group]):
                if checks is not None:
                    batch = _exact_int96(batch, next(checks))
                for texts in _parquet_texts(batch, number, max_record_bytes):
                    for text in texts:
                        number += 1
                        if len(text) > max_record_bytes:
                            raise PermanentError("too_large", too_large_message(f"record {number}",
                                                                                max_record_bytes), record=number)
                        yield (_parquet_value(text, number) if values else {}), text
                    del texts  # the piece's texts go before the next is built
    except PermanentError:
        raise
    except (pa.ArrowException, OSError, ValueError, OverflowError, TypeError, KeyError, IndexError,
            NotImplementedError) as exc:
        where = f" (after record {number})" if number else ""
        raise PermanentError("parse_error", f"not a readable Parquet file{where}: {type(exc).__name__}: {exc}",
                             record=number or None) from None


def _parquet_value(text: bytes, number: int) -> Any:
    """The value of a row's JSON text. Its floats are the shortest texts of
    doubles, which are their values, except past 2**53 (written with an
    exponent: "1.5e+300"), where the double may not be what is written."""
    value = orjson.loads(text)
    # "+" first: one byte is found by memchr, where "e+" probes every "e" of the names.
    if b"+" in text and b"e+" in text:
        value = parse_record(text, f"record {number}", depth_checked=True, parsed=value)
    return value


def _name_bytes(fields: list[pa.Field], structs: bool) -> int:
    """The bytes the names of ``fields`` take in the JSON text of every row
    (quoted, with a colon and a comma), and with ``structs`` those of the
    fields of structs (a null struct holds none)."""
    total = 0
    for field in fields:
        total += len(orjson.dumps(field.name)) + 2
        if structs and pa.types.is_struct(field.type):
            total += _name_bytes([field.type.field(i) for i in range(field.type.num_fields)], True)
    return total


def _dictionary_columns(path: Any, metadata: pq.FileMetaData, footer: parquetpages.Footer) -> set[str]:
    """The string columns pyarrow reads as dictionary arrays when asked: not
    those it reads as an extension type (JSON's arrow.json), which it expands."""
    strings = [leaf.path for leaf in footer.leaves if leaf.physical_type == "BYTE_ARRAY"]
    if not strings:
        return set()
    schema = pq.ParquetFile(path, metadata=metadata, read_dictionary=strings).schema_arrow
    kinds = [kind for field in schema for kind in _arrow_leaves(field.type)]
    if len(kinds) != len(footer.leaves):
        return set()  # not told apart: none is read as a dictionary (each expanded, and counted so)
    return {leaf.path for leaf, kind in zip(footer.leaves, kinds, strict=True) if pa.types.is_dictionary(kind)}


def _arrow_leaves(kind: pa.DataType) -> Iterator[pa.DataType]:
    """The types of the Parquet columns (leaves) an Arrow type is read from, in order."""
    if isinstance(kind, pa.BaseExtensionType):
        yield from (kind for _ in _arrow_leaves(kind.storage_type))  # the extension, not a dictionary
    elif pa.types.is_struct(kind):
        for index in range(kind.num_fields):
            yield from _arrow_leaves(kind.field(index).type)
    elif pa.types.is_map(kind):
        yield from _arrow_leaves(kind.key_type)
        yield from _arrow_leaves(kind.item_type)
    elif isinstance(kind, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)) or pa.types.is_list_view(kind) \
            or pa.types.is_large_list_view(kind):
        yield from _arrow_leaves(kind.value_type)
    else:
        yield kind


def _exact_int96(batch: pa.RecordBatch, coarse: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its INT96 columns (read at nanoseconds) exact: a column
    where a value wrapped becomes the text of each value (the form of a
    timestamp), from its milliseconds and its wrapped nanoseconds."""
    for name in coarse.schema.names:
        fine, rough = batch.column(name), coarse.column(name)
        if not pa.types.is_timestamp(fine.type) or not pa.types.is_timestamp(rough.type):
            # INT96 inside lists or structs: wrapped values are refused, not changed
            if not _same_instants(fine, rough):
                raise PermanentError("parse_error", f"column {name!r}: INT96 timestamps outside the years 1677 to "
                                     "2262 inside a nested column cannot be read exactly", column=name)
            continue
        nanos, millis = fine.view(pa.int64()).to_pylist(), rough.view(pa.int64()).to_pylist()
        if all(n is None or n // 1_000_000 == m for n, m in zip(nanos, millis, strict=True)):
            continue
        texts = [None if m is None else _nanosecond_text(m * 1_000_000 + (n - m * 1_000_000) % (1 << 64))
                 for n, m in zip(nanos, millis, strict=True)]
        batch = batch.set_column(batch.schema.get_field_index(name), name, pa.array(texts, pa.large_string()))
    return batch


def _same_instants(fine: pa.Array, rough: pa.Array) -> bool:
    if pa.types.is_timestamp(fine.type) and pa.types.is_timestamp(rough.type):
        return all(n is None or n // 1_000_000 == m
                   for n, m in zip(fine.view(pa.int64()).to_pylist(), rough.view(pa.int64()).to_pylist(), strict=True))
    if pa.types.is_struct(fine.type):
        return all(_same_instants(a, b) for a, b in zip(fine.flatten(), rough.flatten(), strict=True))
    if pa.types.is_list(fine.type) or pa.types.is_large_list(fine.type) or pa.types.is_map(fine.type):
        return _same_instants(fine.values, rough.values)
    return True


def _nanosecond_text(value: int) -> str:
    """A timestamp's text at nanoseconds (arrowjson's form), for any year."""
    seconds, fraction = divmod(value, 10**9)
    days, clock = divmod(seconds, 86_400)
    return f"{civil_date(days)} {clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}.{fraction:09d}"


def _parquet_texts(batch: pa.RecordBatch, before: int, limit: int) -> Iterator[list[bytes]]:
    """The JSON texts of a batch's rows, in lists. Strings that would expand
    past what a batch may hold (dictionary entries used many times) are
    encoded half a batch at a time; a row whose strings alone exceed
    ``limit`` is too_large before they are expanded."""
    try:
        if batch.num_rows == 1 and sum(leaf_count(column) for column in batch.columns) > PARQUET_ROW_VALUES:
            yield [row_text(batch, limit)]  # a row of many values: its text built piece by piece
        else:
            yield batch_texts(batch, PARQUET_EXPANSION if batch.num_rows > 1 else limit)
        return
    except Expansion as exc:
        if batch.num_rows == 1:
            raise PermanentError("too_large", too_large_message(f"record {before + 1}", limit)
                                 + f" ({exc})", record=before + 1) from None
    except ColumnError as exc:
        raise record_error(exc, before + 1) from None
    half = batch.num_rows // 2
    yield from _parquet_texts(batch.slice(0, half), before, limit)
    yield from _parquet_texts(batch.slice(half), before + half, limit)


def _check_names(schema: pa.Schema | pa.StructType, where: str) -> None:
    """Refuse two fields of one name in the columns or in any struct."""
    fields = list(schema) if isinstance(schema, pa.Schema) else [schema.field(i) for i in range(schema.num_fields)]
    seen: dict[str, int] = {}
    for position, field in enumerate(fields, 1):
        if field.name in seen:
            what = f"columns {seen[field.name]} and {position}" if not where else \
                f"fields {seen[field.name]} and {position} of the struct column {where!r}"
            raise PermanentError("parse_error", f"{what} are both named {field.name!r}: a JSON object keeps one "
                                 "of them (rename one in the file)", column=field.name)
        seen[field.name] = position
        _check_nested_names(field.type, f"{where}.{field.name}" if where else field.name)


def _check_nested_names(kind: pa.DataType, where: str) -> None:
    if pa.types.is_struct(kind):
        _check_names(kind, where)
    elif pa.types.is_map(kind):
        _check_nested_names(kind.key_type, where + ".key")
        _check_nested_names(kind.item_type, where + ".value")
    elif isinstance(kind, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)) or pa.types.is_list_view(kind) \
            or pa.types.is_large_list_view(kind):
        _check_nested_names(kind.value_type, where + ".element")
    elif pa.types.is_dictionary(kind):
        _check_nested_names(kind.value_type, where)


def read_records(path, fmt: str, limit: int | None, records_path: str | None = None,
                 delimiter: str = ",", skip_lines: int = 0, max_record_bytes: int = MAX_RECORD_BYTES,
                 exact_numbers: bool = True) -> Iterator[TextRecord]:
    """Records of the file at ``path`` in format ``fmt`` (gzip by ``.gz``
    suffix); ``limit`` bounds the whole (expanded) content. Values of JSON
    records have exact integers unless ``exact_numbers`` is False (nothing
    validates them); their text is exact either way.

    Whatever a reader raises ends here as a reason code: a file that cannot
    be read is ``unreadable_file``, anything else unforeseen a
    ``parse_error`` naming the record reached, never an error that has the
    event redelivered until the broker gives up on it."""
    if fmt not in ("csv", "json", "jsonl", "parquet"):
        raise ValueError(f"unknown format {fmt!r}")
    number = 0
    try:
        for number, record in enumerate(_records(path, fmt, limit, records_path, delimiter,  # noqa: B007 - read below
                                                  skip_lines, max_record_bytes, exact_numbers), 1):
            yield record
    except (PermanentError, MemoryError):
        raise  # a MemoryError is ours to see: memory is bounded by the limits
    except OSError as exc:
        raise PermanentError("unreadable_file", f"cannot read the file: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - one bad file must not loop through redeliveries
        raise PermanentError("parse_error", f"record {number + 1}: the {fmt} reader failed: "
                             f"{type(exc).__name__}: {exc}", record=number + 1) from None


def _records(path, fmt: str, limit: int | None, records_path: str | None, delimiter: str, skip_lines: int,
             max_record_bytes: int, exact_numbers: bool) -> Iterator[TextRecord]:
    if fmt == "parquet":
        yield from read_parquet(path, max_record_bytes, exact_numbers)
        return
    with open_content(path, limit) as stream:
        if fmt == "csv":
            yield from read_csv(stream, delimiter, skip_lines, max_record_bytes)
        elif fmt == "jsonl":
            yield from read_jsonl(stream, max_record_bytes, exact_numbers)
        else:
            yield from read_json(stream, records_path, max_record_bytes, exact_numbers)
