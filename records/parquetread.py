"""Reading Parquet: each row as JSON text built from its Arrow columns
(records/arrowjson.py), in batches whose memory the page headers bound
(records/parquetplan.py). The format's declaration is records/format_parquet.py."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingestd.daemon.errors import PermanentError

from . import parquetplan
from .arrowjson import ColumnError, Expansion, batch_texts, civil_date, leaf_count, record_error, row_text
from .jsonrecord import parse_record, too_large_message
from .parquetfooter import Footer, read_footer
from .reading import KNOWN_VALID, MAX_RECORD_BYTES, TextRecord

# Bytes of strings a batch may expand its dictionaries to (each byte costs
# about BYTE_COST while its text is built); a larger batch is halved.
PARQUET_EXPANSION = parquetplan.BATCH_BUDGET // parquetplan.BYTE_COST
PARQUET_READ_BUFFER = parquetplan.READ_BUFFER
# A row of more values than this is encoded piece by piece (arrowjson.row_text).
PARQUET_ROW_VALUES = parquetplan.BATCH_BUDGET // parquetplan.VALUE_COST


def read_parquet(path, max_record_bytes: int = MAX_RECORD_BYTES, values: bool = True,
                 valid_rows: Callable[[pa.RecordBatch], Any] | None = None) -> Iterator[TextRecord]:
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
    value without a JSON form names its record.

    ``valid_rows`` (the validator's, consumers/columns.py) judges each batch
    column by column once its texts are built: a row it finds valid comes
    with the value ``KNOWN_VALID`` (its text read back is not needed); any
    other row, and every row of a batch it cannot judge, with its value."""
    number = 0
    try:
        # The footer is read and checked here first: some of pyarrow's
        # accessors abort the process on a corrupt one (parquetfooter.Footer).
        with open(path, "rb") as fh:
            footer = read_footer(fh)
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
                start, verdicts = number, None
                for texts in _parquet_texts(batch, number, max_record_bytes):
                    if verdicts is None and valid_rows is not None and values:
                        verdicts = _verdicts(valid_rows, batch)  # after the texts: the strings are UTF-8
                    for text in texts:
                        number += 1
                        if len(text) > max_record_bytes:
                            raise PermanentError("too_large", too_large_message(f"record {number}",
                                                                                max_record_bytes), record=number)
                        if verdicts and verdicts[number - start - 1]:
                            yield KNOWN_VALID, text
                        else:
                            yield (_parquet_value(text, number) if values else {}), text
                    del texts  # the piece's texts go before the next is built
    except PermanentError:
        raise
    except (pa.ArrowException, OSError, ValueError, OverflowError, TypeError, KeyError, IndexError,
            NotImplementedError) as exc:
        where = f" (after record {number})" if number else ""
        raise PermanentError("parse_error", f"not a readable Parquet file{where}: {type(exc).__name__}: {exc}",
                             record=number or None) from None


def _verdicts(valid_rows: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch) -> list[bool] | None:
    """A verdict a row (True: valid), or None: no row of the batch judged.
    A judge that fails gives no verdict; the rows take the row path."""
    try:
        mask = valid_rows(batch)
        if mask is None or len(mask) != batch.num_rows:
            return None
        return mask.to_pylist()  # a null is no verdict (falsy)
    except Exception:  # noqa: BLE001 - no verdict is always safe: the validator judges each row
        return None


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


def _dictionary_columns(path: Any, metadata: pq.FileMetaData, footer: Footer) -> set[str]:
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

