"""Hostile Parquet files: a corrupt footer or page header is a parse_error
naming what is wrong, read by a process that lives on (pyarrow aborts the
process on some corrupt footers: std::terminate, which Python cannot
catch); malformed Thrift ends in time bounded by its bytes; values load as
written (INT96 beyond the years of nanoseconds), nothing is lost silently.

The files are written by pyarrow, then their footer or a page header is
rewritten with the small Thrift compact-protocol codec below.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestd.daemon.errors import PermanentError
from ingestd.records.formats import read_records
from ingestd.records.thriftcompact import CompactReader, ShortBuffer

from .conftest import REPO

# -- Thrift compact protocol, both ways: a struct is a list of [id, type, value]

BOOL, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12


class ThriftReader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self) -> list:
        out, last = [], 0
        while head := self.byte():
            kind = head & 0x0F
            last = last + (head >> 4) if head >> 4 else self.zigzag()
            out.append([last, BOOL, kind == 1] if kind in (1, 2) else [last, kind, self.value(kind)])
        return out

    def value(self, kind: int) -> Any:
        if kind in (1, 2):
            return self.byte() == 1
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            self.pos += 8
            return self.data[self.pos - 8:self.pos]
        if kind == BINARY:
            n = self.varint()
            self.pos += n
            return self.data[self.pos - n:self.pos]
        if kind in (LIST, SET):
            head = self.byte()
            n = self.varint() if head >> 4 == 15 else head >> 4
            return [head & 0x0F, [self.value(head & 0x0F) for _ in range(n)]]
        if kind == MAP:
            n = self.varint()
            kinds = self.byte() if n else 0
            return [kinds >> 4, kinds & 0x0F, [(self.value(kinds >> 4), self.value(kinds & 0x0F)) for _ in range(n)]]
        assert kind == STRUCT, kind
        return self.struct()


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def write_struct(fields: list, tail: bytes = b"") -> bytes:
    """A struct's bytes; ``tail``: raw bytes of further fields before its end."""
    out, last = bytearray(), 0
    for fid, kind, value in fields:
        head = (1 if value else 2) if kind == BOOL else kind
        out += bytes([(fid - last) << 4 | head]) if 0 < fid - last <= 15 else bytes([head]) + varint(fid << 1)
        last = fid
        if kind != BOOL:
            out += write_value(kind, value)
    return bytes(out) + tail + b"\x00"


def write_value(kind: int, value: Any) -> bytes:
    if kind == BOOL:
        return bytes([1 if value else 2])
    if kind == BYTE:
        return bytes([value & 0xFF])
    if kind in (I16, I32, I64):
        return varint(((value << 1) ^ (value >> 63)) & (2**64 - 1))
    if kind == DOUBLE:
        return value
    if kind == BINARY:
        return varint(len(value)) + value
    if kind in (LIST, SET):
        element, items = value
        head = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + varint(len(items))
        return head + b"".join(write_value(element, item) for item in items)
    if kind == MAP:
        key, item, pairs = value
        if not pairs:
            return b"\x00"
        return varint(len(pairs)) + bytes([key << 4 | item]) + b"".join(
            write_value(key, k) + write_value(item, v) for k, v in pairs)
    return write_struct(value)


def field(fields: list, fid: int) -> list:
    return next(f for f in fields if f[0] == fid)


def rewrite_footer(path: Path, change) -> Path:
    """Apply ``change`` to the footer (FileMetaData as fields) of ``path``."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    meta = ThriftReader(data[-8 - length:-8]).struct()
    change(meta)
    footer = write_struct(meta)
    path.write_bytes(data[:-8 - length] + footer + len(footer).to_bytes(4, "little") + b"PAR1")
    return path


def column_meta(meta: list, group: int = 0, column: int = 0) -> list:
    """The ColumnMetaData fields of a column chunk in a footer's fields."""
    chunk = field(meta, 4)[2][1][group]
    return field(field(chunk, 1)[2][1][column], 3)[2]


def rewrite_first_page_header(path: Path, tail: bytes) -> Path:
    """Add ``tail`` (raw fields) to the first page header of a one-column,
    one-row-group file, the offsets and sizes of the footer moved to match."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    meta = ThriftReader(data[-8 - length:-8]).struct()
    column = column_meta(meta)
    start = field(column, 9)[2]
    reader = ThriftReader(data, start)
    header = reader.struct()
    new = write_struct(header, tail)
    grown = len(new) - (reader.pos - start)
    for fid in (6, 7):
        field(column, fid)[2] += grown
    body = data[:start] + new + data[reader.pos:-8 - length]
    footer = write_struct(meta)
    path.write_bytes(body + footer + len(footer).to_bytes(4, "little") + b"PAR1")
    return path


CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from ingestd.records.formats import read_records
count, reason, message = 0, None, None
try:
    for _ in read_records(sys.argv[1], "parquet", None, max_record_bytes=int(sys.argv[2])):
        count += 1
except Exception as exc:
    reason, message = getattr(exc, "reason", type(exc).__name__), str(exc)
print(json.dumps({"records": count, "reason": reason, "message": message}))
"""


def read_in_child(path: Path, limit: int = 16 << 20) -> dict:
    """What a separate process reading ``path`` gives; it must exit normally
    (an abort is a crash of the worker). The timeout only guards the suite
    against a reader that never ends."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), str(limit)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    return json.loads(result.stdout)


def small_file(path: Path, **options) -> Path:
    table = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "l": pa.array([[1], [2, 3], None], pa.list_(pa.int32()))})
    pq.write_table(table, path, **options)
    return path


def one_column(path: Path) -> Path:
    pq.write_table(pa.table({"a": pa.array([1, 2, 3], pa.int64())}), path, compression="none", use_dictionary=False)
    return path


# -- 1. a corrupt footer is a parse_error, never an abort -----------------------

def _codec(meta: list) -> None:
    field(column_meta(meta), 4)[2] = 99


def _histogram(meta: list) -> None:
    size_statistics = field(column_meta(meta, column=1), 16)[2]
    field(size_statistics, 3)[2][1].append(5)  # the definition levels of l.list.element: 0 to 3, a fifth entry


def _repetition_histogram(meta: list) -> None:
    size_statistics = field(column_meta(meta, column=1), 16)[2]
    field(size_statistics, 2)[2][1].append(1)


def _type(meta: list) -> None:
    field(column_meta(meta), 1)[2] = 7  # FIXED_LEN_BYTE_ARRAY for a column of INT64


def _extra_chunk(meta: list) -> None:
    chunks = field(field(meta, 4)[2][1][0], 1)[2][1]
    chunks.append(chunks[0])


def _byte_count(meta: list) -> None:
    field(column_meta(meta), 16)[2].append([1, I64, 10])  # strings' bytes counted in a column of INT64


@pytest.mark.parametrize("change, named", [
    (_codec, "codec 99"), (_histogram, "definition level histogram has 5 entries, not 4"),
    (_repetition_histogram, "repetition level histogram has 3 entries, not 2"),
    (_type, "type 7 is not its column's INT64"), (_extra_chunk, "3 column chunks for 2 columns"),
    (_byte_count, "byte count of strings in a column of INT64"),
], ids=["codec", "definition histogram", "repetition histogram", "chunk type", "extra chunk", "string bytes"])
def test_a_footer_pyarrow_aborts_on_is_a_parse_error_and_the_process_lives(tmp_path, change, named):
    path = rewrite_footer(small_file(tmp_path / "corrupt.parquet"), change)
    outcome = read_in_child(path)
    assert outcome["reason"] == "parse_error" and outcome["records"] == 0
    assert named in outcome["message"], outcome["message"]


def test_the_footer_codec_roundtrips_an_untouched_file(tmp_path):
    path = small_file(tmp_path / "plain.parquet")
    before = path.read_bytes()
    assert rewrite_footer(path, lambda meta: None).read_bytes() == before


# -- 2. malformed Thrift ends, in time bounded by its bytes ---------------------

@pytest.mark.parametrize("tail", [
    bytes([0x90 | MAP]) + varint(1 << 40) + bytes([BOOL << 4 | BOOL]),  # a map of 2^40 booleans, no bytes
    bytes([0x90 | SET]) + bytes([0xF0 | BOOL]) + varint(1 << 40),  # a set of 2^40 booleans
    bytes([0x90 | LIST]) + bytes([0xF0 | I32]) + varint(1 << 60) + b"\x02",
    bytes([0x90 | LIST]) + bytes([0x10 | LIST]) * 100_000,  # lists in lists, 100,000 deep
    bytes([0x90 | STRUCT]) + bytes([0x10 | STRUCT]) * 100_000,
    bytes([0x90 | 13]),  # a type Thrift does not have
    bytes([0x90 | MAP]) + varint(1) + bytes([0xD5]) + b"\x00\x00",  # a map of keys of type 13
], ids=["map of booleans", "set of booleans", "list longer than its bytes", "deep lists", "deep structs",
        "type 13", "map key type 13"])
def test_a_malformed_page_header_is_a_parse_error(tmp_path, tail):
    path = rewrite_first_page_header(one_column(tmp_path / "header.parquet"), tail)
    outcome = read_in_child(path)
    assert outcome["reason"] == "parse_error" and outcome["records"] == 0, outcome


@pytest.mark.parametrize("data", [
    bytes([0x10 | MAP]) + varint(1 << 62) + bytes([0x11]),
    bytes([0x10 | LIST]) + bytes([0xF1]) + varint(1 << 62),
    bytes([0x10 | BINARY]) + varint(1 << 62),
    bytes([0x10 | LIST]) + bytes([0x19]) * 50,
])
def test_thrift_claims_beyond_the_bytes_given_end_at_once(data):
    with pytest.raises((ValueError, ShortBuffer)):
        CompactReader(data).struct()
    with pytest.raises(ValueError):
        CompactReader(data, complete=True).struct()


def test_an_unchanged_page_header_rewrite_still_reads(tmp_path):
    path = rewrite_first_page_header(one_column(tmp_path / "same.parquet"),
                                     bytes([0x90 | MAP]) + varint(2) + bytes([BOOL << 4 | BOOL]) + b"\x01\x02\x02\x01")
    assert read_in_child(path) == {"records": 3, "reason": None, "message": None}


# -- 5. nothing lost silently ----------------------------------------------------

def test_a_map_key_struct_with_two_fields_of_one_name_is_a_parse_error(tmp_path):
    key = pa.struct([("k", pa.int32()), ("k", pa.string())])
    keys = pa.StructArray.from_arrays([pa.array([1], pa.int32()), pa.array(["x"])], fields=list(key))
    column = pa.MapArray.from_arrays(pa.array([0, 1], pa.int32()), keys, pa.array([7], pa.int64()))
    path = tmp_path / "map_key.parquet"
    pq.write_table(pa.table({"m": column}), path)
    with pytest.raises(PermanentError) as caught:
        list(read_records(path, "parquet", None))
    assert caught.value.reason == "parse_error" and "'m.key'" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("claimed", [2, 5])
def test_a_footer_row_count_the_pages_do_not_hold_is_a_parse_error_naming_both(tmp_path, claimed):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "l": [[1], [2, 3], None]}), path)

    def claim(meta: list) -> None:
        field(field(meta, 4)[2][1][0], 3)[2] = claimed
        field(meta, 3)[2] = claimed
    rewrite_footer(path, claim)
    with pytest.raises(PermanentError) as caught:
        list(read_records(path, "parquet", None))
    assert caught.value.reason == "parse_error"
    assert f"the footer says {claimed} rows, the pages of column a hold 3" in str(caught.value)



@pytest.mark.parametrize("claimed", [2, 4])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_footer_row_count_of_only_repeated_columns_is_checked_against_their_levels(tmp_path, claimed, version):
    # No column of one level a row: the rows are counted from the repetition
    # levels of the first column (a level 0 starts a row). A footer claiming
    # 2 of 3 rows lost the third silently.
    path = tmp_path / "lists.parquet"
    table = pa.table({"l": [[1], [2, 3], None], "m": pa.array([[("k", 1)], [], [("a", 2), ("b", 3)]],
                                                              pa.map_(pa.string(), pa.int32()))})
    pq.write_table(table, path, data_page_version=version)

    def claim(meta: list) -> None:
        field(field(meta, 4)[2][1][0], 3)[2] = claimed
        field(meta, 3)[2] = claimed
    rewrite_footer(path, claim)
    with pytest.raises(PermanentError) as caught:
        list(read_records(path, "parquet", None))
    assert caught.value.reason == "parse_error"
    assert f"the footer says {claimed} rows, the pages of column l.list.element hold 3" in str(caught.value)
    # As written, it loads.
    pq.write_table(table, path, data_page_version=version)
    assert len(list(read_records(path, "parquet", None))) == 3


# -- 3. INT96 timestamps as written ------------------------------------------------

def test_int96_timestamps_of_any_year_load_as_written(tmp_path):
    import datetime as dt
    values = [dt.datetime(1000, 1, 1, 0, 0, 0, 123456), dt.datetime(1677, 9, 20, 12), dt.datetime(1970, 1, 1, 0, 0, 1),
              dt.datetime(2262, 4, 12), dt.datetime(3000, 6, 1, 1, 2, 3, 4), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
              None]
    path = tmp_path / "int96.parquet"
    pq.write_table(pa.table({"t": pa.array(values, pa.timestamp("us")), "n": list(range(7))}), path,
                   use_deprecated_int96_timestamps=True)
    assert pq.read_metadata(path).schema.column(0).physical_type == "INT96"
    rows = [json.loads(text) for _, text in read_records(path, "parquet", None)]
    assert [row["t"] for row in rows] == [None if v is None else v.strftime("%Y-%m-%d %H:%M:%S.%f") + "000"
                                          for v in values]
    # Within the years of nanoseconds the column keeps its nanoseconds.
    pq.write_table(pa.table({"t": pa.array([1_000_000_001], pa.timestamp("ns"))}), path,
                   use_deprecated_int96_timestamps=True)
    assert [json.loads(text)["t"] for _, text in read_records(path, "parquet", None)] == ["1970-01-01 00:00:01.000000001"]
