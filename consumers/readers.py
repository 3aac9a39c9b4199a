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
import os
import zlib
from collections.abc import Iterator
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingestd.daemon.errors import PermanentError

from .arrowjson import ColumnError, batch_texts, record_error
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
PARQUET_BATCH_ROWS = 8192
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
            raise PermanentError(
                "too_large", f"content exceeds the limit of {self._limit} bytes", limit=self._limit
            )
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
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None
    encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    lines = _RowLines(text, max_record_bytes)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        try:
            for _ in range(skip_lines):
                next(lines, None)
                lines.held = 0
            header = next(reader)
        except StopIteration:
            raise PermanentError("parse_error", "the file has no header row (nothing but a byte order mark "
                                 "or preamble lines)") from None
        _check_header(header, reader.line_num + skip_lines)
        width = len(header)
        for row in reader:
            if len(row) != width:
                if not row:
                    continue  # a blank line carries no record
                line = reader.line_num + skip_lines
                hint = " (a preamble before the header? see skip_lines)" if not skip_lines and line < 50 else ""
                raise PermanentError(
                    "parse_error", f"line {line}: {len(row)} fields where the header has {width}{hint}", line=line)
            lines.held = 0
            yield dict(zip(header, row, strict=True)), None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            where = f"line {reader.line_num + skip_lines}"
            raise PermanentError("too_large", too_large_message(where, max_record_bytes),
                                 limit=max_record_bytes) from None
        line = reader.line_num + skip_lines
        raise PermanentError("parse_error", f"line {line}: {exc}", line=line) from None
    except UnicodeDecodeError as exc:
        # The text layer decodes a chunk ahead of the CSV reader: the lines the
        # reader took, plus the line breaks before the bad byte in the chunk.
        newline = "\n".encode(encoding.removesuffix("-sig")) if encoding == "utf-16" else b"\n"
        line = reader.line_num + skip_lines + bytes(exc.object[: exc.start]).count(newline) + 1
        raise PermanentError(
            "encoding_error",
            f"near line {line}: not valid {encoding.removesuffix('-sig').upper()} "
            f"({exc.reason}, byte 0x{exc.object[exc.start]:02x})",
            line=line,
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None


class _RowLines:
    """The lines of a text stream for the CSV reader, refusing (``too_large``)
    a line, or a row of quoted lines, longer than ``limit`` characters: the
    reader builds a row whole, so its size is bounded before it is held."""

    def __init__(self, text: IO[str], limit: int) -> None:
        self.text = text
        self.limit = limit
        self.held = 0  # characters of the row being read; reset after each row
        self.lines = 0

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.held += len(line)
        self.lines += 1
        if self.held > self.limit:
            raise PermanentError("too_large", too_large_message(f"the row ending at line {self.lines}", self.limit),
                                 limit=self.limit)
        return line


def _check_header(header: list[str], line: int) -> None:
    if not header:
        raise PermanentError("parse_error", f"line {line}: blank where the header row should be", line=line)
    if any(name.strip() == "" for name in header):
        position = next(i for i, n in enumerate(header, 1) if n.strip() == "")
        raise PermanentError("parse_error", f"line {line}: header column {position} has no name", line=line)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise PermanentError("parse_error", f"line {line}: header name {name!r} appears twice", line=line)
        seen.add(name)


def _check_byte_order_mark(stream: IO[bytes]) -> None:
    """Skip a UTF-8 byte order mark; refuse UTF-16 (JSON is UTF-8)."""
    head = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
    if head == b"\xef\xbb\xbf":
        stream.read(3)
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise PermanentError("encoding_error", "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                             "JSON must be UTF-8")


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
        line_no = 0
        while line := readline(max_record_bytes + 1):
            line_no += 1
            if len(line) > max_record_bytes and not line.endswith(b"\n"):
                raise PermanentError("too_large", too_large_message(f"line {line_no}", max_record_bytes),
                                     limit=max_record_bytes)
            if line[0] in _BLANK_START and not line.strip(JSON_WHITESPACE):
                continue
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
    built from the Arrow columns (one form per type: consumers/arrowjson.py).
    The value validation sees is read back from that text (one view of the
    row, the stored one); with ``values`` False (nothing validates) it is {}.

    Whatever pyarrow raises on a file it cannot read whole is a ``parse_error``
    naming what failed; a value without a JSON form names its record."""
    number = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            try:
                texts = batch_texts(batch)
            except ColumnError as exc:
                raise record_error(exc, number + 1) from None
            for text in texts:
                number += 1
                if len(text) > max_record_bytes:
                    raise PermanentError("too_large", too_large_message(f"record {number}", max_record_bytes),
                                         record=number)
                yield (orjson.loads(text) if values else {}), text
    except PermanentError:
        raise
    except (pa.ArrowException, OSError, ValueError, OverflowError, TypeError, KeyError, IndexError,
            NotImplementedError) as exc:
        where = f" (after record {number})" if number else ""
        raise PermanentError("parse_error", f"not a readable Parquet file{where}: {type(exc).__name__}: {exc}",
                             record=number or None) from None


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
