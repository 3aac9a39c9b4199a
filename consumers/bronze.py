"""Bronze tables: created on first use from ``bronze._template``, filled by COPY.

Records are encoded into PostgreSQL's binary COPY format as they are read, and
the COPY pulls them through a file-like object: the file is streamed from
disk to the server without ever being held whole in memory.
"""
from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ingestd.daemon import partitions
from ingestd.daemon.errors import PermanentError
from ingestd.daemon.landing import SOURCE_NAME
from ingestd.daemon.sources import SourceConfig
from ingestd.records.jsonrecord import find_string, has_nul_escape
from ingestd.records.reading import KNOWN_VALID

from .quality import RunQuality
from .validation import RecordValidator

# (position in the input, value for validation, exact JSON text or None)
NumberedRecord = tuple[int, Any, "bytes | None"]

COPY_COLUMNS = (
    "source", "raw_data", "record_number", "validation_status", "validation_errors",
    "source_timestamp", "pipeline_run_id", "event_id", "file_path", "file_hash", "file_size",
    "api_endpoint", "api_response_code",
)
CHUNK_BYTES = 256 * 1024

# PostgreSQL binary COPY: signature, flags, header extension length; each row
# is an int16 field count then (int32 length, bytes) per field, -1 for NULL.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
NULL_FIELD = struct.pack("!i", -1)
_FIELD_COUNT = struct.Struct("!h")
_NUMBER_FIELD = struct.Struct("!iq")
_JSONB_HEADER = struct.Struct("!iB")
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _binary_field(data: bytes) -> bytes:
    return struct.pack("!i", len(data)) + data


def _binary_value(column: str, value: Any) -> bytes:
    """Binary COPY encoding of one lineage column's value."""
    if value is None:
        return NULL_FIELD
    if column in ("pipeline_run_id", "event_id"):
        return _binary_field(uuid.UUID(str(value)).bytes)
    if column == "source_timestamp":
        micros = (value - _PG_EPOCH) // dt.timedelta(microseconds=1)
        return _binary_field(struct.pack("!q", micros))
    if column == "file_size":
        return _binary_field(struct.pack("!q", int(value)))
    if column == "api_response_code":
        return _binary_field(struct.pack("!i", int(value)))
    # text columns; a name that is not valid UTF-8 keeps its bytes visible as escapes
    return _binary_field(str(value).encode("utf-8", "backslashreplace"))


def bronze_table(source: str) -> sql.Composed:
    """``bronze.<source>`` as a quoted identifier, after validating the name."""
    if not SOURCE_NAME.match(source):
        raise ValueError(f"invalid source name {source!r}")
    return sql.SQL("bronze.{}").format(sql.Identifier(source))


def ensure_bronze_table(cur: psycopg2.extensions.cursor, source: SourceConfig, by: str = "ingestd") -> None:
    """Create ``bronze.<source>`` if missing: a plain table, or one
    partitioned by month (``partition = "month"``, daemon/partitions.py).
    Serialised by a transaction-level advisory lock, since concurrent
    CREATE TABLE IF NOT EXISTS can still fail."""
    table = bronze_table(source.name)
    partitions.lock_source(cur, source.name)
    if source.partition == "month":
        cur.execute("SELECT to_regclass(%s) IS NULL", (f'bronze."{source.name}"',))
        if cur.fetchone()[0]:
            partitions.create_partitioned(cur, source.name, source.partition_by, by)
        return
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE bronze._template INCLUDING ALL)").format(table))


def encode_record(record: Any, number: int) -> bytes:
    """JSON text of a record read as values (a CSV row), or the reason
    PostgreSQL could not store it."""
    try:
        raw = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise PermanentError("parse_error", f"record {number}: cannot be stored as JSON: {exc}",
                             record=number) from None
    if has_nul_escape(raw):
        pointer = find_string(record, lambda s: "\x00" in s)
        raise PermanentError("load_error", f"record {number}: the string at {pointer} holds U+0000, which "
                             "PostgreSQL jsonb cannot store", record=number, pointer=pointer)
    return raw


@dataclass
class LoadStats:
    rows_total: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    first_errors: list[dict[str, Any]] = field(default_factory=list)
    quality: RunQuality | None = None


def check_invalid_ratio(stats: LoadStats, max_invalid_ratio: float) -> None:
    """``schema_rejected`` when more records fail the schema than the source allows."""
    if stats.rows_total and stats.rows_invalid / stats.rows_total > max_invalid_ratio:
        raise PermanentError(
            "schema_rejected",
            f"{stats.rows_invalid} of {stats.rows_total} records fail the schema "
            f"(ratio {stats.rows_invalid / stats.rows_total:.3f} > max_invalid_ratio {max_invalid_ratio})",
            rows_total=stats.rows_total, rows_invalid=stats.rows_invalid, examples=stats.first_errors,
            quality=stats.quality.summary(stats.rows_total) if stats.quality is not None else None,
        )


# One input's share of a COPY: (records, validator, source, lineage, stats).
CopyPart = tuple[Iterable[NumberedRecord], RecordValidator, str, dict[str, Any], LoadStats]


class CopyStream:
    """A read-only file object producing binary COPY rows from records.

    Binary COPY spares the server the text parsing of every lineage column
    and the escaping of the JSON (about a quarter of the load time with text
    COPY on Fitbit-shaped rows). ``lineage`` holds the per-load values of the
    columns after the validation ones (``COPY_COLUMNS[5:]``), as Python
    values; they are encoded once.

    ``of_parts`` makes one stream of several inputs' records, each with its
    own lineage and stats (a group of small files in one COPY statement);
    ``part`` is then the index of the input being read, which is the one a
    failure of reading belongs to.
    """

    def __init__(self, records: Iterable[NumberedRecord], validator: RecordValidator, source: str,
                 lineage: dict[str, Any], stats: LoadStats) -> None:
        # ``records``: (position, value, text) triples; positions stay true
        # where an input leaves records out. ``text`` is the record's exact
        # JSON text, or None to encode it from the value.
        self._start([(records, validator, source, lineage, stats)])

    @classmethod
    def of_parts(cls, parts: list[CopyPart]) -> CopyStream:
        stream = cls.__new__(cls)
        stream._start(parts)
        return stream

    def _start(self, parts: list[CopyPart]) -> None:
        self.part = 0
        self._rows = self._pieces(parts)
        self._buffer = bytearray(COPY_SIGNATURE)
        self._done = False
        # psycopg2 turns an exception raised by read() into a generic COPY
        # error; the original is kept here so its reason code survives.
        self.failure: BaseException | None = None

    def _pieces(self, parts: list[CopyPart]) -> Iterator[bytes]:
        for index, part in enumerate(parts):
            self.part = index
            yield from self._encode(*part)
        yield COPY_TRAILER

    def _encode(self, records, validator, source, lineage, stats) -> Iterator[bytes]:
        """Rows, joined into pieces of about ``CHUNK_BYTES`` (one generator
        step and one copy into the buffer a piece, not a row)."""
        head = _FIELD_COUNT.pack(len(COPY_COLUMNS)) + _binary_field(source.encode())
        tail = b"".join(_binary_value(column, lineage.get(column)) for column in COPY_COLUMNS[5:])
        # A row: the head and the jsonb field's length and version byte 1,
        # the JSON text, then the record number and the validation columns.
        opening = struct.Struct(f"!{len(head)}siB").pack
        valid_tail = _binary_field(b"valid") + NULL_FIELD + tail
        valid_end = struct.Struct(f"!iq{len(valid_tail)}s").pack
        invalid_status = _binary_field(b"invalid")
        number_field = _NUMBER_FIELD.pack
        jsonb_length = _JSONB_HEADER.pack
        dumps = orjson.dumps
        errors_of = validator.errors
        known_valid = KNOWN_VALID
        if stats.quality is None:
            stats.quality = RunQuality(validator.schema)
        observe = stats.quality.observe
        count = 0
        piece: list[bytes] = []
        append = piece.append
        size = 0
        for number, record, raw in records:
            count += 1
            if raw is None:
                raw = encode_record(record, number)
            errors = None if record is known_valid else errors_of(record)
            observe(record, errors)
            append(opening(head, len(raw) + 1, 1))
            append(raw)
            if errors is None:
                stats.rows_valid += 1
                append(valid_end(8, number, valid_tail))
            else:
                stats.rows_invalid += 1
                if len(stats.first_errors) < 5:
                    stats.first_errors.append({"record": number, "errors": errors[:3]})
                err = dumps(errors)
                append(number_field(8, number) + invalid_status + jsonb_length(len(err) + 1, 1) + err + tail)
            size += len(raw)
            if size >= CHUNK_BYTES:
                yield b"".join(piece)
                piece.clear()
                size = 0
        stats.rows_total = count
        if piece:
            yield b"".join(piece)

    def read(self, size: int = -1) -> bytes:
        want = CHUNK_BYTES if size is None or size < 0 else max(size, 1)
        while len(self._buffer) < want and not self._done:
            try:
                self._buffer += next(self._rows)
            except StopIteration:
                self._done = True
            except BaseException as exc:
                self.failure = exc
                raise
        out = bytes(self._buffer[:want])
        del self._buffer[:want]
        return out

    readline = read


def copy_records(cur: psycopg2.extensions.cursor, source: str, stream: CopyStream) -> None:
    """COPY the stream's rows into ``bronze.<source>``."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        bronze_table(source), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))
    )
    try:
        cur.copy_expert(statement.as_string(cur), stream, size=CHUNK_BYTES)
    except psycopg2.Error:
        if stream.failure is not None:
            raise stream.failure from None
        raise
