"""Generated cases for the edges of the readers: Parquet column names,
runs of blank lines (cut anywhere by the read buffers), JSON documents of
one object, and text in UTF-16 or UTF-32 where UTF-8 belongs.

Fixed seed (derandomize) and INGESTD_TEST_EXAMPLES examples, as
tests/test_properties.py.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.daemon.errors import PermanentError
# The shared reading layer, named as before the readers were split: these
# properties' fixed seeds (derandomize) come from their source text.
from ingestd.records import reading as readers
from ingestd.records.format_csv import read_csv
from ingestd.records.format_json import read_json
from ingestd.records.format_jsonl import read_jsonl
from ingestd.records.parquetread import read_parquet

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


def outcome(read):
    """The values read, or the reason and message of the refusal."""
    try:
        return [value for value, _ in read()]
    except PermanentError as exc:
        return exc.reason, exc.failure.message


@SETTINGS
@given(names=st.lists(st.one_of(st.sampled_from(["a", "b", "A", "a.b", " ", "é"]), TEXT.filter(bool)),
                      min_size=1, max_size=6))
def test_parquet_columns_load_under_their_names_or_two_of_one_name_are_refused(names):
    table = pa.Table.from_arrays([pa.array([i]) for i in range(len(names))], names=names)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.parquet"
        pq.write_table(table, path)
        got = outcome(lambda: read_parquet(path))
    twice = [name for i, name in enumerate(names) if name in names[:i]]
    if twice:
        first = names.index(twice[0]) + 1
        second = names.index(twice[0], first) + 1
        assert got[0] == "parse_error" and f"columns {first} and {second}" in got[1] and repr(twice[0]) in got[1]
    else:
        assert got == [{name: i for i, name in enumerate(names)}]


BLANK_RUN = st.lists(st.sampled_from(["\n", "\r\n", "\r"]), max_size=40).map("".join)
CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@SETTINGS
@given(rows=st.lists(st.tuples(CELL, CELL), max_size=8), blanks=st.data(), chunk=st.sampled_from([1, 2, 3, 7, 4096]),
       buffer=st.sampled_from([1, 5, 64, 8192]), ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_csv_runs_of_blank_lines_carry_nothing_and_keep_line_numbers(rows, blanks, chunk, buffer, ending):
    out = io.StringIO(newline="")
    out.write("a,b" + ending)
    for row in rows:
        out.write(blanks.draw(BLANK_RUN))
        csv.writer(out, lineterminator=ending, quoting=csv.QUOTE_ALL).writerow(row)
    out.write(blanks.draw(BLANK_RUN))
    before_ragged = out.getvalue()
    # A CR last, then this LF, would be one line break: end the run with a whole one.
    text = before_ragged + ("\n" if before_ragged.endswith("\r") and ending != "\r" else "") + "x" + ending
    expected_line = len(io.StringIO(text, newline="").readlines())
    saved, readers.TEXT_CHUNK = readers.TEXT_CHUNK, chunk
    try:
        got = outcome(lambda: read_csv(io.BufferedReader(io.BytesIO(before_ragged.encode()), buffer_size=buffer)))
        assert got == [{"a": a, "b": b} for a, b in rows]
        got = outcome(lambda: read_csv(io.BufferedReader(io.BytesIO(text.encode()), buffer_size=buffer)))
    finally:
        readers.TEXT_CHUNK = saved
    assert got[0] == "parse_error" and got[1].startswith(f"line {expected_line}: 1 fields"), (got, expected_line)


@SETTINGS
@given(records=st.lists(st.dictionaries(TEXT, st.integers() | TEXT, max_size=3), max_size=6), blanks=st.data(),
       buffer=st.sampled_from([1, 7, 64, 8192]))
def test_jsonl_runs_of_blank_lines_carry_nothing_and_keep_line_numbers(records, blanks, buffer):
    whitespace = st.lists(st.sampled_from([" ", "\t", "\r", "\n", "\r\n"]), max_size=30).map("".join)
    text = "".join(blanks.draw(whitespace) + "\n" + json.dumps(r) + "\n" for r in records)
    text += blanks.draw(whitespace) + "\n"
    data = text.encode()
    if records:
        assert outcome(lambda: read_jsonl(io.BufferedReader(io.BytesIO(data), buffer_size=buffer))) == records
    bad = data + b"[1]\n"
    got = outcome(lambda: read_jsonl(io.BufferedReader(io.BytesIO(bad), buffer_size=buffer)))
    line = bad.count(b"\n")
    assert got[0] == "parse_error" and got[1].startswith(f"line {line}:")


@SETTINGS
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | TEXT,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                          max_leaves=10),
       indent=st.sampled_from([None, 0, 2]), before=st.sampled_from(["", " ", "\n\t"]))
def test_a_json_document_is_an_object_one_record_or_refused_saying_its_shape(value, indent, before):
    text = (before + json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode()
    got = outcome(lambda: read_json(io.BufferedReader(io.BytesIO(text), buffer_size=16)))
    if isinstance(value, dict):
        assert got == [value]
        assert [t for _, t in read_json(io.BufferedReader(io.BytesIO(text)))] == [text.strip()]
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        assert got == value
    else:
        assert got[0] == "parse_error" and "an object or an array of objects" in got[1]


WIDE = ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-32"]


@SETTINGS
@given(rows=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=5), encoding=st.sampled_from(WIDE),
       fmt=st.sampled_from(["csv", "json", "jsonl"]))
def test_utf16_without_its_mark_and_utf32_are_encoding_errors_before_any_record(rows, encoding, fmt):
    records = [{"k": a, "v": b} for a, b in rows]
    if fmt == "csv":
        out = io.StringIO(newline="")
        csv.writer(out).writerows([("k", "v"), *rows])
        text = out.getvalue()
    elif fmt == "json":
        text = json.dumps(records, ensure_ascii=False)
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    read = {"csv": read_csv, "json": read_json, "jsonl": read_jsonl}[fmt]
    stream = io.BufferedReader(io.BytesIO(text.encode(encoding)))
    seen = []
    try:
        for record in read(stream):
            seen.append(record)
        raise AssertionError(f"{encoding} {fmt} loaded {len(seen)} records")
    except PermanentError as exc:
        assert exc.reason == "encoding_error" and not seen
        assert encoding.upper().replace("-", "")[:5] in exc.failure.message.replace("-", "")
    # The same text in UTF-8, with a stray NUL or two, is never taken for either.
    data = text.encode() + b" " * 64
    assert readers.wide_encoding(data[:32] + b"\x00" + data[32:] + b"\x00") is None


GOOD_LINE = st.one_of(
    st.dictionaries(TEXT, st.integers() | TEXT | st.floats(allow_nan=False, allow_infinity=False), max_size=3)
    .map(lambda r: json.dumps(r)),
    st.sampled_from(['{"n": 12345678901234567890123}', '{"x": 1e23}', '{"x": 0.30000000000000001}',
                     '{"x": 1E-400}', '{"s": "a\\\\u0000b"}', '{"d": ' + "[" * 100 + "]" * 100 + "}",
                     '  {"a": 1}', '{"a": 1}\r', '{"a": 2.5e-3}']),
    st.sampled_from(["", " ", "\t", "\r", " \r"]))
BAD_LINE = st.sampled_from(['{"s": "a\\u0000b"}', '{"d": ' + "[" * 130 + "]" * 130 + "}", "[1]", "null", "{bad",
                            '{"a": 1} x', "\ufeff{}", '{"s": "\\ud800"}', '{"n": 1e99999}'])


def typed(value):
    """A value with the type of every number (an exact number is not its double)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return type(value).__name__, str(value)


def jsonl_oracle(data: bytes, limit: int):
    """Each line alone through parse_record: the values, or the first refusal."""
    from ingestd.records.jsonrecord import json_type, parse_record, too_large_message

    values = []
    pieces = data.split(b"\n")
    after_blank = True  # the indent after blank lines (or at the start) is no record's
    for number, piece in enumerate(pieces, 1):
        line = piece + b"\n" if number < len(pieces) else piece
        if not line.strip(b" \t\r\n"):
            after_blank = True
            continue
        if after_blank:
            line, after_blank = line.lstrip(b" \t\r\n"), False
        end = 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0
        try:
            if len(line) - end > limit:
                return "too_large", too_large_message(f"line {number}", limit)
            value = parse_record(line, f"line {number}")
        except PermanentError as exc:
            return exc.reason, exc.failure.message
        if type(value) is not dict:
            return "parse_error", f"line {number}: {json_type(value)}, not an object"
        values.append(value)
    return values or ("parse_error", "the file holds no records (only blank lines)")


@SETTINGS
@given(good=st.lists(GOOD_LINE, max_size=12), bad=st.none() | st.tuples(BAD_LINE, st.integers(0, 12)),
       crlf=st.booleans(), buffer=st.sampled_from([1, 7, 64, 300, 8192]), chunk=st.sampled_from([1, 64, 1 << 20]),
       limit=st.sampled_from([8, 40, 1 << 20, 1 << 20]))
def test_jsonl_lines_taken_a_buffer_at_a_time_are_each_line_read_alone(good, bad, crlf, buffer, chunk, limit):
    """Values, their order, refusals and the line they name are those of each
    line read alone, whatever the buffer holds of the file: lines with and
    without long numbers, exponents, an escaped U+0000, deep nesting, errors."""
    lines = list(good)
    if bad is not None:
        lines.insert(bad[1], bad[0])
    data = ("\r\n" if crlf else "\n").join(lines).encode("utf-8", "surrogatepass")
    saved, readers.TEXT_CHUNK = readers.TEXT_CHUNK, chunk
    try:
        stream = io.BufferedReader(io.BytesIO(data), buffer_size=buffer)
        got = outcome(lambda: read_jsonl(stream, limit))
        texts = None if isinstance(got, tuple) else \
            [t for _, t in read_jsonl(io.BufferedReader(io.BytesIO(data), buffer_size=buffer), limit)]
    finally:
        readers.TEXT_CHUNK = saved
    expected = jsonl_oracle(data, limit)
    assert got == expected
    if not isinstance(got, tuple):
        assert typed(got) == typed(expected)
    if texts is not None:  # each record's text is its line (less the indent after blank lines)
        kept = [p.strip(b" \t\r\n") for p in data.split(b"\n") if p.strip(b" \t\r\n")]
        assert [t.strip(b" \t\r\n") for t in texts] == kept
