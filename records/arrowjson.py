"""Arrow record batches as JSON text, one defined form per Arrow type, built
column by column with Arrow's compute kernels (no Python object per value
on the common types). docs/configuration.md, "Parquet values", is the table:

- null: null; bool: true/false; integers: numbers, every digit;
- floats: the shortest number that reads back as the same value; NaN and
  ±Infinity as the strings "NaN", "Infinity", "-Infinity";
- decimals: a string of the exact value with its scale ("1.50");
- strings: the string (U+0000 is a load_error: jsonb cannot store it);
- binary, fixed-size binary: a base64 string (RFC 4648, padded);
- dates: "YYYY-MM-DD" for any year ("-0001-12-31", "10000-01-01");
- times: "HH:MM:SS[.fff]"; timestamps: "YYYY-MM-DD HH:MM:SS[.fff]", with a
  trailing Z when the column has a time zone (the instant, in UTC);
- durations: ISO 8601 in seconds ("PT86400S", "-PT0.000001S");
- lists: arrays; structs: objects; maps: arrays of [key, value] pairs;
- dictionary, run-end encoded: as their values; extension types as their
  storage, but arrow.uuid as the UUID's text and arrow.bool8 as true/false;
- others (union, interval): the Python value as JSON.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ingestd.daemon.errors import PermanentError

Encoder = Callable[[pa.Array, str], pa.Array]

# Days from 0001-01-01 to 1970-01-01, and to 9999-12-31: Arrow formats the
# dates and timestamps between them; the rest are formatted here.
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896
_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_CONTROL = [chr(c) for c in range(1, 32)]


class ColumnError(Exception):
    """A value that has no JSON form; ``row`` is its index in its array
    (the batch's row when the array is a column of the batch)."""

    def __init__(self, reason: str, message: str, row: int | None = None, where: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.row = row
        self.where = where


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _join(*parts: Any) -> pa.Array:
    """Element-wise concatenation of text arrays and literals."""
    return pc.binary_join_element_wise(*(_lit(p) if isinstance(p, str) else p for p in parts), _lit(""))


def _text(strings: Sequence[str | None]) -> pa.Array:
    return pa.array(strings, pa.large_string())


def _null_as_json(array: pa.Array, text: pa.Array) -> pa.Array:
    """``text`` where ``array`` has a value, ``null`` where it has none."""
    if array.null_count == 0:
        return text
    return pc.if_else(array.is_valid(), text, _lit("null"))


def _quoted(text: pa.Array) -> pa.Array:
    return _join('"', text, '"')


def _string(array: pa.Array, where: str) -> pa.Array:
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise ColumnError("encoding_error", f"the strings at {where} are not UTF-8: {exc}", where=where) from None
    text = pc.cast(array, pa.large_string())
    if pc.any(pc.match_substring(text, "\x00")).as_py():
        row = pc.index(pc.match_substring(text, "\x00"), True).as_py()
        raise ColumnError("load_error", f"the string at {where} holds U+0000, which PostgreSQL jsonb cannot store",
                          row, where)
    if pc.any(pc.match_substring_regex(text, '[\\x01-\\x1f"\\\\]')).as_py():
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        for char in _CONTROL:
            if pc.any(pc.match_substring(text, char)).as_py():
                text = pc.replace_substring(text, char, f"\\u{ord(char):04x}")
    return _null_as_json(array, _quoted(text))


def _binary(array: pa.Array, where: str) -> pa.Array:
    return _null_as_json(array, _text([None if v is None else '"' + base64.b64encode(v).decode("ascii") + '"'
                                       for v in array.to_pylist()]))


def _number(array: pa.Array, where: str) -> pa.Array:
    return _null_as_json(array, pc.cast(array, pa.large_string()))


def _float(array: pa.Array, where: str) -> pa.Array:
    if pa.types.is_float16(array.type):
        array = pc.cast(array, pa.float32())
    text = pc.cast(array, pa.large_string())
    if array.null_count != len(array) and not pc.all(pc.is_finite(array)).as_py():
        named = pc.if_else(pc.is_nan(array), _lit('"NaN"'),
                           pc.if_else(pc.greater(array, 0), _lit('"Infinity"'), _lit('"-Infinity"')))
        text = pc.if_else(pc.is_finite(array), text, named)
    return _null_as_json(array, text)


def _bool(array: pa.Array, where: str) -> pa.Array:
    return _null_as_json(array, pc.if_else(array, _lit("true"), _lit("false")))


def _decimal(array: pa.Array, where: str) -> pa.Array:
    return _null_as_json(array, _quoted(pc.cast(array, pa.large_string())))


def civil_date(days: int) -> str:
    """ISO text of a day count from 1970-01-01, for any year (proleptic
    Gregorian, astronomical years: 0 is 1 BC)."""
    # Howard Hinnant's days_from_civil, inverted.
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return f"{'-' if year < 0 else ''}{abs(year):04d}-{month:02d}-{day:02d}"


def _clock(seconds_of_day: int, fraction: int, digits: int) -> str:
    hours, rest = divmod(seconds_of_day, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return text + (f".{fraction:0{digits}d}" if digits else "")


def _temporal(array: pa.Array, where: str, per_day: int, digits: int, form: Callable[[int], str],
              suffix: str = "") -> pa.Array:
    """Dates and timestamps: Arrow's text between years 1 and 9999, this
    module's outside them (as the integers they are)."""
    raw = _integers(array)
    # (Bounds past int64: nanoseconds cannot leave the years 1677 to 2262.)
    lowest, highest = max(_FIRST_DAY * per_day, -(2**63)), min((_LAST_DAY + 1) * per_day - 1, 2**63 - 1)
    inside = pc.and_(pc.greater_equal(raw, lowest), pc.less_equal(raw, highest))
    plain = pa.timestamp(array.type.unit) if pa.types.is_timestamp(array.type) else array.type
    # The UTC value, shown without its zone; only the values Arrow can format.
    kept = pc.if_else(inside, pc.cast(array, plain), pa.scalar(None, plain))
    text = pc.cast(kept, pa.large_string())
    if suffix:
        text = _join(text, suffix)
    if not pc.all(pc.or_kleene(inside, pc.is_null(raw))).as_py():
        values = raw.to_pylist()
        outside = _text([None if v is None else form(v) + suffix for v in values])
        text = pc.if_else(inside, text, outside)
    return _null_as_json(array, _quoted(text))


def _integers(array: pa.Array) -> pa.Array:
    """The integers a temporal array stores, as int64."""
    width = pa.int32() if array.type.bit_width == 32 else pa.int64()
    return pc.cast(array.view(width), pa.int64())


def _date(array: pa.Array, where: str) -> pa.Array:
    if pa.types.is_date64(array.type):
        return _temporal(array, where, 86_400_000, 0, lambda ms: civil_date(ms // 86_400_000))
    return _temporal(array, where, 1, 0, civil_date)


def _timestamp(array: pa.Array, where: str) -> pa.Array:
    per_second = _UNITS[array.type.unit]
    digits = len(str(per_second)) - 1

    def form(value: int) -> str:
        seconds, fraction = divmod(value, per_second)
        days, seconds_of_day = divmod(seconds, 86_400)
        return f"{civil_date(days)} {_clock(seconds_of_day, fraction, digits)}"
    return _temporal(array, where, 86_400 * per_second, digits, form, "Z" if array.type.tz else "")


def _time(array: pa.Array, where: str) -> pa.Array:
    per_second = _UNITS[array.type.unit]
    raw = _integers(array)
    if not pc.all(pc.or_kleene(pc.and_(pc.greater_equal(raw, 0), pc.less(raw, 86_400 * per_second)),
                               pc.is_null(raw))).as_py():
        bad = pc.index(pc.or_(pc.less(raw, 0), pc.greater_equal(raw, 86_400 * per_second)), True).as_py()
        raise ColumnError("parse_error", f"the time at {where} is outside a day: {raw[bad].as_py()} "
                          f"{array.type.unit}", bad, where)
    return _null_as_json(array, _quoted(pc.cast(array, pa.large_string())))


def _duration(array: pa.Array, where: str) -> pa.Array:
    per_second = _UNITS[array.type.unit]
    digits = len(str(per_second)) - 1

    def form(value: int) -> str:
        seconds, fraction = divmod(abs(value), per_second)
        tail = f".{fraction:0{digits}d}".rstrip("0").rstrip(".") if fraction else ""
        return f'"{"-" if value < 0 else ""}PT{seconds}{tail}S"'
    return _null_as_json(array, _text([None if v is None else form(v) for v in _integers(array).to_pylist()]))


def _join_lists(array: pa.Array, values: pa.Array, offsets: pa.Array, open_: str = "[", close: str = "]") -> pa.Array:
    lists = pa.LargeListArray.from_arrays(pc.cast(offsets, pa.int64()), values)
    text = _join(open_, pc.binary_join(lists, _lit(",")), close)
    return _null_as_json(array, text)


def _relative_offsets(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(values, offsets from 0) of a list array's slots, null slots included
    (``flatten`` leaves out what a null slot spans)."""
    offsets = array.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    return array.values.slice(first, last - first), pc.subtract(offsets, first) if first else offsets


def _list(array: pa.Array, where: str) -> pa.Array:
    if pa.types.is_list_view(array.type) or pa.types.is_large_list_view(array.type):
        array = pc.cast(array, pa.large_list(array.type.value_field))
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        offsets = pa.array(range(0, (len(array) + 1) * size, size), pa.int64())
        return _join_lists(array, encode_array(_fixed_values(array), where + "/*"), offsets)
    values, offsets = _relative_offsets(array)
    return _join_lists(array, encode_array(values, where + "/*"), offsets)


def _fixed_values(array: pa.FixedSizeListArray) -> pa.Array:
    """The child values of every slot, null ones included (flatten skips them)."""
    size = array.type.list_size
    return array.values.slice(array.offset * size, len(array) * size)


def _struct(array: pa.Array, where: str) -> pa.Array:
    fields = [array.type.field(i) for i in range(array.type.num_fields)]
    return _null_as_json(array, object_text([f.name for f in fields], array.flatten(), where, len(array)))


def _map(array: pa.Array, where: str) -> pa.Array:
    entries, offsets = _relative_offsets(array)
    keys, items = entries.flatten()
    pairs = _join("[", encode_array(keys, where + "/*/0"), ",", encode_array(items, where + "/*/1"), "]")
    return _join_lists(array, pairs, offsets)


def _python(array: pa.Array, where: str) -> pa.Array:
    """Types without a kernel path: each value as Python, then JSON."""
    out = []
    for value in array.to_pylist():
        try:
            out.append(orjson.dumps(value, default=_plain).decode())
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise ColumnError("parse_error", f"the value at {where} has no JSON form: {exc}") from None
    return _text(out)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.time, dt.datetime, dt.timedelta)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _any_of(*checks: Callable[[pa.DataType], bool]) -> Callable[[pa.DataType], bool]:
    return lambda kind: any(check(kind) for check in checks)


_t = pa.types
# (type test, encoder), in order; a type no test claims goes through Python.
_ENCODERS: tuple[tuple[Callable[[pa.DataType], bool], Encoder], ...] = (
    (_t.is_boolean, _bool), (_t.is_integer, _number), (_t.is_floating, _float), (_t.is_decimal, _decimal),
    (_any_of(_t.is_string, _t.is_large_string, _t.is_string_view), _string),
    (_any_of(_t.is_binary, _t.is_large_binary, _t.is_fixed_size_binary, _t.is_binary_view), _binary),
    (_any_of(_t.is_date32, _t.is_date64), _date), (_t.is_timestamp, _timestamp),
    (_any_of(_t.is_time32, _t.is_time64), _time), (_t.is_duration, _duration),
    (_t.is_map, _map), (_t.is_struct, _struct),
    (_any_of(_t.is_list, _t.is_large_list, _t.is_fixed_size_list, _t.is_list_view, _t.is_large_list_view), _list),
)


def _encoder(kind: pa.DataType) -> Encoder:
    return next((encoder for check, encoder in _ENCODERS if check(kind)), _python)


def _unwrap(array: pa.Array) -> pa.Array:
    """An extension array (any: Python-defined or Arrow's canonical ones,
    which are not ``pa.ExtensionType``) as the values it stands for: its
    storage, except a UUID's text (as the Parquet UUID type reads) and
    bool8's booleans (any byte but 0 is true)."""
    if not isinstance(array.type, pa.BaseExtensionType):
        return array
    name, storage = array.type.extension_name, array.storage
    if name == "arrow.uuid":
        return _text([None if v is None else str(uuid.UUID(bytes=v)) for v in storage.to_pylist()])
    if name == "arrow.bool8":
        return pc.not_equal(storage, 0)
    return _unwrap(storage)


def encode_array(array: pa.Array, where: str) -> pa.Array:
    """Each value of ``array`` as JSON text (a large_string array, no nulls)."""
    array = _unwrap(array)
    if pa.types.is_dictionary(array.type):
        return _dictionary(array, where)
    if pa.types.is_run_end_encoded(array.type):
        array = pc.run_end_decode(array)
    if pa.types.is_null(array.type):
        return pa.repeat(_lit("null"), len(array))
    return _encoder(array.type)(array, where)


def _dictionary(array: pa.DictionaryArray, where: str) -> pa.Array:
    """Each entry of the dictionary encoded once, then taken by index; a
    dictionary larger than its array, or holding a value without a JSON
    form (perhaps unused), is expanded first (its size checked beforehand:
    ``text_floor``), so that errors name the row."""
    if len(array.dictionary) <= len(array):
        try:
            return _null_as_json(array, pc.take(encode_array(array.dictionary, where), array.indices))
        except ColumnError:
            pass
    return encode_array(array.dictionary_decode(), where)


def object_text(names: list[str], columns: list[pa.Array], where: str, length: int) -> pa.Array:
    """Per row, the JSON object of ``columns`` under ``names``."""
    if not columns:
        return pa.repeat(_lit("{}"), length)
    parts: list[Any] = ["{"]
    for i, (name, column) in enumerate(zip(names, columns, strict=True)):
        if "\x00" in name:
            raise ColumnError("load_error", f"the column name {name!r} holds U+0000, which PostgreSQL jsonb cannot "
                              "store")
        parts += [("," if i else "") + json.dumps(name, ensure_ascii=False) + ":",
                  encode_array(column, f"{where}/{_pointer(name)}")]
    parts.append("}")
    return _join(*parts)


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


class Expansion(Exception):
    """A batch whose JSON text would exceed what one encoding may hold:
    ``floor`` bytes at least, as ``what`` says."""

    def __init__(self, floor: int, what: str = "strings") -> None:
        super().__init__(f"its {what} hold {floor} bytes" if what == "strings"
                         else f"its JSON text passes {floor} bytes")
        self.floor = floor


def text_floor(array: pa.Array) -> int:
    """The bytes of the strings and binary values in ``array`` once expanded
    (dictionary entries counted at each use), without expanding them: its
    JSON text holds at least that many."""
    kind = array.type
    if isinstance(kind, pa.BaseExtensionType):
        return text_floor(array.storage)
    if pa.types.is_dictionary(kind):
        if _t.is_string(kind.value_type) or _t.is_binary(kind.value_type) or _t.is_large_string(kind.value_type) \
                or _t.is_large_binary(kind.value_type):
            lengths = pc.take(pc.binary_length(array.dictionary), array.indices)
            return pc.sum(lengths).as_py() or 0
        return text_floor(array.dictionary) if len(array) else 0
    if _t.is_string(kind) or _t.is_binary(kind) or _t.is_large_string(kind) or _t.is_large_binary(kind):
        if not len(array):
            return 0
        large = _t.is_large_string(kind) or _t.is_large_binary(kind)
        offsets = pa.Array.from_buffers(pa.int64() if large else pa.int32(), len(array) + 1,
                                        [None, array.buffers()[1]], offset=array.offset)
        return offsets[-1].as_py() - offsets[0].as_py()
    if _t.is_fixed_size_binary(kind):
        return len(array) * kind.byte_width
    if _t.is_string_view(kind) or _t.is_binary_view(kind):
        return pc.sum(pc.binary_length(array)).as_py() or 0
    if _t.is_list(kind) or _t.is_large_list(kind) or _t.is_map(kind):
        return text_floor(_relative_offsets(array)[0])
    if _t.is_fixed_size_list(kind):
        return text_floor(_fixed_values(array))
    if _t.is_list_view(kind) or _t.is_large_list_view(kind) or _t.is_struct(kind):
        flat = array.flatten()
        return sum(text_floor(child) for child in flat) if _t.is_struct(kind) else text_floor(flat)
    return 0


def batch_texts(batch: pa.RecordBatch, floor_limit: int | None = None) -> list[bytes]:
    """The JSON text of each row of ``batch``; ``Expansion`` (before any text
    is built) when its strings would expand past ``floor_limit`` bytes."""
    if floor_limit is not None:
        floor = sum(text_floor(column) for column in batch.columns)
        if floor > floor_limit:
            raise Expansion(floor)
    return _texts_of(object_text(batch.schema.names, list(batch.columns), "", batch.num_rows))


def leaf_count(array: pa.Array) -> int:
    """The values of ``array`` at its deepest level (list elements of lists...)."""
    kind = array.type
    if isinstance(kind, pa.BaseExtensionType):
        return leaf_count(array.storage)
    if _t.is_list(kind) or _t.is_large_list(kind) or _t.is_map(kind):
        return leaf_count(_relative_offsets(array)[0])
    if _t.is_fixed_size_list(kind):
        return leaf_count(_fixed_values(array))
    if _t.is_struct(kind):
        return max(len(array), sum(leaf_count(child) for child in array.flatten()))
    return len(array)


PIECE = 1 << 16  # values of one row encoded at a time by ``row_text``


def row_text(batch: pa.RecordBatch, limit: int) -> bytes:
    """The JSON text of a one-row batch, built a slice of ``PIECE`` values at
    a time (a row of millions of values), same text as ``batch_texts``;
    ``Expansion`` as soon as it passes ``limit`` bytes."""
    out = bytearray(b"{")
    for i, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
        if "\x00" in name:
            raise ColumnError("load_error", f"the column name {name!r} holds U+0000, which PostgreSQL jsonb cannot "
                              "store")
        out += (b"," if i else b"") + json.dumps(name, ensure_ascii=False).encode() + b":"
        _append_value(out, column, "/" + _pointer(name), limit)
    out += b"}"
    return bytes(out)


def _append_value(out: bytearray, array: pa.Array, where: str, limit: int) -> None:
    """Append the text of ``array``'s one value; lists piece by piece."""
    array = _unwrap(array)
    kind = array.type
    if array.null_count or not (_t.is_list(kind) or _t.is_large_list(kind)) or leaf_count(array) <= PIECE:
        out += _texts_of(encode_array(array, where))[0]
    else:
        values = _relative_offsets(array)[0]
        out += b"["
        for first in range(0, len(values), PIECE):
            piece = values.slice(first, PIECE)
            if leaf_count(piece) <= 4 * PIECE:
                out += (b"," if first else b"") + b",".join(_texts_of(encode_array(piece, where + "/*")))
            else:
                for index in range(len(piece)):
                    out += b"," if first or index else b""
                    _append_value(out, piece.slice(index, 1), where + "/*", limit)
            if len(out) > limit:
                raise Expansion(len(out), "text")
        out += b"]"
    if len(out) > limit:
        raise Expansion(len(out), "text")


def _texts_of(text: pa.Array) -> list[bytes]:
    """The values of a text array (large_string) as bytes."""
    _, offset_buffer, data = text.buffers()
    payload = data.to_pybytes() if data is not None else b""
    offsets = pa.Array.from_buffers(pa.int64(), len(text) + 1, [None, offset_buffer], offset=text.offset).to_pylist()
    return [payload[offsets[i]:offsets[i + 1]] for i in range(len(text))]


def record_error(exc: ColumnError, first_record: int) -> PermanentError:
    """A ``ColumnError`` of a batch as the reason of the file, naming the record."""
    if exc.row is None or exc.where.count("/") != 1:  # a row of a nested array is not a record
        return PermanentError(exc.reason, str(exc))
    number = first_record + exc.row
    return PermanentError(exc.reason, f"record {number}: {exc}", record=number)
