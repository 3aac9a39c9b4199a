"""Bronze tables: created on first use from ``bronze._template``, filled by COPY.

Records are encoded into PostgreSQL's text COPY format as they are read, and
the COPY pulls them through a file-like object: the file is streamed from
disk to the server without ever being held whole in memory.
"""
from __future__ import annotations

import datetime as dt
import base64
import decimal
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ingestd.daemon.errors import PermanentError
from ingestd.daemon.landing import SOURCE_NAME

from .validation import RecordValidator

COPY_COLUMNS = (
    "source", "raw_data", "record_number", "validation_status", "validation_errors",
    "source_timestamp", "pipeline_run_id", "event_id", "file_path", "file_hash", "file_size",
    "api_endpoint", "api_response_code",
)
NULL = "\\N"
CHUNK_BYTES = 256 * 1024


def bronze_table(source: str) -> sql.Composed:
    """``bronze.<source>`` as a quoted identifier, after validating the name."""
    if not SOURCE_NAME.match(source):
        raise ValueError(f"invalid source name {source!r}")
    return sql.SQL("bronze.{}").format(sql.Identifier(source))


def ensure_bronze_table(cur: psycopg2.extensions.cursor, source: str) -> None:
    """Create ``bronze.<source>`` if missing. Serialised by a transaction-level
    advisory lock, since concurrent CREATE TABLE IF NOT EXISTS can still fail."""
    table = bronze_table(source)
    lock_key = int.from_bytes(hashlib.sha256(f"bronze:{source}".encode()).digest()[:8], "big", signed=True)
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE bronze._template INCLUDING ALL)").format(table))


def copy_text(value: str) -> str:
    """Escape a value for PostgreSQL's text COPY format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, (dt.timedelta,)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in JSON")


@dataclass
class LoadStats:
    rows_total: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    first_errors: list[dict[str, Any]] = field(default_factory=list)


class CopyStream:
    """A read-only file object producing COPY text rows from records.

    ``constants`` are the already-escaped lineage columns that follow
    ``record_number``/validation in every row of one load.
    """

    def __init__(self, records: Iterable[dict[str, Any]], validator: RecordValidator, source: str,
                 constants: dict[str, str | None], stats: LoadStats) -> None:
        self._rows = self._encode(records, validator, source, constants, stats)
        self._buffer = bytearray()
        self._done = False
        # psycopg2 turns an exception raised by read() into a generic COPY
        # error; the original is kept here so its reason code survives.
        self.failure: BaseException | None = None

    def _encode(self, records, validator, source, constants, stats) -> Iterator[bytes]:
        src = copy_text(source).encode()
        tail = "\t".join(NULL if constants.get(c) is None else copy_text(str(constants[c]))
                         for c in COPY_COLUMNS[5:]).encode()
        dumps = orjson.dumps
        options = orjson.OPT_NON_STR_KEYS
        errors_of = validator.errors
        number = 0
        for number, record in enumerate(records, 1):
            try:
                raw = dumps(record, default=_json_default, option=options)
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise PermanentError("parse_error", f"record {number}: cannot be stored as JSON: {exc}",
                                     record=number) from None
            if b"\\u0000" in raw:
                raise PermanentError(
                    "load_error",
                    f"record {number}: contains the character U+0000, which PostgreSQL jsonb cannot store",
                    record=number,
                )
            errors = errors_of(record)
            if errors is None:
                stats.rows_valid += 1
                status, err = b"valid", b"\\N"
            else:
                stats.rows_invalid += 1
                status = b"invalid"
                err = dumps(errors).replace(b"\\", b"\\\\")
                if len(stats.first_errors) < 5:
                    stats.first_errors.append({"record": number, "errors": errors[:3]})
            yield b"\t".join((src, raw.replace(b"\\", b"\\\\"), str(number).encode(), status, err, tail)) + b"\n"
        stats.rows_total = number

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
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        bronze_table(source), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))
    )
    try:
        cur.copy_expert(statement.as_string(cur), stream, size=CHUNK_BYTES)
    except psycopg2.Error:
        if stream.failure is not None:
            raise stream.failure from None
        raise
