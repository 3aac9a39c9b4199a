"""Format readers: bytes of a landed file in, records (dicts) out, streamed.

Each reader takes a binary stream and yields ``dict`` records one at a time,
so memory does not grow with the file. Problems of the data raise
``PermanentError`` with ``parse_error`` or ``encoding_error`` and where they
were found (record or line number).
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from typing import IO, Any, Callable, Iterator

import ijson
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingestd.daemon.errors import PermanentError

Record = dict[str, Any]

# One record (a CSV field, a JSON Lines line) may be large, but not without
# bound: past this it is refused as too_large before it is held in memory.
# The stdlib's CSV default of 128 KiB refuses many real exports.
MAX_RECORD_BYTES = 64 * 1024 * 1024
csv.field_size_limit(MAX_RECORD_BYTES)
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

    def readinto(self, buffer) -> int:  # type: ignore[override]
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


def _gzip_guard(exc: Exception) -> PermanentError:
    return PermanentError("parse_error", f"corrupt gzip stream: {exc}")


def read_csv(stream: IO[bytes], delimiter: str = ",", skip_lines: int = 0) -> Iterator[Record]:
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
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        try:
            for _ in range(skip_lines):
                text.readline()
            header = next(reader)
        except StopIteration:
            return
        _check_header(header)
        width = len(header)
        for row in reader:
            if len(row) != width:
                if not row:
                    continue  # a blank line carries no record
                line = reader.line_num + skip_lines
                hint = " (a preamble before the header? see skip_lines)" if not skip_lines and line < 50 else ""
                raise PermanentError(
                    "parse_error", f"line {line}: {len(row)} fields where the header has {width}{hint}", line=line)
            yield dict(zip(header, row))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise PermanentError("too_large", f"line {reader.line_num + skip_lines}: a field exceeds "
                                 f"{MAX_RECORD_BYTES} bytes", limit=MAX_RECORD_BYTES) from None
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


def _check_header(header: list[str]) -> None:
    if any(name.strip() == "" for name in header):
        position = next(i for i, n in enumerate(header, 1) if n.strip() == "")
        raise PermanentError("parse_error", f"line 1: header column {position} has no name", line=1)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise PermanentError("parse_error", f"line 1: header name {name!r} appears twice", line=1)
        seen.add(name)


def _lines(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            raise PermanentError("too_large", f"a line exceeds {limit} bytes", limit=limit)
        yield line


def read_jsonl(stream: IO[bytes], max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Record]:
    """JSON Lines: one object per line; blank lines are skipped; a line longer
    than ``max_record_bytes`` is ``too_large``, refused before it is held."""
    line_no = 0
    try:
        for line_no, line in enumerate(_lines(stream, max_record_bytes), 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if _is_utf8_problem(line):
                    raise PermanentError("encoding_error", f"line {line_no}: not valid UTF-8", line=line_no) from None
                raise PermanentError("parse_error", f"line {line_no}: {exc}", line=line_no) from None
            if not isinstance(doc, dict):
                raise PermanentError(
                    "parse_error", f"line {line_no}: a {_json_type(doc)}, not an object", line=line_no
                )
            yield doc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None


def _is_utf8_problem(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _json_type(doc: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(doc), "number")


def read_json(stream: IO[bytes], records_path: str | None = None,
              reopen: Callable[[], IO[bytes]] | None = None) -> Iterator[Record]:
    """A JSON array of objects, or an object holding it at ``records_path``
    (dotted, e.g. ``observations`` or ``data.items``), parsed incrementally.
    An empty array there gives no records; a missing path is a parse error
    (``reopen`` gives a fresh stream to tell the two apart).

    NaN and Infinity are not JSON and are refused (``parse_error``).
    """
    prefix = f"{records_path}.item" if records_path else "item"
    number = 0
    try:
        if stream.peek(3)[:3] == b"\xef\xbb\xbf":  # type: ignore[attr-defined]
            stream.read(3)  # a UTF-8 BOM, which the JSON parser would refuse
        head = stream.peek(64)[:64].lstrip(b" \t\r\n")  # type: ignore[attr-defined]
        if not head:
            return
        expected = b"{" if records_path else b"["
        if head[:1] != expected:
            what = "an object" if records_path else "an array"
            raise PermanentError(
                "parse_error",
                f"the document is not {what}" + (f" (records_path = {records_path!r})" if records_path else ""),
            )
        found = False
        for number, doc in enumerate(ijson.items(stream, prefix, use_float=True), 1):
            found = True
            if not isinstance(doc, dict):
                raise PermanentError(
                    "parse_error", f"record {number}: a {_json_type(doc)}, not an object", record=number
                )
            yield doc
        if records_path and not found and not _holds_array(reopen, records_path):
            raise PermanentError("parse_error", f"no array at records_path {records_path!r}")
    except ijson.common.IncompleteJSONError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete JSON"
        if "invalid UTF-8" in message or "utf-8" in message.lower():
            raise PermanentError("encoding_error", f"after record {number}: {message}", record=number) from None
        raise PermanentError("parse_error", f"after record {number}: {message}", record=number) from None
    except UnicodeDecodeError as exc:
        raise PermanentError("encoding_error", f"after record {number}: not valid UTF-8 ({exc.reason})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_guard(exc) from None


def _holds_array(reopen: Callable[[], IO[bytes]] | None, records_path: str) -> bool:
    """Whether the document has an array at ``records_path`` (rarely asked:
    only when it gave no records)."""
    if reopen is None:
        return False
    with reopen() as stream:
        if stream.peek(3)[:3] == b"\xef\xbb\xbf":  # type: ignore[attr-defined]
            stream.read(3)
        return any(prefix == records_path and event == "start_array"
                   for prefix, event, _ in ijson.parse(stream))


def _parquet_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # jsonb has no NaN/Infinity: kept as the strings PostgreSQL itself uses.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _stringify_temporal(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamps as ISO text, decided by Arrow, so INT96 values outside
    Python's datetime range (years past 9999) still load."""
    columns = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type):
            column = pc.cast(column, pa.string())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def read_parquet(path) -> Iterator[Record]:
    """Parquet via pyarrow, a row group batch at a time."""
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in _stringify_temporal(batch).to_pylist():
                yield {k: _parquet_value(v) for k, v in row.items()}
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PermanentError("parse_error", f"not a readable Parquet file: {exc}") from None


def read_records(path, fmt: str, limit: int | None, records_path: str | None = None,
                 delimiter: str = ",", skip_lines: int = 0) -> Iterator[Record]:
    """Records of the file at ``path`` in format ``fmt`` (gzip by ``.gz`` suffix)."""
    if fmt == "parquet":
        yield from read_parquet(path)
        return
    with open_content(path, limit) as stream:
        if fmt == "csv":
            yield from read_csv(stream, delimiter, skip_lines)
        elif fmt == "jsonl":
            yield from read_jsonl(stream)
        elif fmt == "json":
            yield from read_json(stream, records_path, lambda: open_content(path, limit))
        else:
            raise ValueError(f"unknown format {fmt!r}")
