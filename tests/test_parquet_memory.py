"""Memory of a Parquet read is bounded as docs/operations.md ("Memory of a
consumer worker") states, whatever shape the rows have, however many pages
the file has, whatever its page headers claim: each case reads a generated
file in a child process and compares its peak RSS with that of a child
reading a one-row file (tests/test_reader_bounds.py's method); files a real
writer makes load whole, as pyarrow reads them.
"""
from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestd.records import parquetpages
from ingestd.records.formats import read_records

from .test_parquet_hostile import ThriftReader, column_meta, field, write_struct
from .test_reader_bounds import read_in_child

# Each reads files of tens of MB in a child process: about a minute in all.
pytestmark = pytest.mark.slow

MiB = 1 << 20
LIMIT = 16 * MiB  # landing.max_record_bytes by default
BATCH = 64 * MiB  # a batch of rows, at most (docs/operations.md)
SLACK = 8 * MiB  # the allocator's own, and what a child's peak varies by
ROWS = 40_000


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parquet-memory")


@pytest.fixture(scope="module")
def baseline(folder) -> int:
    path = folder / "tiny.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": 1, "reason": None}
    return rss


def held_bound(path: Path) -> int:
    """What pyarrow may hold of the pages of a row group at once, by the
    documented bound: per column its largest page, its dictionary (128 bytes
    an entry and 4 a byte), a read buffer of 64 KiB, 256 bytes a page,
    where it repeats 4 bytes a level, and 4 a byte of its pages of strings
    under 32 KiB."""
    metadata = pq.read_metadata(path)
    most = 0
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        for index in range(metadata.num_row_groups):
            group, held = metadata.row_group(index), 0
            for column in range(group.num_columns):
                chunk = parquetpages.read_chunk(fh, group.column(column), metadata.schema.column(column), size,
                                                False, 1 << 30)
                dictionary = chunk.dictionary
                held += chunk.largest + (64 << 10) + 256 * len(chunk.pages) + (4 * chunk.levels if chunk.max_rep else 0)
                if chunk.physical == "BYTE_ARRAY":
                    held += 4 * sum(page.size for page in chunk.pages if page.size < 32 << 10)
                held += 128 * dictionary.levels + 4 * dictionary.size if dictionary else 0
            most = max(most, held)
    return most


def words(count: int, length: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choices(string.ascii_letters, k=length)) for _ in range(count)]


def lists(values: pa.Array, each: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(range(0, len(values) + 1, each), pa.int32()), values)


# The shapes measured (docs/operations.md): each makes batches the budget
# bounds, not the batch size of 8,192 rows.
SHAPES = {
    "ints": lambda: pa.table({f"c{i}": pa.array(range(i, i + ROWS), pa.int64()) for i in range(200)}),
    "strings": lambda: pa.table({f"c{i}": pa.array(words(ROWS, 8, i)) for i in range(100)}),
    "dictionary strings": lambda: pa.table({f"c{i}": pa.array(words(2000, 12, i) * (ROWS // 2000))
                                            for i in range(100)}),
    "binary": lambda: pa.table({f"c{i}": pa.array([b"\x00\x01\xfe" * 3] * ROWS, pa.binary()) for i in range(100)}),
    "lists of ints": lambda: pa.table({"l": lists(pa.array([x % 100 for x in range(ROWS * 500)], pa.int64()), 500)}),
    "nested structs": lambda: pa.table({"l": lists(pa.StructArray.from_arrays(
        [pa.array(range(ROWS * 100)), pa.array([1.5] * (ROWS * 100)),
         pa.StructArray.from_arrays([pa.array([x % 7 for x in range(ROWS * 100)], pa.int16())], ["z"])],
        ["a", "b", "c"]), 100)}),
    "maps": lambda: pa.table({"m": pa.MapArray.from_arrays(
        pa.array(range(0, ROWS * 100 + 1, 100), pa.int32()),
        pa.array([f"k{x % 40}" for x in range(ROWS * 100)]), pa.array(range(ROWS * 100)))}),
}


def as_json(value):
    """A value as pyarrow gives it, in the JSON form of its type (arrowjson)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple):
        return [as_json(v) for v in value]
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def assert_pyarrows_rows(path: Path) -> None:
    """The records read are the rows pyarrow reads, in order."""
    table = pq.read_table(path)
    read = read_records(path, "parquet", None)
    first = 0
    for batch in table.to_batches(max_chunksize=10_000):
        expected = [as_json(row) for row in batch.to_pylist()]
        got = [json.loads(text) for _, text in (next(read) for _ in range(len(expected)))]
        assert got == expected, f"rows {first + 1} to {first + len(expected)}"
        first += len(expected)
    assert next(read, None) is None


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_batch_of_any_shape_stays_within_the_documented_bound(folder, baseline, shape):
    # Estimated at 48 bytes a value, batches of lists of int64 took 80 bytes
    # a value, of structs and maps up to 120, of binary 160; strings read as
    # dictionaries 171 bytes an entry, counted at 3 bytes a byte.
    path = folder / f"{shape.replace(' ', '_')}.parquet"
    pq.write_table(SHAPES[shape](), path, row_group_size=ROWS, data_page_size=256 << 10,
                   use_dictionary=shape == "dictionary strings")
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": ROWS, "reason": None}
    bound = held_bound(path) + BATCH
    assert rss - baseline < bound + SLACK, \
        f"{(rss - baseline) / MiB:.0f} MiB over a one-row file, bound {bound / MiB:.0f} MiB"
    assert_pyarrows_rows(path)


def tiny_pages(path: Path, rows: int, groups: int) -> Path:
    """``rows`` integers a page each, as pyarrow writes them when asked."""
    pq.write_table(pa.table({"a": pa.array(range(rows), pa.int64())}), path, data_page_size=1, write_batch_size=1,
                   row_group_size=rows // groups, use_dictionary=False, compression="none")
    return path


def test_many_small_row_groups_of_tiny_pages_load_whole_in_bounded_memory(folder, baseline):
    # 500,000 pages in 500 row groups: the plan kept an object per page
    # (2 M pages took 2 GB), whatever their groups.
    path = tiny_pages(folder / "many_groups.parquet", 500_000, 500)
    assert pq.read_metadata(path).num_row_groups == 500
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": 500_000, "reason": None}
    assert rss - baseline < 64 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"
    assert_pyarrows_rows(path)


def test_a_row_group_of_more_pages_than_its_bound_is_too_large_early(folder, baseline):
    # pyarrow itself keeps about 200 bytes a page of the row group it reads
    # (2 M pages: 460 MB): past 16 x M of them, the group is refused, naming
    # its pages and the limit, before they are all read.
    limit = MiB
    path = tiny_pages(folder / "one_group.parquet", 400_000, 1)
    outcome, rss = read_in_child(path, "parquet", limit=limit)
    assert outcome == {"records": 0, "reason": "too_large"}
    assert rss - baseline < 32 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"
    with pytest.raises(Exception) as info:
        next(read_records(path, "parquet", None, max_record_bytes=limit))
    message = info.value.failure.message
    assert "pages or more" in message and f"fewer than {16 * limit // 256} pages a row group" in message, message


@pytest.mark.parametrize("limit, loads", [(2 * MiB, False), (LIMIT, True)], ids=["over its bound", "within"])
def test_a_string_column_of_small_pages_counts_what_pyarrow_keeps_of_them(folder, baseline, limit, loads):
    # pyarrow keeps the pages of 12 KB of a string column until their row
    # group is read (about 3 times their bytes: 48 MB of strings took 140 MB),
    # pages of 60 KB not: counted, a group that would pass 16 x M is refused.
    path = folder / "small_string_pages.parquet"
    if not path.exists():
        pq.write_table(pa.table({"s": pa.array([f"{i:08d}" for i in range(4_000_000)])}), path,
                       row_group_size=4_000_000, use_dictionary=False, data_page_size=10_000, compression="none")
    outcome, rss = read_in_child(path, "parquet", values=False, limit=limit)
    assert outcome == ({"records": 4_000_000, "reason": None} if loads else {"records": 0, "reason": "too_large"})
    bound = min(held_bound(path), 16 * limit) + BATCH
    assert rss - baseline < bound + SLACK, \
        f"{(rss - baseline) / MiB:.0f} MiB over a one-row file, bound {bound / MiB:.0f} MiB"


# -- page headers that lie --------------------------------------------------------

def rewrite_page_header(path: Path, change) -> Path:
    """Apply ``change`` to the fields of the first page header (the
    dictionary page, if any) of a one-column, one-row-group file; the
    footer's offsets and sizes follow."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    meta = ThriftReader(data[-8 - length:-8]).struct()
    column = column_meta(meta)
    dictionary = [f for f in column if f[0] == 11]
    start = dictionary[0][2] if dictionary else field(column, 9)[2]
    reader = ThriftReader(data, start)
    header = reader.struct()
    change(header)
    new = write_struct(header)
    grown = len(new) - (reader.pos - start)
    for fid in (6, 7):
        field(column, fid)[2] += grown
    if dictionary:
        field(column, 9)[2] += grown
    footer = write_struct(meta)
    path.write_bytes(data[:start] + new + data[reader.pos:-8 - length] + footer + len(footer).to_bytes(4, "little")
                     + b"PAR1")
    return path


def _inner(header: list, fid: int) -> list:
    return field(header, fid)[2]


def _claim_entries(header: list) -> None:
    field(_inner(header, 7), 1)[2] = 2**31 - 1  # DictionaryPageHeader.num_values


def _claim_values(header: list) -> None:
    field(_inner(header, 5), 1)[2] = 2**31 - 1  # DataPageHeader.num_values


def _claim_size(header: list) -> None:
    field(header, 2)[2] = 7 * MiB  # uncompressed_page_size: under 8 x M of 1 MiB


def _claim_compressed(header: list) -> None:
    field(header, 3)[2] = 2**31 - 1  # compressed_page_size


@pytest.mark.parametrize("change, dictionary, codec", [
    (_claim_entries, True, "none"), (_claim_values, False, "none"), (_claim_size, False, "snappy"),
    (_claim_size, False, "none"), (_claim_compressed, False, "none"),
], ids=["dictionary entries", "values", "decompressed size, snappy", "decompressed size, uncompressed",
        "compressed size"])
def test_a_page_header_that_lies_is_refused_within_the_bound(folder, baseline, change, dictionary, codec):
    # A few bytes of header claim 2^31 dictionary entries, values or bytes:
    # the reader refuses, or reads within the bound, never allocating on
    # the header's word past the limits.
    limit = MiB
    path = folder / f"lie_{change.__name__}_{codec}.parquet"
    pq.write_table(pa.table({"s": pa.array(words(3000, 6, 1))}), path, use_dictionary=dictionary,
                   compression=codec)
    rewrite_page_header(path, change)
    outcome, rss = read_in_child(path, "parquet", limit=limit)
    # (pyarrow reads uncompressed pages by their bytes, whatever size their header claims)
    assert outcome in ({"records": 0, "reason": "parse_error"}, {"records": 0, "reason": "too_large"},
                       {"records": 3000, "reason": None}), outcome
    assert rss - baseline < 8 * limit + SLACK, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"

