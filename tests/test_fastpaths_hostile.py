"""Hostile inputs for the two fast paths of the worker's read:

- Parquet rows judged valid column by column (consumers/columns.py): the
  reader yields ``KNOWN_VALID`` for them and the COPY stream skips their
  validation. The reference is the same load without verdicts, every record
  validated by jsonschema itself: the COPY bytes (texts, statuses, errors),
  the counts and the run's quality figures must be the same, or the same
  refusal, whatever the file's columns (string, large, view, dictionary,
  nulls, order, extra, missing, nested) and the schema near the edge of
  "closed and flat" (booleans, enum, const, formats, type lists, patterns);
- JSON Lines taken a buffer at a time (records/format_jsonl.py): values,
  number types, texts and refusals are those of each line read alone
  (``jsonl_oracle``), whatever the buffer holds, and the work is linear in
  the file however records and blank lines alternate.

The end-to-end tests load through ``ingest_message`` with the real
PostgreSQL, as a worker does.
"""
from __future__ import annotations

import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.bronze import CopyStream, LoadStats
from ingestd.consumers.validation import RecordValidator
from ingestd.daemon.errors import PermanentError
from ingestd.records import parquetread
from ingestd.records import reading as readers
from ingestd.records.dialect import SchemaError
from ingestd.records.format_jsonl import read_jsonl
from ingestd.records.formats import read_records
from ingestd.records.reading import KNOWN_VALID

from .conftest import drop_file, query
from .test_ingest import event_for
from .test_reader_properties import jsonl_oracle, typed

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# -- Parquet: rows judged column by column -----------------------------------

DRAFTS = ["http://json-schema.org/draft-04/schema#", "http://json-schema.org/draft-06/schema#",
          "http://json-schema.org/draft-07/schema#", "https://json-schema.org/draft/2019-09/schema",
          "https://json-schema.org/draft/2020-12/schema"]
SUBSCHEMAS = [
    True, False, {}, {"type": "string"}, {"type": "string", "pattern": "^[0-9]+$"},
    {"type": "string", "pattern": "^(?=a)a.?$"}, {"type": "string", "pattern": "^(?!1)"},
    {"type": "string", "pattern": "^a$"}, {"type": "string", "pattern": "^\\d$"},
    {"type": "string", "pattern": "^\\w+$"}, {"type": "string", "pattern": "^\\s*$"},
    {"type": "string", "pattern": "^.$"}, {"type": "string", "pattern": "\\p{L}"},
    {"type": "string", "maxLength": 1}, {"type": "string", "minLength": 2}, {"enum": ["a", "1", 1, None]},
    {"const": "a"}, {"type": ["string", "null"]}, {"type": ["null"]}, {"format": "date"},
    {"type": "string", "format": "email"}, {"type": "string", "format": "ipv4", "description": "an address"},
    {"type": "integer"}, {"not": {"type": "string"}}, {"anyOf": [{"maxLength": 1}, {"pattern": "^a"}]},
    {"type": "string", "pattern": "^[^\"\\\\]*$", "title": "no quote or backslash"},
]
# Subschemas most strings pass: rows whose every value passes are common.
LENIENT = [True, {}, {"type": "string"}, {"type": ["string", "null"]}, {"type": "string", "pattern": "^."},
           {"not": {"const": "a"}}]
STRINGS = ["", "a", "aa", "ab", "1", "12", "\u0661", "1\n", "a\n", "\n", " ", "\u00a0", "\ufeff", "\u2028", "é",
           "É", "\U0001f600", "2020-01-01", "2020-02-30", "a@b.c", "1.2.3.4", "\\", '"', "\x01", "\x1f", "\x7f",
           "e+5", "1e+5", "\\u0000", "\\\\u0000", "null"]
NAMES = ["a", "b", "é", "a/b", "~1"]
KINDS = ["string", "large_string", "string_view", "dictionary8", "dictionary32", "large_dictionary"]


def _column(values: list[str | None], kind: str) -> pa.Array:
    plain = pa.array(values, pa.string())
    if kind == "large_string":
        return plain.cast(pa.large_string())
    if kind == "string_view":
        return plain.cast(pa.string_view())
    if kind.startswith("dictionary"):
        index = pa.int8() if kind == "dictionary8" else pa.int32()
        return plain.dictionary_encode().cast(pa.dictionary(index, pa.string()))
    if kind == "large_dictionary":
        return plain.cast(pa.large_string()).dictionary_encode()
    return plain


@st.composite
def parquet_cases(draw):
    """(schema, format mode, table, write options) of a closed schema and a
    file whose columns are mostly its properties, as strings of every kind."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    schema = {"$schema": draw(st.sampled_from(DRAFTS)), "type": "object",
              "properties": {n: draw(st.sampled_from(SUBSCHEMAS) | st.sampled_from(LENIENT)) for n in names},
              "required": list(names), "additionalProperties": False}
    rows = draw(st.integers(1, 24))
    # Mostly few distinct strings (the rows a column check marks), at times nulls and any text.
    common = st.sampled_from(draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3)))
    values = st.one_of(*[common] * 6, st.sampled_from(STRINGS), st.none(),
                       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=3))
    columns = {name: _column(draw(st.lists(values, min_size=rows, max_size=rows)), draw(st.sampled_from(KINDS)))
               for name in names}
    shape = draw(st.sampled_from(["same"] * 5 + ["shuffled", "extra", "missing", "struct", "number", "nulls"]))
    if shape == "shuffled":
        columns = dict(reversed(list(columns.items())))
    elif shape == "extra":
        columns["zz"] = pa.array(["a"] * rows)
    elif shape == "missing" and len(names) > 1:
        del columns[names[-1]]
    elif shape == "struct":  # a nested column under a property's name
        columns[names[0]] = pa.array([{names[0]: "a"}] * rows)
    elif shape == "number":
        columns[names[0]] = pa.array(range(rows), pa.int64())
    elif shape == "nulls":
        columns[names[0]] = pa.nulls(rows, pa.string())
    table = pa.table(columns)
    options = {"row_group_size": draw(st.integers(1, 9)), "use_dictionary": draw(st.booleans()),
               "data_page_size": draw(st.sampled_from([1, 64, 1 << 20]))}
    return schema, draw(st.sampled_from(["assert", "annotate"])), table, options


def _parquet_load(path, schema, format_mode, judged: bool, limit: int = readers.MAX_RECORD_BYTES):
    """What a worker's COPY of the file holds (every byte), its counts and
    its quality figures, or the refusal: with the verdicts of the columns
    (``judged``), or without them and every record validated by jsonschema."""
    validator = RecordValidator(schema, "s", format_mode)
    if not judged:
        validator._flat = validator._fast = None  # jsonschema itself, record by record
    stats = LoadStats()
    try:
        records = read_records(path, "parquet", None, max_record_bytes=limit,
                               valid_rows=validator.valid_rows if judged else None)
        stream = CopyStream(((n, value, text) for n, (value, text) in enumerate(records, 1)), validator, "s",
                            {"file_path": "x.parquet"}, stats)
        out = b"".join(iter(lambda: stream.read(1 << 16), b""))
    except PermanentError as exc:
        return exc.reason, exc.failure.message
    return out, (stats.rows_total, stats.rows_valid, stats.rows_invalid, stats.first_errors,
                 stats.quality.summary(stats.rows_total))


@SETTINGS
@given(case=parquet_cases(), expansion=st.sampled_from([None, 1, 40]), limit=st.sampled_from([None, 24]))
def test_a_parquet_load_with_column_verdicts_is_the_load_jsonschema_gives(case, expansion, limit, tmp_path):
    """Batches halved by the reader (``expansion``: the bytes of strings a
    batch may expand to), rows over a small ``max_record_bytes`` refused:
    the same bytes reach bronze, the same refusal, the same figures."""
    schema, format_mode, table, options = case
    try:
        RecordValidator(schema, "s", format_mode)
    except SchemaError:
        return  # a format this draft cannot assert: the source is refused at start
    path = tmp_path / "case.parquet"
    pq.write_table(table, path, **options)
    saved = parquetread.PARQUET_EXPANSION
    try:
        if expansion is not None:
            parquetread.PARQUET_EXPANSION = expansion
        limit = limit or readers.MAX_RECORD_BYTES
        judged = _parquet_load(path, schema, format_mode, True, limit)
        reference = _parquet_load(path, schema, format_mode, False, limit)
    finally:
        parquetread.PARQUET_EXPANSION = saved
    assert judged == reference


def test_rows_of_every_string_kind_are_judged_by_their_columns(tmp_path):
    """The verdicts are given for plain, large, view and dictionary columns
    (a batch of string views once went to the row path whole: Arrow's
    ``is_in`` takes no views)."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[0-9]+$"}},
              "required": ["a"], "additionalProperties": False}
    validator = RecordValidator(schema)
    for kind in KINDS:
        batch = pa.RecordBatch.from_pydict({"a": _column(["1", "x", None, "22", "1\n", "\u0661"], kind)})
        mask = validator.valid_rows(batch)
        assert mask is not None and mask.to_pylist() == [True, False, False, True, False, False], kind
    path = tmp_path / "views.parquet"
    pq.write_table(pa.table({"a": _column(["1", "x", "22"], "string_view")}), path)
    values = [value for value, _ in read_records(path, "parquet", None, valid_rows=validator.valid_rows)]
    assert values == [KNOWN_VALID, {"a": "x"}, KNOWN_VALID]


def _counting(validator: RecordValidator, name: str) -> list[int]:
    """Count the calls of a property's check (each judges one string)."""
    calls = [0]
    check = validator._flat.checks[name]

    def counted(value, check=check):
        calls[0] += 1
        return check(value)
    validator._flat.checks[name] = counted
    return calls


def test_a_dictionary_is_judged_for_the_entries_a_batch_uses_not_whole_for_each_batch(tmp_path):
    """Each batch of a row group holds the column's whole dictionary: judged
    entry by entry for every batch, a dictionary of D distinct strings cost
    D checks (and D Python strings) a batch, rows/8192 x D in all (25 x the
    checks of the row path for 200,000 rows, and its time 5 x). The
    checks are the strings each batch uses: no more than its rows."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^v[0-9]+$"}},
              "required": ["a"], "additionalProperties": False}
    rows = 30_000
    path = tmp_path / "dictionary.parquet"
    pq.write_table(pa.table({"a": pa.array([f"v{i}" for i in range(rows)]).dictionary_encode()}), path,
                   row_group_size=rows, dictionary_pagesize_limit=1 << 30)
    validator = RecordValidator(schema)
    calls = _counting(validator, "a")
    values = [value for value, _ in read_records(path, "parquet", None, valid_rows=validator.valid_rows)]
    assert values == [KNOWN_VALID] * rows
    assert calls[0] <= rows

    # One batch of a few rows over a large dictionary: a check a string it holds.
    big = pa.array([f"v{i}" for i in range(100_000)]).dictionary_encode()
    batch = pa.RecordBatch.from_arrays([big.slice(500, 3)], ["a"])
    assert len(batch.column(0).dictionary) == 100_000
    fresh = RecordValidator(schema)
    calls = _counting(fresh, "a")
    assert fresh.valid_rows(batch).to_pylist() == [True, True, True]
    assert calls[0] == 3


def _long_strings(path, rows: int = 400, length: int = 50_000) -> int:
    """A Parquet file of distinct valid strings of ``length`` characters,
    compressed to a few KB; the characters of its strings."""
    table = pa.table({"a": pa.array([("x" * length) + str(i) for i in range(rows)])})
    pq.write_table(table, path, compression="zstd", row_group_size=50, use_dictionary=False)
    assert path.stat().st_size < 20_000
    return sum(len(v) for v in table.column("a").to_pylist())


def _cached_characters(path, judged: bool) -> tuple[int, int]:
    """(rows valid, characters of the strings the validator remembers) after a load."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    validator = RecordValidator(schema)
    valid = 0
    for value, _ in read_records(path, "parquet", None, valid_rows=validator.valid_rows if judged else None):
        valid += value is KNOWN_VALID or validator.errors(value) is None
    return valid, sum(map(len, validator._flat.valid_strings["a"]))


def test_long_strings_judged_by_columns_are_not_remembered(tmp_path):
    """Each property remembers up to 50,000 valid strings: at any length,
    a Parquet file of 21 KB (distinct strings of 200,000 characters,
    compressed) had the worker hold 200 MB of them, and one of a few MB at
    max_record_bytes would hold tens of GB. Long strings are judged each
    time instead."""
    path = tmp_path / "long.parquet"
    total = _long_strings(path)
    valid, cached = _cached_characters(path, judged=True)
    assert valid == 400 and total > 20_000_000
    assert cached == 0


def test_long_strings_judged_by_the_row_path_are_not_remembered(tmp_path):
    path = tmp_path / "long.parquet"
    _long_strings(path)
    valid, cached = _cached_characters(path, judged=False)
    assert valid == 400
    assert cached < 1_000_000


def test_dictionary_indices_that_are_null_or_repeat_are_judged_as_their_strings():
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}},
              "required": ["a"], "additionalProperties": False}
    dictionary = pa.array(["x", "long", None, "y"])
    column = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 2, 3, 3, 0], pa.int8()), dictionary)
    mask = RecordValidator(schema).valid_rows(pa.RecordBatch.from_arrays([column], ["a"]))
    assert mask.to_pylist() == [True, False, False, False, True, True, True]


def test_strings_jsonb_or_utf8_refuse_are_refused_with_or_without_verdicts(tmp_path):
    """A U+0000 in a string, invalid UTF-8 (a UTF-8-encoded surrogate among
    it) after rows judged valid: the file is refused the same way."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    cases = {"nul.parquet": pa.array(["ok"] * 5 + ["a\x00b"]),
             "utf8.parquet": pa.array([b"ok"] * 5 + [b"\xff"], pa.binary()).view(pa.string()),
             "surrogate.parquet": pa.array([b"ok"] * 5 + [b"\xed\xa0\x80"], pa.binary()).view(pa.string())}
    for name, column in cases.items():
        path = tmp_path / name
        pq.write_table(pa.table({"a": column}), path, row_group_size=3)
        judged = _parquet_load(path, schema, "assert", True)
        assert judged == _parquet_load(path, schema, "assert", False)
        assert judged[0] == ("load_error" if name == "nul.parquet" else "encoding_error"), (name, judged)


@pytest.mark.integration
def test_a_parquet_run_has_the_same_rows_and_quality_with_or_without_verdicts(write_config, ingest_contexts,
                                                                             tmp_path, db, monkeypatch):
    """Through the worker's own load (ingest_message, the real PostgreSQL):
    bronze's rows, their statuses and errors, and the run's quality
    (never_seen, undeclared_fields, top_failures) are those of the same
    file loaded with every record validated."""
    from ingestd.consumers.ingest import ingest_message
    from ingestd.daemon.config import load_config

    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}, "day": {"format": "date"},
                             "note": {"type": ["string", "null"], "maxLength": 3}},
              "required": ["id", "day", "note"], "additionalProperties": False}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    sources = "".join(f'\n[[sources]]\nname = "{name}"\nformat = "parquet"\nschema = "{tmp_path / "s.json"}"\n'
                      "max_invalid_ratio = 1.0\n" for name in ("judged", "plain"))
    config = load_config(write_config(sources=sources))
    rows = 5_000
    table = pa.table({"note": _column([None if i % 7 == 0 else "abcd"[: i % 5] for i in range(rows)], "dictionary8"),
                      "id": _column([str(i) if i % 11 else f"{i}\n" for i in range(rows)], "large_string"),
                      "day": _column(["2020-02-30" if i % 13 == 0 else f"2020-01-{i % 28 + 1:02d}"
                                      for i in range(rows)], "string")})
    for name in ("judged", "plain"):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=1_500)
        drop_file(config.landing_dir, f"{name}/data.parquet", path)
    ctx = ingest_contexts(config)
    marked = []
    judge = RecordValidator.valid_rows

    def counted(self, batch):
        mask = judge(self, batch)
        marked.extend(mask.to_pylist() if mask is not None else [None] * batch.num_rows)
        return mask
    monkeypatch.setattr(RecordValidator, "valid_rows", counted)
    judged = ingest_message(ctx, event_for(config, "judged/data.parquet").to_json())
    # Every row was judged by its columns; the valid ones with a null note take the row path.
    assert len(marked) == rows and 0 < marked.count(True) <= judged.rows_valid
    monkeypatch.setattr(RecordValidator, "valid_rows", lambda self, batch: None)
    plain = ingest_message(ctx, event_for(config, "plain/data.parquet").to_json())
    assert (judged.status, judged.rows, judged.rows_valid) == (plain.status, plain.rows, plain.rows_valid)
    assert judged.status == "success" and 0 < judged.rows_valid < rows
    stored = {name: query(db, f"SELECT record_number, raw_data::text, validation_status, validation_errors::text "
                              f"FROM bronze.{name} ORDER BY record_number") for name in ("judged", "plain")}
    assert len(stored["judged"]) == rows and stored["judged"] == stored["plain"]
    quality = dict(query(db, "SELECT source, quality FROM ops.pipeline_runs WHERE status = 'success'"))
    assert quality["judged"] == quality["plain"] and quality["judged"]["top_failures"]


# -- JSON Lines: a buffer at a time -------------------------------------------

RECORD_LINES = [
    b'{"a": 1}', b'{"a": -0}', b'{"a": -0.0}', b'{"n": 12345678901234567890123}', b'{"n": 9007199254740993}',
    b'{"x": 1e400}', b'{"x": 1E-400}', b'{"x": 1e23}', b'{"x": 0.30000000000000001}', b'{"x": 2.5e-3}',
    b'{"x": 123456789012345}', b'{"x": 0.1}', b'{"s": "1e+5 and 12345678901234567"}',
    b'{"s": "a\\\\u0000b"}', b'{"s": "\\ud83d\\ude00"}', b'{"s": "\\u2028"}', b'{"a": 1}\r', b'  {"a": 1}',
    b'\t{"a": [1, {"b": null}]}  ', b'{"d": ' + b"[" * 127 + b"]" * 127 + b"}",
    b'{"s": "' + b"[" * 200 + b'"}', '{"é": "ü"}'.encode(),
]
REFUSED_LINES = [
    b'{"s": "a\\u0000b"}', b'{"s": "a\\\\\\u0000b"}', b'{"s": "\\ud800"}', b'{"s": "\\udc00x"}',
    b'{"d": ' + b"[" * 128 + b"]" * 128 + b"}", b'{"n": 1e99999}', b'{"s": "\xff"}', b'{"s": "\xed\xa0\x80"}',
    b"[1]", b"null", b"{bad", b'{"a": 1} x', b'{"a": NaN}', b"\xef\xbb\xbf{}", b'{"a": 1}\x00',
]
BOM = b"\xef\xbb\xbf"
BLANKS = [b"", b" ", b"\t", b"\r", b" \r", b"\t \t"]


@st.composite
def jsonl_files(draw, limit: int):
    """Lines of records (some exactly at ``limit`` bytes, or one over), runs
    of blank lines (with \\r, spaces, tabs), indented lines after them, at
    most one line that is refused; joined by LF or CRLF, perhaps without a
    last line end."""
    def sized(extra: int) -> bytes:
        return b'{"s":"' + b"x" * max(0, limit + extra - 8) + b'"}'
    record = st.one_of(st.sampled_from(RECORD_LINES), st.sampled_from([-1, 0, 0, 1]).map(sized))
    blank = st.sampled_from(BLANKS)
    lines = draw(st.lists(st.one_of(record, record, blank, blank.flatmap(
        lambda b: record.map(lambda r: b + b"\n" + b"  " + r))), max_size=30))
    if draw(st.booleans()) and REFUSED_LINES:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(REFUSED_LINES)))
    data = (b"\r\n" if draw(st.booleans()) else b"\n").join(lines)
    if lines and draw(st.booleans()):
        data += b"\n"
    return data


def _jsonl_outcome(data: bytes, limit: int, buffer: int, chunk: int, exact_numbers: bool = True):
    """What read_jsonl makes of ``data``: the values and texts, or the refusal."""
    saved, readers.TEXT_CHUNK = readers.TEXT_CHUNK, chunk
    try:
        got = list(read_jsonl(io.BufferedReader(io.BytesIO(data), buffer_size=buffer), limit, exact_numbers))
    except PermanentError as exc:
        return (exc.reason, exc.failure.message), None
    finally:
        readers.TEXT_CHUNK = saved
    return [value for value, _ in got], [text for _, text in got]


def _oracle(data: bytes, limit: int):
    """``jsonl_oracle`` of a file, its UTF-8 byte order mark (the file's, not a line's) skipped."""
    return jsonl_oracle(data[3:] if data.startswith(BOM) else data, limit)


def _expected_texts(data: bytes) -> list[bytes]:
    """Each record's line, without the indent after blank lines (or at the start)."""
    texts, after_blank = [], True
    pieces = (data[3:] if data.startswith(BOM) else data).split(b"\n")
    for number, piece in enumerate(pieces, 1):
        line = piece + b"\n" if number < len(pieces) else piece
        if not line.strip(b" \t\r\n"):
            after_blank = True
            continue
        texts.append(line.lstrip(b" \t\r\n") if after_blank else line)
        after_blank = False
    return texts


@SETTINGS
@given(data=st.data(), limit=st.sampled_from([12, 40, 300]), buffer=st.sampled_from([1, 8, 41, 300, 1 << 16]),
       chunk=st.sampled_from([1, 33, 1 << 20]))
def test_jsonl_read_a_buffer_at_a_time_is_each_line_read_alone(data, limit, buffer, chunk):
    """Values and the type of every number, texts (each line whole, its
    line end kept, less the indent after blank lines), refusals and the
    line they name: those of each line through parse_record alone."""
    content = data.draw(jsonl_files(limit))
    if content.startswith(BOM):
        # The file's own mark is looked for in a peek of 3 bytes, which a
        # buffer of 1 cannot give (a real stream's buffer holds 1 MiB): a
        # line with a mark is kept from the file's start here.
        content = b" " + content
    got, texts = _jsonl_outcome(content, limit, buffer, chunk)
    expected = _oracle(content, limit)
    assert got == expected
    if texts is not None:
        assert typed(got) == typed(expected)
        assert texts == _expected_texts(content)
    # A source without a schema (numbers not made exact): the same texts, or the same refusal.
    loose, loose_texts = _jsonl_outcome(content, limit, buffer, chunk, exact_numbers=False)
    assert (loose_texts, loose if texts is None else None) == (texts, got if texts is None else None)


@SETTINGS
@given(data=st.data(), bom=st.booleans())
def test_jsonl_gzipped_or_with_a_byte_order_mark_reads_as_plain(data, bom, tmp_path):
    content = data.draw(jsonl_files(40))
    head = BOM if bom else b""
    for name, stored in (("plain.jsonl", head + content), ("packed.jsonl.gz", gzip.compress(head + content))):
        (tmp_path / name).write_bytes(stored)
        try:
            got = [value for value, _ in read_records(tmp_path / name, "jsonl", None, max_record_bytes=40)]
        except PermanentError as exc:
            got = (exc.reason, exc.failure.message)
        assert got == _oracle(head + content, 40), name


class _Peeking(io.BufferedReader):
    """A buffered stream that counts the bytes its peeks hand out."""

    peeked = 0

    def peek(self, size: int = 0) -> bytes:
        ahead = super().peek(size)
        self.peeked += len(ahead)
        return ahead


@pytest.mark.parametrize("pattern", [b'{"a":1}\n\n', b'{"a":1}\r\n\r\n', b'{"a":1}\n \n', b'{}\n\t\n\n'])
def test_records_between_blank_lines_cost_their_bytes_not_the_buffer_each(pattern):
    """A record, a blank line, a record...: the buffer was taken up to its
    first blank line, then peeked, copied and scanned whole again for the
    next record: the remaining buffer once a record, quadratic in the
    buffer (160,000 records of 10 bytes took 295 s, against 0.2 s without
    the blank lines). The bytes looked at are now the file's, a few times."""
    data = pattern * 20_000
    stream = _Peeking(io.BytesIO(data), buffer_size=1 << 20)
    values = [value for value, _ in read_jsonl(stream)]
    assert len(values) == 20_000
    assert stream.peeked <= 3 * len(data) + (1 << 20)


def test_a_buffer_of_blank_lines_only_is_no_record_and_counts_its_lines():
    with pytest.raises(PermanentError) as caught:
        list(read_jsonl(io.BufferedReader(io.BytesIO(b"\n \r\n\t\n" * 1000), buffer_size=64)))
    assert caught.value.reason == "parse_error" and "no records" in caught.value.failure.message
    data = b"\n \r\n\t\n" * 1000 + b'{"a": 1}\n' + b" \n" * 10 + b"  [1]\n"
    with pytest.raises(PermanentError) as caught:
        list(read_jsonl(io.BufferedReader(io.BytesIO(data), buffer_size=1 << 16)))
    assert caught.value.failure.message == "line 3012: an array, not an object"


def test_a_file_of_tiny_records_and_one_huge_line_are_bounded_by_the_record_limit():
    data = b"{}\n" * 200_000
    assert sum(1 for _ in read_jsonl(io.BufferedReader(io.BytesIO(data), buffer_size=1 << 20))) == 200_000
    huge = b'{"s": "' + b"x" * (3 << 20) + b'"}'
    for tail in (b"", b"\n", b"\r\n"):
        with pytest.raises(PermanentError) as caught:
            list(read_jsonl(io.BufferedReader(io.BytesIO(b'{"a": 1}\n' + huge + tail), buffer_size=1 << 20),
                            1 << 20))
        assert caught.value.reason == "too_large" and "line 2" in caught.value.failure.message
    exact = b'{"s": "' + b"x" * ((1 << 20) - 9) + b'"}'  # max_record_bytes, with or without its line end
    assert len(exact) == 1 << 20
    for tail in (b"", b"\n", b"\r\n"):
        got = list(read_jsonl(io.BufferedReader(io.BytesIO(b'{"b": 2}\n' + exact + tail), buffer_size=1 << 20),
                              1 << 20))
        assert [value for value, _ in got] == [{"b": 2}, {"s": "x" * ((1 << 20) - 9)}]



@pytest.mark.integration
def test_a_jsonl_file_of_records_between_blank_lines_loads_every_record(write_config, ingest_contexts, db,
                                                                       tmp_path):
    """Through the worker: a gzipped file of records each after a blank line
    (with CRLF and indents) loads every record with its own line's text."""
    from ingestd.consumers.ingest import ingest_message
    from ingestd.daemon.config import load_config

    config = load_config(write_config())
    lines = [b'%s{"n": %d, "x": %s}' % (b"  " if i % 3 == 0 else b"", i, b"1e400" if i % 5 == 0 else b"0.5")
             for i in range(3_000)]
    data = b"\xef\xbb\xbf" + b"\r\n\r\n".join(lines) + b"\r\n"
    drop_file(config.landing_dir, "events_jsonl/blank.jsonl.gz", gzip.compress(data))
    ctx = ingest_contexts(config)
    outcome = ingest_message(ctx, event_for(config, "events_jsonl/blank.jsonl.gz").to_json())
    assert (outcome.status, outcome.rows) == ("success", 3_000), outcome
    stored = query(db, "SELECT record_number, raw_data->>'n', raw_data->>'x' FROM bronze.events_jsonl "
                       "ORDER BY record_number")
    assert [(n, int(i)) for n, i, _ in stored] == [(i + 1, i) for i in range(3_000)]
    assert {x for _, _, x in stored} == {"1" + "0" * 400, "0.5"}
