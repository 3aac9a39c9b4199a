"""Rows found valid column by column (consumers/columns.py) are exactly the
rows the row path finds valid, on generated Arrow batches.

Batches of string columns (plain, large, dictionary-encoded) with nulls,
unicode, and strings near the patterns' edges ("\\n" before the end,
non-ASCII digits and spaces, "." against a line break), and batches of
other shapes (a number column, a missing or extra column): a row marked
valid is valid by jsonschema on the value read back from its JSON text
(records/arrowjson.py, as the Parquet reader reads it); a row of strings
without nulls is marked exactly when it is valid.
"""
import os

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.validation import RecordValidator
from ingestd.records.arrowjson import batch_texts

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))

SUBSCHEMAS = [
    {"type": "string", "pattern": "^[0-9]{2}$"},
    {"type": "string", "pattern": "^a.c$"},
    {"type": "string", "pattern": "c$", "description": "unanchored at the start"},
    {"type": "string", "pattern": "\\p{L}"},
    {"type": "string"},
    {"type": "string", "pattern": "^\\s*x$"},
    {"type": "string", "pattern": "^\\w+$"},
    {"type": "string", "pattern": "^\\d+$"},
    {"type": "string", "pattern": "^(1[0-2]|0?[1-9])/(3[01]|[12][0-9]|0?[1-9])/[0-9]{4}$"},
    {"type": "string", "maxLength": 2},
    {"type": "string", "format": "date"},
    {"type": ["string", "null"]},
    {"type": "integer"},
    {},
]
STRINGS = ["12", "1", "123", "12\n", "١٢", "abc", "a\nc", "a\u2028c", "aéc", "x", " x", "\u00a0x", "\ufeffx",
           "é", "_", "4/12/2016", "04/31/2016", "13/1/2016", "2016-04-12", "2016-02-30", "", "ab", "\U0001f600"]
NAMES = ["Id", "When", "n", "é", "a/b"]


@st.composite
def cases(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    schema = {"$schema": draw(st.sampled_from(["http://json-schema.org/draft-07/schema#",
                                               "https://json-schema.org/draft/2020-12/schema"])),
              "type": "object", "properties": {n: draw(st.sampled_from(SUBSCHEMAS)) for n in names},
              "required": names, "additionalProperties": False}
    rows = draw(st.integers(1, 30))
    columns = {}
    for name in names:
        values = draw(st.lists(st.one_of(st.sampled_from(STRINGS), st.none(), st.text(max_size=3)),
                               min_size=rows, max_size=rows))
        values = [v.replace("\x00", "") if v is not None else None for v in values]
        kind = draw(st.sampled_from(["string", "large_string", "dictionary"]))
        array = pa.array(values, pa.large_string() if kind == "large_string" else pa.string())
        columns[name] = array.dictionary_encode() if kind == "dictionary" else array
    shape = draw(st.sampled_from(["same", "same", "same", "number", "missing", "extra"]))
    if shape == "number":
        columns[names[0]] = pa.array(draw(st.lists(st.integers(-5, 5), min_size=rows, max_size=rows)))
    elif shape == "missing" and len(names) > 1:
        del columns[names[-1]]
    elif shape == "extra":
        columns["extra"] = pa.array(["x"] * rows)
    return schema, pa.RecordBatch.from_pydict(columns)


def _reference(schema):
    validator = RecordValidator(schema, "reference")
    validator._flat = validator._fast = None  # jsonschema, record by record
    return validator


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), again=st.booleans())
def test_rows_valid_by_columns_are_the_rows_valid_by_the_row_path(case, again):
    schema, batch = case
    validator, reference = RecordValidator(schema, "columns"), _reference(schema)
    if again:  # the caches filled by the row path first
        for text in batch_texts(batch):
            validator.errors(orjson.loads(text))
    mask = validator.valid_rows(batch)
    records = [orjson.loads(text) for text in batch_texts(batch)]
    verdicts = [reference.errors(record) is None for record in records]
    plain = batch.schema.names == list(schema["properties"]) or set(batch.schema.names) == set(schema["properties"])
    strings = all(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
                  for t in batch.schema.types)
    if mask is None:
        assert not (plain and strings), "a batch of the schema's string columns is judged column-wise"
        return
    marked = mask.to_pylist()
    for row, (record, valid, good) in enumerate(zip(records, verdicts, marked, strict=True)):
        assert not good or valid, (schema, record)
        if None not in record.values():
            assert good == valid, (row, schema, record)
    # The row path, after the column check, still gives the reference's verdicts.
    assert [validator.errors(r) is None for r in records] == verdicts


def test_only_closed_schemas_are_judged_by_columns():
    batch = pa.RecordBatch.from_pydict({"a": ["1", "x", None]})
    closed = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[0-9]$"}},
              "required": ["a"], "additionalProperties": False}
    assert RecordValidator(closed).valid_rows(batch).to_pylist() == [True, False, False]
    assert RecordValidator({**closed, "additionalProperties": True}).valid_rows(batch) is None
    assert RecordValidator({**closed, "required": []}).valid_rows(batch) is None
    assert RecordValidator({**closed, "minProperties": 1}).valid_rows(batch) is None  # not flat
    assert RecordValidator(None).valid_rows(batch) is None


def _copy_bytes(path, schema, judged):
    """The binary COPY stream, stats and quality of a Parquet file loaded as
    a worker loads it, with the column verdicts (``judged``) or without."""
    from ingestd.consumers.bronze import CopyStream, LoadStats
    from ingestd.records.formats import read_records

    validator = RecordValidator(schema, "columns")
    records = read_records(path, "parquet", None, valid_rows=validator.valid_rows if judged else None)
    stats = LoadStats()
    stream = CopyStream(((n, value, text) for n, (value, text) in enumerate(records, 1)), validator, "s",
                        {"file_path": "x.parquet"}, stats)
    out = b"".join(iter(lambda: stream.read(1 << 16), b""))
    return out, (stats.rows_total, stats.rows_valid, stats.rows_invalid, stats.first_errors,
                 stats.quality.summary(stats.rows_total))


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), group=st.integers(1, 7))
def test_a_parquet_load_is_the_same_with_column_verdicts(case, group, tmp_path_factory):
    """What reaches bronze (every byte of the COPY: texts, statuses, errors)
    and the run's figures and quality are the same whether the reader's
    rows were judged column by column or each record by the validator."""
    import pyarrow.parquet as pq

    schema, batch = case
    path = tmp_path_factory.mktemp("verdicts") / "case.parquet"
    pq.write_table(pa.Table.from_batches([batch]), path, row_group_size=group)
    judged, plain = _copy_bytes(path, schema, True), _copy_bytes(path, schema, False)
    assert judged == plain


def test_rows_judged_valid_by_columns_skip_the_row_path(tmp_path):
    """The reader yields KNOWN_VALID for the rows the columns found valid,
    the value read back for the others, and the texts are the same."""
    import pyarrow.parquet as pq

    from ingestd.records.formats import read_records
    from ingestd.records.reading import KNOWN_VALID

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[0-9]$"}},
              "required": ["a"], "additionalProperties": False}
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"a": ["1", "x", None, "2"]}), path)
    judged = list(read_records(path, "parquet", None, valid_rows=RecordValidator(schema).valid_rows))
    plain = list(read_records(path, "parquet", None))
    assert [v for v, _ in judged] == [KNOWN_VALID, {"a": "x"}, {"a": None}, KNOWN_VALID]
    assert [t for _, t in judged] == [t for _, t in plain] == [b'{"a":"1"}', b'{"a":"x"}', b'{"a":null}', b'{"a":"2"}']
