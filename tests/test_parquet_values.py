"""Parquet as written: each Arrow type has one JSON form (docs/configuration.md,
"Parquet values"), for every value Arrow can hold, and every file pyarrow
reads whole loads with pyarrow's row count."""
import base64
import datetime as dt
import decimal
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.config import build_config
from ingestd.daemon.errors import PermanentError
from ingestd.daemon.events import FileEvent
from ingestd.records.formats import read_records

from .conftest import SHARED_DATA, query
from .doubles import RecordingPublisher

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))


def days_from_civil(text: str) -> int:
    """The day count of an ISO date of any year: the inverse of the documented form."""
    sign = -1 if text.startswith("-") else 1
    year, month, day = text.lstrip("-").split("-")
    y, m, d = sign * int(year), int(month), int(day)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


EDGE_TABLE = pa.table({
    "int64": pa.array([-2**63, 2**63 - 1, None], pa.int64()),
    "uint64": pa.array([2**64 - 1, 0, None], pa.uint64()),
    "float64": pa.array([0.1, float("nan"), float("-inf")]),
    "float32": pa.array([0.1, 3.4028234663852886e38, None], pa.float32()),  # shown as its shortest text
    "text": pa.array(['quote " backslash \\ tab \t', "é 🌍 \u2028", None]),
    "binary_utf8": pa.array([b"looks like text", b"", None], pa.binary()),
    "binary_nul": pa.array([b"\x00\x01\xff", b"a\x00b", None], pa.binary()),
    "flba": pa.array([b"\x00\x00\x00\x01", b"\xff\xff\xff\xff", None], pa.binary(4)),
    "decimal128": pa.array([decimal.Decimal("1.50"), decimal.Decimal("-0.01"), None], pa.decimal128(10, 2)),
    "decimal256": pa.array([decimal.Decimal("9" * 70 + ".123456"), decimal.Decimal("0.000000"), None],
                           pa.decimal256(76, 6)),
    "date_year_1": pa.array([-719162, -719163, None], pa.date32()),  # 0001-01-01 and the day before
    "date_far": pa.array([2932897, 2**31 - 1, -(2**31)], pa.date32()),
    "timestamp_utc": pa.array([0, 253402300800 * 10**6, None], pa.timestamp("us", tz="UTC")),
    "timestamp_zone": pa.array([0, None, 1], pa.timestamp("ms", tz="America/New_York")),
    "timestamp_ns": pa.array([-(2**63) + 1, 2**63 - 1, None], pa.timestamp("ns")),
    "time": pa.array([0, 86_399_999_999, None], pa.time64("us")),
    "duration": pa.array([86_400 * 10**9, -1_000, None], pa.duration("ns")),
    "large_list": pa.array([[1, None], [], None], pa.large_list(pa.int16())),
    "map": pa.array([[("k", 1), ("k", 2)], [], None], pa.map_(pa.string(), pa.int32())),
    "dictionary": pa.array(["x", None, "x"]).dictionary_encode(),
    "nested": pa.array([{"s": [{"t": "a", "n": [1.5]}]}, {"s": None}, None],
                       pa.struct([("s", pa.list_(pa.struct([("t", pa.string()), ("n", pa.list_(pa.float64()))])))])),
})

EXPECTED = [
    {"int64": -2**63, "uint64": 2**64 - 1, "float64": 0.1, "float32": 0.1, "text": 'quote " backslash \\ tab \t',
     "binary_utf8": base64.b64encode(b"looks like text").decode(), "binary_nul": "AAH/", "flba": "AAAAAQ==",
     "decimal128": "1.50", "decimal256": "9" * 70 + ".123456", "date_year_1": "0001-01-01",
     "date_far": "10000-01-01", "timestamp_utc": "1970-01-01 00:00:00.000000Z",
     "timestamp_zone": "1970-01-01 00:00:00.000Z", "timestamp_ns": "1677-09-21 00:12:43.145224193",
     "time": "00:00:00.000000", "duration": "PT86400S", "large_list": [1, None],
     "map": [["k", 1], ["k", 2]], "dictionary": "x", "nested": {"s": [{"t": "a", "n": [1.5]}]}},
    {"int64": 2**63 - 1, "uint64": 0, "float64": "NaN", "float32": 3.4028235e38, "text": "é 🌍 \u2028",
     "binary_utf8": "", "binary_nul": "YQBi", "flba": "/////w==", "decimal128": "-0.01", "decimal256": "0.000000",
     "date_year_1": "0000-12-31", "date_far": "5881580-07-11", "timestamp_utc": "10000-01-01 00:00:00.000000Z",
     "timestamp_zone": None, "timestamp_ns": "2262-04-11 23:47:16.854775807", "time": "23:59:59.999999",
     "duration": "-PT0.000001S", "large_list": [], "map": [], "dictionary": None, "nested": {"s": None}},
    {"int64": None, "uint64": None, "float64": "-Infinity", "float32": None, "text": None, "binary_utf8": None,
     "binary_nul": None, "flba": None, "decimal128": None, "decimal256": None, "date_year_1": None,
     "date_far": "-5877641-06-23", "timestamp_utc": None, "timestamp_zone": "1970-01-01 00:00:00.001Z",
     "timestamp_ns": None, "time": None, "duration": None, "large_list": None, "map": None, "dictionary": "x",
     "nested": None},
]


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def test_each_arrow_type_has_its_documented_form(tmp_path):
    texts = [text for _, text in read_records(write(EDGE_TABLE, tmp_path / "edge.parquet"), "parquet", None)]
    rows = [json.loads(t) for t in texts]
    assert rows == EXPECTED
    assert days_from_civil("5881580-07-11") == 2**31 - 1 and days_from_civil("-5877641-06-23") == -(2**31)


def test_the_edge_values_are_stored_exactly_in_bronze(tmp_path, database_url):
    landing = tmp_path / "data_lake"
    path = write(EDGE_TABLE, (landing / "edges").mkdir(parents=True) or landing / "edges" / "edge.parquet")
    doc = {"landing": {"dir": str(landing)}, "database": {"url": database_url},
           "sources": [{"name": "edges", "format": "parquet"}]}
    ctx = IngestContext(build_config(doc, tmp_path, environ={}), RecordingPublisher(), "parquet-test")
    try:
        st_ = os.lstat(path)
        event = FileEvent(source="edges", path="edges/edge.parquet", size=st_.st_size, mtime_ns=st_.st_mtime_ns)
        outcome = ingest_message(ctx, event.to_json())
    finally:
        ctx.close()
    assert (outcome.status, outcome.rows) == ("success", 3)
    import psycopg2
    conn = psycopg2.connect(database_url)
    try:
        stored = query(conn, "SELECT raw_data::text FROM bronze.edges ORDER BY record_number")
    finally:
        conn.close()
    # Compared as numbers: jsonb writes 3.4028235e38 (float32's shortest text) in plain digits.
    as_numbers = {"parse_float": decimal.Decimal, "parse_int": decimal.Decimal}
    assert [json.loads(text, **as_numbers) for (text,) in stored] == json.loads(json.dumps(EXPECTED), **as_numbers)
    # jsonb keeps every digit of the numbers as written.
    assert '"int64": -9223372036854775808' in stored[0][0] and '"uint64": 18446744073709551615' in stored[0][0]


def test_a_string_with_nul_is_a_load_error_naming_its_record(tmp_path):
    table = pa.table({"a": ["fine", "fine", "bad\x00"]})
    with pytest.raises(PermanentError) as caught:
        list(read_records(write(table, tmp_path / "nul.parquet"), "parquet", None))
    assert caught.value.reason == "load_error" and "record 3" in str(caught.value) and "/a" in str(caught.value)


def test_a_time_outside_a_day_is_a_parse_error_not_a_crash(tmp_path):
    table = pa.table({"t": pa.array([0, 90_000], pa.time32("s"))})
    with pytest.raises(PermanentError) as caught:
        list(read_records(write(table, tmp_path / "t.parquet"), "parquet", None))
    assert caught.value.reason == "parse_error" and "record 2" in str(caught.value)


@pytest.mark.parametrize("name", sorted(p.name for p in (SHARED_DATA / "parquet").glob("*.parquet")))
def test_every_shared_parquet_file_pyarrow_reads_loads_with_its_row_count(name):
    path = SHARED_DATA / "parquet" / name
    try:
        expected = pq.read_table(path).num_rows
    except Exception:  # noqa: BLE001 - pyarrow cannot read it: then a parse_error is the answer
        with pytest.raises(PermanentError) as caught:
            list(read_records(path, "parquet", None))
        assert caught.value.reason == "parse_error"
        return
    rows = list(read_records(path, "parquet", None))
    assert len(rows) == expected
    assert all(isinstance(json.loads(text), dict) for _, text in rows)


# -- round trips -----------------------------------------------------------

def _back(kind: pa.DataType, text_value):
    """The Arrow value a documented JSON form stands for."""
    if text_value is None:
        return None
    if pa.types.is_binary(kind):
        return base64.b64decode(text_value)
    if pa.types.is_date32(kind):
        return days_from_civil(text_value)
    if pa.types.is_timestamp(kind):
        day, clock = text_value.rstrip("Z").split(" ")
        hours, minutes, seconds = clock.split(":")
        whole, _, fraction = seconds.partition(".")
        return ((days_from_civil(day) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(whole)) * 10**6
                + int(fraction.ljust(6, "0")))
    if pa.types.is_decimal(kind):
        return decimal.Decimal(text_value)
    if pa.types.is_floating(kind) and isinstance(text_value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[text_value]
    return text_value


COLUMNS = {
    "i": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "f": (pa.float64(), st.floats(allow_subnormal=True)),
    "s": (pa.string(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))),
    "b": (pa.binary(), st.binary(max_size=40)),
    "d": (pa.date32(), st.integers(-(2**31), 2**31 - 1)),
    "t": (pa.timestamp("us"), st.integers(-(2**63), 2**63 - 1)),
    "m": (pa.decimal128(20, 4), st.decimals(min_value=-10**15, max_value=10**15, places=4, allow_nan=False)),
}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({name: st.none() | values for name, (_, values) in COLUMNS.items()}),
                min_size=1, max_size=12))
def test_generated_tables_come_back_from_their_json(tmp_path_factory, rows):
    columns = {}
    for name, (kind, _) in COLUMNS.items():
        values = [row[name] for row in rows]
        columns[name] = _array(values, kind)
    path = write(pa.table(columns), tmp_path_factory.mktemp("gen") / "g.parquet")
    for row, (_, text) in zip(rows, read_records(path, "parquet", None), strict=True):
        stored = json.loads(text)
        for name, (kind, _) in COLUMNS.items():
            back, original = _back(kind, stored[name]), row[name]
            if isinstance(original, float) and math.isnan(original):
                assert math.isnan(back)
            else:
                assert back == original, (name, original, stored[name])


def _array(values: list, kind: pa.DataType) -> pa.Array:
    if pa.types.is_date32(kind):
        return pa.array(values, pa.int32()).view(kind)
    if pa.types.is_timestamp(kind):
        return pa.array(values, pa.int64()).view(kind)
    return pa.array(values, kind)


def test_dates_of_python_range_match_pythons_own_text():
    for days in (-719162, 0, 18_000, 2_932_896):
        text = json.loads(next(iter(read_records_of(pa.table({"d": pa.array([days], pa.int32()).view(pa.date32())}))
                                    ))[1])["d"]
        assert text == (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def read_records_of(table: pa.Table):
    import tempfile
    folder = tempfile.mkdtemp()
    path = write(table, Path(folder) / "x.parquet")
    try:
        yield from read_records(path, "parquet", None)
    finally:
        path.unlink()
        os.rmdir(folder)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_a_reader_that_cannot_read_its_file_gives_a_reason_not_an_exception(tmp_path, fmt):
    folder = tmp_path / f"not-a-file.{fmt}"
    folder.mkdir()
    with pytest.raises(PermanentError) as caught:
        list(read_records(folder, fmt, None))
    assert caught.value.reason in ("unreadable_file", "parse_error") and str(caught.value)


def _extension(kind: pa.DataType, storage: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(kind, storage)


UUID = bytes.fromhex("123e4567e89b12d3a456426614174000")


@pytest.mark.parametrize("store_schema", [True, False], ids=["with Arrow schema", "Parquet logical types only"])
def test_arrow_extension_types_load_as_their_documented_values(tmp_path, store_schema):
    """arrow.uuid is the text of the UUID (as a Parquet UUID column), arrow.bool8
    true/false, arrow.json its text as a string; the others as their storage:
    the float32 of a tensor as a float32 column (its shortest text, NaN named)."""
    table = pa.table({
        "uuid": _extension(pa.uuid(), pa.array([UUID, None], pa.binary(16))),
        "uuids": pa.ListArray.from_arrays(pa.array([0, 2, 2]),
                                          _extension(pa.uuid(), pa.array([UUID, None], pa.binary(16)))),
        "bool8": _extension(pa.bool8(), pa.array([2, None], pa.int8())),
        "json": _extension(pa.json_(), pa.array(['{"a": 1.50}', None])),
        "opaque": _extension(pa.opaque(pa.binary(), "geometry", "vendor"), pa.array([b"\x00\xff", None])),
        "tensor": _extension(pa.fixed_shape_tensor(pa.float32(), [2]),
                             pa.array([[0.1, float("nan")], None], pa.list_(pa.float32(), 2))),
    })
    path = tmp_path / "extension.parquet"
    pq.write_table(table, path, store_schema=store_schema)
    rows = [json.loads(text) for _, text in read_records(path, "parquet", None)]
    first = {"uuid": "123e4567-e89b-12d3-a456-426614174000", "uuids": ["123e4567-e89b-12d3-a456-426614174000", None],
             "json": '{"a": 1.50}'}
    if store_schema:  # the types Parquet has no logical type for come back only with the Arrow schema
        first |= {"bool8": True, "opaque": "AP8=", "tensor": [0.1, "NaN"]}
    else:
        first |= {"bool8": 2, "opaque": "AP8=", "tensor": [0.1, "NaN"]}
    assert rows[0] == first
    assert rows[1] == {name: [] if name == "uuids" else None for name in table.column_names}
