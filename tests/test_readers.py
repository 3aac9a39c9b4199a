"""Format readers, on the test files (tests/data/README.md) and on generated bad input."""
import base64
import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestd.daemon.errors import PermanentError
from ingestd.records.format_csv import read_csv
from ingestd.records.format_json import read_json
from ingestd.records.format_jsonl import read_jsonl
from ingestd.records.parquetread import read_parquet
from ingestd.records.formats import read_records

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


@pytest.mark.parametrize("doc,shape", [(b'"just a string"', "a string"), (b'42', "a number"), (b' true', "a boolean"),
                                       (b'null', "null"), (b'[1, 2]', "an array of numbers"),
                                       (b'[["a"]]', "an array of arrays")])
def test_json_that_is_not_an_object_or_an_array_of_objects_is_parse_error_saying_its_shape(doc, shape):
    reason, message = reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(doc)))))
    assert reason == "parse_error"
    assert f"the document is {shape}, not an object or an array of objects" in message


def test_json_document_of_one_object_is_one_record():
    # What an API response saved to disk looks like (Snowflake, Auto Loader and dlt load it so).
    doc = b'\xef\xbb\xbf {"id": 7, "data": {"items": [1, 2]}, "n": 12345678901234567890}\n'
    assert list(read_json(io.BufferedReader(io.BytesIO(doc)))) == [
        ({"id": 7, "data": {"items": [1, 2]}, "n": 12345678901234567890},
         b'{"id": 7, "data": {"items": [1, 2]}, "n": 12345678901234567890}')]
    # records_path still takes the array inside it.
    assert values(read_json(io.BufferedReader(io.BytesIO(b'{"data": {"items": [{"k": 1}]}}')), "data.items")) == \
        [{"k": 1}]
    reason, message = reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(b'{"a": 1} {"b": 2}')))))
    assert reason == "parse_error" and "after the end" in message
    reason, message = reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(b'{"a": "' + b"x" * 200 + b'"}')),
                                                       max_record_bytes=100)))
    assert reason == "too_large" and "record 1" in message


@pytest.mark.parametrize("doc", [b'[{"a": NaN}]', b'[{"a": Infinity}]', b'[{"a": 1}, {"b":', b'[1, 2]'])
def test_json_nan_infinity_truncation_and_scalars_are_parse_errors(doc):
    assert reason_of(lambda: list(read_json(io.BufferedReader(io.BytesIO(doc)))))[0] == "parse_error"


def test_fred_observations_via_records_path():
    path = SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json"
    records = values(read_records(path, "json", None, {"records_path": "observations"}))
    assert len(records) == 315
    assert sum(1 for r in records if r["value"] == ".") == 4


def test_records_path_empty_array_is_no_records_but_missing_path_is_parse_error(tmp_path):
    empty = SHARED_DATA / "fred" / "fredr_series_observations-3a8dc9_empty.json"
    assert list(read_records(empty, "json", None, {"records_path": "observations"})) == []
    missing = tmp_path / "missing.json"
    missing.write_bytes(b'{"data": {"other": []}}')
    reason, message = reason_of(lambda: list(read_records(missing, "json", None, {"records_path": "data.items"})))
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


def test_parquet_two_columns_of_one_name_are_parse_error_naming_them(tmp_path):
    # A JSON object keeps one of two keys: loading one column of the two would be a silent loss.
    path = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array(["x"]), pa.array([2])], names=["a", "b", "a"]), path)
    reason, message = reason_of(lambda: list(read_parquet(path)))
    assert reason == "parse_error" and "columns 1 and 3" in message and "'a'" in message


def test_parquet_struct_with_two_fields_of_one_name_is_parse_error(tmp_path):
    path = tmp_path / "struct.parquet"
    inner = pa.StructArray.from_arrays([pa.array([1]), pa.array([2])], names=["k", "k"])
    pq.write_table(pa.table({"s": pa.array([[1]]), "t": pa.ListArray.from_arrays([0, 1], inner)}), path)
    reason, message = reason_of(lambda: list(read_parquet(path)))
    assert reason == "parse_error" and "'t.element'" in message and "'k'" in message


def test_csv_blank_lines_count_to_no_row_and_a_gzipped_run_of_them_loads(tmp_path):
    # 20 M blank lines (20 KB gzipped) between two rows: they used to count
    # towards the next row's size ("the row ending at line 16777218" was too_large).
    path = tmp_path / "blank.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n" + b"\n" * 20_000_000 + b"\r\n" * 5 + b"3,4\n5\n"))
    reason, message = reason_of(lambda: list(read_records(path, "csv", None)))
    assert reason == "parse_error" and message.startswith("line 20000009: 1 fields")
    path.write_bytes(gzip.compress(b"a,b\n1,2\n" + b"\n" * 20_000_000 + b"3,4\n"))
    assert values(read_records(path, "csv", None)) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_jsonl_blank_lines_count_to_no_line_however_long():
    # A "blank" line of 20 MB of spaces is no record, and not too_large.
    data = b'{"a": 1}\n' + b" " * 20_000_000 + b"\n\t\n" + b'{"a": 2}\n[3]\n'
    stream = io.BufferedReader(io.BytesIO(data))
    reason, message = reason_of(lambda: list(read_jsonl(stream)))
    assert reason == "parse_error" and message.startswith("line 5: an array")
    assert values(read_jsonl(io.BufferedReader(io.BytesIO(data[:-4])))) == [{"a": 1}, {"a": 2}]


def test_expanded_content_is_bounded_by_default(tmp_path):
    from ingestd.daemon.config import build_config
    config = build_config({"sources": [{"name": "s", "format": "jsonl"}]}, base_dir=tmp_path, environ={})
    assert config.max_file_bytes == 16 << 30
    # And past the bound (made small here), a gzip is refused while it expands, naming the setting.
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\n" * 5_000_000 + b'{"a": 1}\n'))
    reason, message = reason_of(lambda: list(read_records(bomb, "jsonl", 1_000_000)))
    assert reason == "too_large" and "landing.max_file_bytes" in message


@pytest.mark.parametrize("encoding,named", [("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE"),
                                            ("utf-32", "UTF-32LE"), ("utf-32-be", "UTF-32BE")])
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_utf16_without_its_mark_and_utf32_are_encoding_errors_naming_the_encoding(tmp_path, fmt, encoding, named):
    text = {"csv": "id,name\n1,Zoë\n", "json": '[{"id": 1, "name": "Zoë"}]', "jsonl": '{"id": 1}\n'}[fmt]
    path = tmp_path / f"wide.{fmt}"
    path.write_bytes(text.encode(encoding))
    reason, message = reason_of(lambda: list(read_records(path, fmt, None)))
    assert reason == "encoding_error" and named in message


@pytest.mark.parametrize("data", [b'[{"Id": 1, "ActivityDate": "4/12/2016", "": 3}]\n',
                                  b'{"Id": 1, "ActivityDate": "4/12/2016"}\n{"Id": 2}\n'])
def test_json_dropped_into_a_csv_source_is_said_to_be_no_csv(data):
    with pytest.raises(PermanentError) as refused:
        csv_records(data)
    assert refused.value.failure.reason == "parse_error"
    assert "does not look like CSV" in refused.value.failure.message and 'format = "json"' in \
        refused.value.failure.message


@pytest.mark.parametrize("data", [b"{\nx\n", b"[\n1\n", b"{}\n1\n", b"[1]\n2\n", b'"{""",b\n1,2\n'])
def test_a_csv_header_of_brackets_is_still_csv(data):
    # A header named "{" is valid CSV (the readers' property run wrote one):
    # only lines no CSV writer produces, or JSON objects whole, are taken for JSON.
    rows = csv_records(data)
    assert len(rows) == data.count(b"\n") - 1 and all(len(row) == data.split(b"\n")[0].count(b",") + 1 for row in rows)


def test_pretty_printed_json_in_a_csv_source_says_json_where_it_fails():
    data = b'[\n  {\n    "Id": 1,\n    "ActivityDate": "4/12/2016"\n  }\n]\n'
    with pytest.raises(PermanentError) as refused:
        csv_records(data)
    assert refused.value.failure.reason == "parse_error" and 'format = "json"' in refused.value.failure.message


def test_an_unclosed_quote_is_reported_where_it_opens():
    data = b"Id,ActivityDate\r\n" + b"1,4/12/2016\r\n" * 4 + b'5,"4/12/2016\r\n' + b"6,4/13/2016\r\n" * 4
    with pytest.raises(PermanentError) as refused:
        csv_records(data)
    assert refused.value.failure.message == ("line 6: a quoted field that opens on this line is never closed "
                                             "(the file ends at line 10)")
    assert refused.value.failure.detail["line"] == 6


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b""])
def test_a_json_lines_record_of_exactly_the_limit_loads_whatever_its_line_end(end):
    limit = 64
    record = b'{"a": "' + b"x" * (limit - 9) + b'"}'
    assert len(record) == limit
    data = b'{"b": 1}\r\n' + record + end
    loaded = [value for value, _ in read_jsonl(io.BufferedReader(io.BytesIO(data)), max_record_bytes=limit)]
    assert loaded == [{"b": 1}, {"a": "x" * (limit - 9)}]
    longer = b'{"a": "' + b"x" * (limit - 8) + b'"}'
    with pytest.raises(PermanentError) as refused:
        list(read_jsonl(io.BufferedReader(io.BytesIO(longer + end)), max_record_bytes=limit))
    assert refused.value.failure.reason == "too_large"
