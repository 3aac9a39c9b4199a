"""The flat fast path (consumers/compiled.py ``FlatObjectCheck``) and the
COPY encoder give the verdicts and the bytes of the reference.

Closed object schemas (every property required, no other allowed: the one
pass over the verdict caches) and open ones, generated records that repeat
values (so that cached verdicts answer) with nulls, missing and extra keys,
nested values, huge and inexact numbers, unicode and strings near the
patterns' edges ("\\n" before the end, non-ASCII digits and spaces): each
record's verdict equals jsonschema's, record after record in one validator.
"""
import json
import os
import struct
import uuid

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers import bronze
from ingestd.consumers.quality import RunQuality
from ingestd.consumers.validation import RecordValidator
from ingestd.records.jsonrecord import parse_record

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))

NAMES = ["Id", "When", "n", "é", "pattern"]
SUBSCHEMAS = [
    {"type": "string", "pattern": "^[0-9]{2}$"},
    {"type": "string", "pattern": "^a.c$"},
    {"type": "string", "pattern": "c$", "description": "unanchored at the start"},
    {"type": "string", "pattern": "\\p{L}"},
    {"type": "string"},
    {"type": "string", "pattern": "^\\s*x$"},
    {"type": "string", "pattern": "^\\w+$"},
    {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"},
    {"type": "string", "maxLength": 2},
    {"type": ["string", "null"]},
    {"type": "integer", "maximum": 1e308},
    {"type": "number", "minimum": 0.30000000000000001},
    {"type": "array", "items": {"type": "string"}},
    {},
    True,
]
STRINGS = ["12", "1", "123", "12\n", "١٢", "abc", "a\nc", "aéc", "x", " x", "\u00a0x", "\u2028x", "é", "_",
           "1.5", "-0", "1e5", "1.", "", "ab"]
NUMBERS = ["0", "1", "-2", "0.3", "0.30000000000000001", "1e308", "1e309", "100000000000000000000000001",
           "1.0", "2.5"]

string_texts = st.sampled_from(STRINGS).map(json.dumps)
leaf_texts = st.one_of(string_texts, st.sampled_from(NUMBERS), st.sampled_from(["null", "true", "false"]))
value_texts = st.recursive(leaf_texts, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
    st.dictionaries(st.sampled_from(NAMES), inner, max_size=2).map(
        lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}")), max_leaves=4)
# Mostly strings, as tabular records hold: the values the caches and the pattern tests see.
value_texts = st.integers(0, 9).flatmap(lambda i: string_texts if i < 8 else value_texts)


@st.composite
def schemas(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    properties = {name: draw(st.sampled_from(SUBSCHEMAS)) for name in names}
    closed = draw(st.booleans())
    required = names if closed or draw(st.booleans()) else names[:1]
    draft = draw(st.sampled_from(["http://json-schema.org/draft-07/schema#",
                                  "https://json-schema.org/draft/2020-12/schema"]))
    return {"$schema": draft, "type": "object", "properties": properties, "required": required,
            "additionalProperties": not closed}


@st.composite
def record_texts(draw, names):
    keys = draw(st.lists(st.sampled_from(names + ["extra"]), max_size=len(names) + 1, unique=True))
    keys = list(names) if draw(st.integers(0, 3)) else keys  # mostly the whole record
    return "{" + ",".join(f"{json.dumps(k)}:{draw(value_texts)}" for k in keys) + "}"


def _reference(schema):
    validator = RecordValidator(schema, "reference")
    validator._flat = validator._fast = None  # jsonschema, record by record
    return validator


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flat_fast_path_gives_jsonschemas_verdicts(data):
    schema = data.draw(schemas())
    texts = data.draw(st.lists(record_texts(list(schema["properties"])), min_size=1, max_size=12))
    # Each record again later: the second time its strings are cached.
    texts = texts + data.draw(st.permutations(texts))
    fast, reference = RecordValidator(schema, "fast"), _reference(schema)
    assert fast._flat is not None
    for text in texts:
        record = parse_record(text.encode(), "record")
        assert (fast.errors(record) is None) == (reference.errors(record) is None), (schema, text)


def test_the_one_pass_answers_only_for_cached_strings_of_a_closed_object():
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[0-9]+$"},
                                               "b": {"type": "string"}},
              "required": ["a", "b"], "additionalProperties": False}
    fast = RecordValidator(schema, "fast")
    assert fast._flat is not None and fast._flat.closed_width == 2
    assert fast.errors({"a": "1", "b": "x"}) is None
    # Same width, a key that is no property; a cached value under another key;
    # an unhashable value; a number equal to nothing cached.
    assert fast.errors({"a": "1", "c": "x"}) is not None
    assert fast.errors({"b": "1", "a": "x"}) is not None
    assert fast.errors({"a": "1", "b": ["x"]}) is not None
    assert fast.errors({"a": 1, "b": "x"}) is not None
    assert fast.errors({"a": "1", "b": "x"}) is None
    open_schema = dict(schema, additionalProperties=True)
    assert RecordValidator(open_schema, "open")._flat.closed_width is None


def _plain(value):
    try:
        orjson.dumps(value)
        return True
    except TypeError:
        return False


def _row_by_row(records, validator, source, lineage):
    """The binary COPY rows as the format describes them, one at a time."""
    def field(data):
        return struct.pack("!i", len(data)) + data
    tail = b"".join(bronze._binary_value(c, lineage.get(c)) for c in bronze.COPY_COLUMNS[5:])
    out = [bronze.COPY_SIGNATURE]
    for number, record, raw in records:
        raw = raw if raw is not None else bronze.encode_record(record, number)
        errors = validator.errors(record)
        row = struct.pack("!h", len(bronze.COPY_COLUMNS)) + field(source.encode()) + field(b"\x01" + raw)
        row += field(struct.pack("!q", number))
        if errors is None:
            row += field(b"valid") + bronze.NULL_FIELD
        else:
            row += field(b"invalid") + field(b"\x01" + orjson.dumps(errors))
        out.append(row + tail)
    out.append(bronze.COPY_TRAILER)
    return b"".join(out)


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), big=st.integers(0, 3000))
def test_copy_stream_gives_the_rows_of_the_binary_format(data, big):
    schema = data.draw(schemas())
    texts = data.draw(st.lists(record_texts(list(schema["properties"])), min_size=0, max_size=8))
    # Rows past CHUNK_BYTES, so that a piece ends inside the records.
    texts += [json.dumps({"pad": "é" * 1000, "n": i}) for i in range(big // 10)]
    records = [(n, parse_record(t.encode(), "r"), t.encode()) for n, t in enumerate(texts, 1)]
    # Records read as values (CSV rows) come without their text: encoded here.
    records = [(n, value, None if n % 2 == 0 and _plain(value) else raw) for n, value, raw in records]
    lineage = {"pipeline_run_id": uuid.uuid4(), "event_id": uuid.uuid4(), "file_path": "a/é.jsonl",
               "file_size": 7}
    stats = bronze.LoadStats()
    stream = bronze.CopyStream(iter(records), RecordValidator(schema, "s"), "src", lineage, stats)
    pieces = []
    while piece := stream.read(data.draw(st.sampled_from([-1, 1, 1000, bronze.CHUNK_BYTES]))):
        pieces.append(piece)
    reference = RecordValidator(schema, "s")
    assert b"".join(pieces) == _row_by_row(records, reference, "src", lineage)
    verdicts = [reference.errors(r) is None for _, r, _ in records]
    assert (stats.rows_total, stats.rows_valid, stats.rows_invalid) == (
        len(records), sum(verdicts), len(records) - sum(verdicts))


def test_quality_of_valid_records_of_a_closed_schema_is_unchanged_by_the_shortcut():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
              "additionalProperties": False}
    quality = RunQuality(schema)
    quality.observe({"a": "x"}, None)
    assert quality.summary(1)["never_seen"] == ["b"]
    quality.observe({"a": "x", "b": "y"}, None)
    quality.observe({"c": 1}, [{"keyword": "additionalProperties", "pointer": "/"}])
    summary = quality.summary(3)
    assert summary["never_seen"] == [] and summary["undeclared_fields"] == ["c"]
    # Beside a "$ref" (drafts 4 to 7 ignore additionalProperties there), no shortcut.
    referring = RunQuality({**schema, "$ref": "#/definitions/x"})
    referring.observe({"a": "x", "b": "y"}, None)
    referring.observe({"z": 1}, None)
    assert referring.summary(2)["undeclared_fields"] == ["z"]
