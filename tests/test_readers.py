"""Format readers, on real files from ../shared/data and on generated bad input."""
import base64
import gzip
import io

import pytest

from ingestd.consumers.readers import read_csv, read_json, read_jsonl, read_parquet, read_records
from ingestd.daemon.errors import PermanentError

from .conftest import FITBIT, SHARED_DATA


def reason_of(fn):
    with pytest.raises(PermanentError) as info:
        fn()
    return info.value.reason, info.value.failure.message


def values(records):
    """The values of ``(value, text)`` records."""
    return [value for value, _ in records]


def csv_records(data: bytes):
    return values(read_csv(io.BufferedReader(io.BytesIO(data))))


def test_fitbit_daily_activity_gives_940_records_as_text():
    records = values(read_records(FITBIT / "dailyActivity_merged.csv", "csv", None))
    assert len(records) == 940
    assert records[0]["Id"] == "1503960366"
    assert records[0]["VeryActiveDistance"] == "1.879999995"
    # CRLF and the missing trailing newline leave no stray characters
    assert records[-1]["Calories"] == records[-1]["Calories"].strip()
    assert len(records[0]) == 15


@pytest.mark.parametrize("name,count", [("sleepDay_merged.csv", 413), ("hourlySteps_merged.csv", 22099),
                                        ("heartrate_seconds_merged_excerpt.csv", 49)])
def test_other_fitbit_files(name, count):
    assert len(list(read_records(FITBIT / name, "csv", None))) == count


def test_csv_bom_and_cr_only_line_endings():
    assert csv_records(b"\xef\xbb\xbfa,b\rx,y\r") == [{"a": "x", "b": "y"}]


def test_csv_header_only_has_no_records():
    assert csv_records(b"a,b\r\n") == []


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", b" ", b"\r\n"])
def test_csv_without_a_header_is_parse_error(data):
    assert reason_of(lambda: csv_records(data))[0] == "parse_error"


def test_csv_ragged_row_is_parse_error_with_line():
    reason, message = reason_of(lambda: csv_records(b"a,b\n1,2\n3\n"))
    assert reason == "parse_error" and "line 3" in message


def test_csv_unterminated_quote_is_parse_error():
    reason, _ = reason_of(lambda: csv_records(b'a,b\n1,"never closed\n'))
    assert reason == "parse_error"


def test_csv_invalid_utf8_is_encoding_error():
    reason, message = reason_of(lambda: csv_records(b"a,b\n1,caf\xe9\n"))
    assert reason == "encoding_error" and "UTF-8" in message


@pytest.mark.parametrize("header", [b"a,a\n1,2\n", b"a,,c\n1,2,3\n"])
def test_csv_duplicate_or_empty_header_names_are_refused(header):
    reason, message = reason_of(lambda: csv_records(header))
    assert reason == "parse_error" and "header" in message


def test_csv_nul_byte_is_refused_before_copy_as_load_error():
    from ingestd.consumers.bronze import CopyStream, LoadStats
    from ingestd.consumers.validation import RecordValidator
    records = csv_records(b"a,b\n1,\x002\n")
    stream = CopyStream([(1, records[0], None)], RecordValidator(None), "src", {}, LoadStats())
    reason, message = reason_of(stream.read)
    assert reason == "load_error" and "record 1" in message and "U+0000" in message


def test_jsonl_records_and_errors():
    assert values(read_jsonl(io.BytesIO(b'{"a":1}\n\n{"a":2}\n'))) == [{"a": 1}, {"a": 2}]
    reason, message = reason_of(lambda: list(read_jsonl(io.BytesIO(b'{"a":1}\n[1,2]\n'))))
    assert reason == "parse_error" and "line 2" in message and "array" in message
    assert reason_of(lambda: list(read_jsonl(io.BytesIO(b'{"a": NaN}\n'))))[0] == "parse_error"
    assert reason_of(lambda: list(read_jsonl(io.BytesIO(b'{"a": "\xff"}\n'))))[0] == "encoding_error"


def test_json_array_and_records_path():
    stream = io.BufferedReader(io.BytesIO(b'\xef\xbb\xbf[{"a": 1.5}, {"a": "x"}]'))
    assert list(read_json(stream)) == [({"a": 1.5}, b'{"a": 1.5}'), ({"a": "x"}, b'{"a": "x"}')]
    doc = b'{"data": {"items": [{"k": 1}, {"k": 2}]}, "meta": 1}'
    assert values(read_json(io.BufferedReader(io.BytesIO(doc)), "data.items")) == [{"k": 1}, {"k": 2}]


@pytest.mark.parametrize("doc", [b'"just a string"', b'42', b'{"a": 1}'])
def test_json_that_is_not_an_array_is_parse_error(doc):
    assert reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(doc)))))[0] == "parse_error"


@pytest.mark.parametrize("doc", [b'[{"a": NaN}]', b'[{"a": Infinity}]', b'[{"a": 1}, {"b":', b'[1, 2]'])
def test_json_nan_infinity_truncation_and_scalars_are_parse_errors(doc):
    assert reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(doc)))))[0] == "parse_error"


def test_fred_observations_via_records_path():
    path = SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json"
    records = values(read_records(path, "json", None, "observations"))
    assert len(records) == 315
    assert sum(1 for r in records if r["value"] == ".") == 4


def test_records_path_empty_array_is_no_records_but_missing_path_is_parse_error(tmp_path):
    empty = SHARED_DATA / "fred" / "fredr_series_observations-3a8dc9_empty.json"
    assert list(read_records(empty, "json", None, "observations")) == []
    missing = tmp_path / "missing.json"
    missing.write_bytes(b'{"data": {"other": []}}')
    reason, message = reason_of(lambda: list(read_records(missing, "json", None, "data.items")))
    assert reason == "parse_error" and "data.items" in message


def test_parquet_real_files_including_int96_and_nested():
    plain = values(read_parquet(SHARED_DATA / "parquet" / "alltypes_plain.parquet"))
    assert len(plain) == 8 and plain[0]["id"] == 4
    int96 = values(read_parquet(SHARED_DATA / "parquet" / "int96_from_spark.parquet"))
    assert len(int96) == 6 and any(isinstance(r["a"], str) for r in int96)
    nested = values(read_parquet(SHARED_DATA / "parquet" / "nulls.snappy.parquet"))
    assert nested[0] == {"b_struct": {"b_c_int": None}}


def test_corrupt_parquet_is_parse_error(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes((SHARED_DATA / "parquet" / "alltypes_plain.parquet").read_bytes()[:900])
    assert reason_of(lambda: list(read_parquet(broken)))[0] == "parse_error"


def test_parquet_with_malformed_dictionary_page_still_reads_whole():
    # pyarrow recovers this file of the Parquet bad-data corpus completely:
    # all 25 nations, so it loads rather than being quarantined.
    rows = values(read_parquet(SHARED_DATA / "parquet" / "nation.dict-malformed.parquet"))
    # Its columns are BINARY without a string annotation: base64, as bronze stores binary.
    assert len(rows) == 25 and base64.b64decode(rows[0]["name"]) == b"ALGERIA"


def test_gzip_is_read_by_suffix_and_a_bomb_is_too_large(tmp_path):
    packed = tmp_path / "daily.csv.gz"
    packed.write_bytes(gzip.compress((FITBIT / "dailyActivity_merged.csv").read_bytes()))
    assert len(list(read_records(packed, "csv", None))) == 940
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b'{"a": 1}\n' * 2_000_000))
    assert bomb.stat().st_size < 100_000
    reason, _ = reason_of(lambda: list(read_records(bomb, "jsonl", 1_000_000)))
    assert reason == "too_large"


def test_corrupt_gzip_is_parse_error(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    packed = gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7919 % 10007) for i in range(50_000)))
    bad.write_bytes(packed[: len(packed) // 2])
    reason, message = reason_of(lambda: list(read_records(bad, "csv", None)))
    assert reason == "parse_error" and "gzip" in message
