"""JSON: an array of objects (or one object), or the array at ``records_path``
of a document, each record kept as its own text (records/jsontext.py)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, Any

from . import reading
from .jsontext import read_json_records
from .reading import (
    GZIP_ERRORS,
    MAX_RECORD_BYTES,
    Format,
    JsonRecord,
    TextRecord,
    check_byte_order_mark,
    gzip_guard,
)


def read_json(stream: IO[bytes], records_path: str | None = None, max_record_bytes: int = MAX_RECORD_BYTES,
              exact_numbers: bool = True) -> Iterator[JsonRecord]:
    """A JSON array of objects, or an object holding it at ``records_path``
    (dotted, e.g. ``observations`` or ``data.items``), each record kept as
    its own text. An empty array there gives no records; a missing path, a
    document of only whitespace and anything after the document are parse
    errors. NaN and Infinity are not JSON and are refused."""
    try:
        check_byte_order_mark(stream)
        yield from read_json_records(stream, records_path, max_record_bytes, reading.TEXT_CHUNK, exact_numbers)
    except GZIP_ERRORS as exc:
        raise gzip_guard(exc) from None


def _read(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
          exact_numbers: bool) -> Iterator[TextRecord]:
    return read_json(content, options["records_path"], max_record_bytes, exact_numbers)


# records_path has no default: the document's top level. API sources have a
# records_path too (where an answer's records are), of the same schema.
FORMAT = Format("json", (".json",), _read, {"records_path": {"type": "string"}})
