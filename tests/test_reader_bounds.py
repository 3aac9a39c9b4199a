"""Memory while a file is read is bounded by the limits, whatever the file
claims (docs/operations.md, "Memory of a consumer worker"): each case reads
a generated file in a child process, whose peak RSS (VmHWM: its own, since
it started; getrusage would count the RSS of the parent it was forked from)
is compared with a child's that reads a one-row file.

And the page headers and repetition levels the Parquet reader plans its
batches from are read right: generated lists of lists, written with every
page version, codec and page size, give the rows pyarrow itself gives.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.daemon.errors import PermanentError
from ingestd.records import parquetlevels, parquetpages
from ingestd.records.formats import read_records

from .conftest import REPO

# Each measures a child process's peak memory: about 90 s in all, out of the quick run.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
MiB = 1 << 20
LIMIT = 16 * MiB  # landing.max_record_bytes by default

CHILD = """
import json, resource, sys
# A reader that runs away fails its test rather than the machine.
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from ingestd.records.formats import read_records

path, fmt, values, limit, file_limit = sys.argv[1], sys.argv[2], sys.argv[3] == "values", int(sys.argv[4]), \
    None if sys.argv[5] == "none" else int(sys.argv[5])
count, reason = 0, None
try:
    for _ in read_records(path, fmt, file_limit, max_record_bytes=limit, exact_numbers=values):
        count += 1
except Exception as exc:
    reason = getattr(exc, "reason", type(exc).__name__)
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"records": count, "reason": reason, "peak": peak}))
"""


def read_in_child(path: Path, fmt: str, values: bool = True, limit: int = LIMIT,
                  file_limit: int | None = None) -> tuple[dict, int]:
    """What reading ``path`` gives (records, reason) and the peak RSS in
    bytes of the process that read it."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), fmt, "values" if values else "text", str(limit),
                             str(file_limit or "none")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout)
    return outcome, outcome.pop("peak")


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="ingestd-bounds-") as name:
        yield Path(name)


@pytest.fixture(scope="module")
def baseline(folder) -> int:
    """Peak RSS of a child that reads a one-row Parquet file."""
    path = folder / "tiny.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": 1, "reason": None}
    return rss


def long_lists(path: Path, rows: int, length: int) -> Path:
    """``rows`` rows, each a list of ``length`` small integers: a few KB of
    RLE, whatever the values' count."""
    values = pa.repeat(pa.scalar(1, pa.int8()), rows * length)
    offsets = pa.array(range(0, rows * length + 1, length), pa.int32())
    pq.write_table(pa.table({"v": pa.ListArray.from_arrays(offsets, values)}), path)
    return path


def test_parquet_rows_of_8000_values_are_read_a_bounded_batch_at_a_time(folder, baseline):
    # The 2 KB file: 8,192 rows of 8,000 integers (16 KB of JSON a
    # row). Read 8,192 rows at a time, it took the process to 1.8 GB.
    path = long_lists(folder / "long_lists.parquet", 8192, 8000)
    assert path.stat().st_size < 10_000
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": 8192, "reason": None}
    assert rss - baseline < 256 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"


def _lie_about_values(path: Path, actual: int, claimed: int) -> None:
    """Rewrite the footer's value count of the column chunk (a zigzag varint,
    re-encoded padded to the same length: Thrift readers take that)."""
    data = path.read_bytes()
    footer_length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_length
    def varint(n: int, width: int = 0) -> bytes:
        out = bytearray()
        while n > 0x7F or len(out) + 1 < width:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))
    real = varint(actual * 2)
    assert real in data[start:]
    data = data[:start] + data[start:-8].replace(real, varint(claimed * 2, len(real))) + data[-8:]
    path.write_bytes(data)
    assert pq.read_metadata(path).row_group(0).column(0).num_values == claimed


@pytest.mark.parametrize("lie", [False, True], ids=["as written", "footer claims one value"])
def test_parquet_list_of_60m_values_is_too_large_before_it_is_decoded(folder, baseline, lie):
    # The 612-byte file: one row, a list of 60 M integers. It took
    # 1.7 GB before it was refused; its pages say what it holds, whatever the
    # footer claims.
    path = long_lists(folder / f"one_list_{lie}.parquet", 1, 60_000_000)
    if lie:
        _lie_about_values(path, 60_000_000, 1)
    assert path.stat().st_size < 1000
    outcome, rss = read_in_child(path, "parquet")
    assert outcome == {"records": 0, "reason": "too_large"}
    assert rss - baseline < 32 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"


def test_parquet_dictionary_of_one_long_string_is_not_expanded_at_once(folder, baseline):
    # 1,024 rows that each use a dictionary entry of 1 MiB: 40 KB of file, 1 GiB expanded.
    path = folder / "dictionary.parquet"
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 1024, pa.int32()), pa.array(["x" * MiB]))
    pq.write_table(pa.table({"s": column}), path, store_schema=False)
    outcome, rss = read_in_child(path, "parquet", values=False)
    assert outcome == {"records": 1024, "reason": None}
    assert rss - baseline < 256 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"
    # An entry longer than max_record_bytes: its rows are too_large, unexpanded.
    outcome, rss = read_in_child(path, "parquet", values=False, limit=MiB // 2)
    assert outcome == {"records": 0, "reason": "too_large"}
    assert rss - baseline < 64 * MiB


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_a_record_at_the_limit_costs_about_32_times_the_limit_at_most(folder, baseline, fmt):
    """The documented bound of one record (docs/operations.md), at its
    worst shape per format: tiny values, as many as fit; one more is too_large.
    JSON's 1.4 M empty objects measure 32 to 33 x the limit, with the
    allocator's slack on top: the margin to 36 x is that slack, not growth."""
    limit = 4 * MiB
    count = (limit - 16) // 2
    path = folder / f"at_limit.{fmt}"
    if fmt == "csv":
        path.write_bytes(b"a\n" + b"0" * (limit - 2) + b"\n")
    elif fmt == "jsonl":
        path.write_bytes(b'{"a":[' + b"0," * (count - 1) + b"0]}\n")
    elif fmt == "json":
        path.write_bytes(b'[{"a":[' + b"{}," * ((limit - 16) // 3 - 1) + b"{}]}]")
    else:
        long_lists(path, 1, count - 8)
    outcome, rss = read_in_child(path, fmt, limit=limit)
    assert outcome == {"records": 1, "reason": None}
    assert rss - baseline < 36 * limit, f"{(rss - baseline) / MiB:.0f} MiB for a record of {limit / MiB:.0f} MiB"
    outcome, _ = read_in_child(path, fmt, limit=limit // 2)
    assert outcome == {"records": 0, "reason": "too_large"}


@st.composite
def nested_lists(draw):
    """Rows of a list of lists of integers: nulls, empty lists, long runs."""
    inner = st.one_of(st.none(), st.lists(st.integers(-5, 5), max_size=6),
                      st.integers(0, 3000).map(lambda n: [1] * n))
    outer = st.one_of(st.none(), st.lists(inner, max_size=5))
    return draw(st.lists(outer, min_size=1, max_size=60))


def row_levels(row) -> int:
    """The levels (values, nulls, empty lists) a row of list<list<int>> has."""
    if not row:
        return 1
    return sum(1 if not inner else len(inner) for inner in row)


WRITERS = st.fixed_dictionaries({
    "data_page_version": st.sampled_from(["1.0", "2.0"]),
    "compression": st.sampled_from(["none", "snappy", "gzip", "zstd", "lz4", "brotli"]),
    "use_dictionary": st.booleans(),
    "data_page_size": st.sampled_from([64, 1024, 1 << 20]),
    "write_batch_size": st.sampled_from([3, 64, 1024]),
    "row_group_size": st.sampled_from([7, 1000]),
})


@settings(max_examples=max(20, EXAMPLES // 2), deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=nested_lists(), writer=WRITERS)
def test_repetition_levels_give_the_rows_pyarrow_gives(rows, writer):
    table = pa.table({"n": pa.array(rows, pa.list_(pa.list_(pa.int32())))})
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "n.parquet"
        pq.write_table(table, path, **writer)
        metadata = pq.read_metadata(path)
        counted, first = [], 0
        with open(path, "rb") as fh:
            for index in range(metadata.num_row_groups):
                group = metadata.row_group(index)
                chunk = parquetpages.read_chunk(fh, group.column(0), metadata.schema.column(0),
                                                path.stat().st_size, False, 1 << 30)
                windows = parquetlevels.count_rows(fh, chunk, group.num_rows, LIMIT, first + 1)
                expected = [row_levels(r) for r in rows[first:first + group.num_rows]]
                for number, window in enumerate(windows):
                    part = sorted(expected[number * parquetlevels.WINDOW:(number + 1) * parquetlevels.WINDOW])
                    assert (window.levels, window.top, window.second) == (sum(part), part[-1],
                                                                          part[-2] if len(part) > 1 else 0)
                counted += expected
                first += group.num_rows
        assert len(counted) == len(rows)
        # And the rows read are pyarrow's own, whatever batches the plan chose.
        texts = [json.loads(text) for _, text in read_records(path, "parquet", None)]
        assert texts == [{"n": row} for row in rows]


def test_a_row_over_the_limit_is_refused_by_its_levels_with_its_number(tmp_path):
    rows = [[[1, 2]], [[1] * 2_000_000], [[3]]]
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"n": pa.array(rows, pa.list_(pa.list_(pa.int32())))}), path)
    with pytest.raises(PermanentError) as info:
        list(read_records(path, "parquet", None, max_record_bytes=MiB))
    assert info.value.reason == "too_large"
    assert "record 2" in info.value.failure.message and "values" in info.value.failure.message


def test_parquet_json_column_of_one_long_dictionary_entry_is_not_expanded_at_once(folder, baseline):
    # A column of Parquet's JSON type is read as arrow.json, which pyarrow
    # expands whatever read_dictionary asks: 50 KB of file, 1 GiB expanded
    # (it took 4.2 GB before it failed).
    path = folder / "json_dictionary.parquet"
    column = pa.ExtensionArray.from_storage(pa.json_(), pa.array(['"' + "x" * MiB + '"'] * 1024))
    pq.write_table(pa.table({"s": column}), path, store_schema=False)
    assert path.stat().st_size < 100_000
    outcome, rss = read_in_child(path, "parquet", values=False)
    assert outcome == {"records": 1024, "reason": None}
    assert rss - baseline < 256 * MiB, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"


@pytest.mark.parametrize("columns, loads", [(800, False), (600, True)], ids=["names over the limit", "under it"])
def test_parquet_column_names_count_in_a_row_and_its_batch(folder, baseline, columns, loads):
    # Columns of null values under names of 6,000 characters: each row's JSON
    # is its names. 800 of them (4.8 MB a row) over a limit of 4 MiB took
    # batches of 1,024 rows (5 GB) before each was refused: 3,000 of them took
    # 11 GB at the default limit and a MemoryError.
    limit = 4 * MiB
    path = folder / f"names_{columns}.parquet"
    nulls = pa.nulls(1000, pa.int8())
    pq.write_table(pa.table({f"{i:05d}" + "n" * 6000: nulls for i in range(columns)}), path)
    outcome, rss = read_in_child(path, "parquet", values=False, limit=limit)
    assert outcome == ({"records": 1000, "reason": None} if loads else {"records": 0, "reason": "too_large"})
    assert rss - baseline < 48 * limit, f"{(rss - baseline) / MiB:.0f} MiB over a one-row file"
