"""Verdicts on numbers follow their value as written.

JSON Schema compares numbers by mathematical value: 1.0 is an integer,
1.0000000000000001 is not; 0.30000000000000001 is above a maximum of 0.3;
0.3 is a multiple of 0.1. Records read from JSON Lines, JSON arrays and
JSON documents (and Parquet rows) are validated on the exact value of each
number, on the compiled fast path as on jsonschema's. The properties
generate decimal texts near the boundaries of doubles (midpoints between
neighbours, one digit past the seventeenth, 2**53, the ends of the range)
and compare each verdict with one computed with ``fractions.Fraction`` on
the exact value.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
from decimal import Decimal, localcontext
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.validation import RecordValidator
from ingestd.records.exactnumbers import ExactNumber
from ingestd.records.format_json import read_json
from ingestd.records.format_jsonl import read_jsonl
from ingestd.records.formats import read_records
from ingestd.records.jsonrecord import parse_record

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
# A keyword the compiled validator does not take: the schema goes to jsonschema.
REFERENCE = {"dependentRequired": {}}
BIG = "1" + "0" * 308  # 10**308 as written


def validator(schema: dict, fast: bool) -> RecordValidator:
    checked = RecordValidator(schema if fast else {**schema, **REFERENCE}, "exact")
    assert checked.plan is not None and checked.plan.fast is (fast and "multipleOf" not in json.dumps(schema))
    return checked


def records(number_text: str, form: str) -> list:
    """The record ``{"n": <number_text>}`` as a reader gives it from a file of ``form``."""
    record = '{"n": ' + number_text + "}"
    if form == "jsonl":
        found = read_jsonl(io.BufferedReader(io.BytesIO(record.encode() + b"\n")))
    elif form == "array":
        found = read_json(io.BufferedReader(io.BytesIO(("[" + record + ", " + record + "]").encode())))
    elif form == "nested":  # not the flat fast scan: the bracket scanner
        found = read_json(io.BufferedReader(io.BytesIO(('{"data": [' + record + "]}").encode())), "data")
    else:
        found = read_json(io.BufferedReader(io.BytesIO(record.encode())))
    return [value for value, _ in found]


FORMS = ["jsonl", "array", "nested", "document"]

# (schema of "n", number as written, valid as JSON Schema says)
CASES = [
    ({"type": "integer"}, "1.0000000000000001", False),
    ({"type": "integer"}, "1.0", True),
    ({"type": "integer"}, "1e2", True),
    ({"type": "integer"}, "9007199254740993.5", False),
    ({"type": "integer"}, "9" * 5000, True),
    ({"type": "integer"}, "9" * 5000 + ".5", False),
    ({"maximum": 0.3}, "0.30000000000000001", False),
    ({"maximum": 0.3}, "0.29999999999999999", True),
    ({"exclusiveMaximum": 0.3}, "0.29999999999999999", True),
    ({"minimum": 0.3}, "0.29999999999999999", False),
    ({"exclusiveMinimum": 0.3}, "0.30000000000000001", True),
    ({"const": 0.3}, "0.30000000000000001", False),
    ({"enum": [0.3, 1]}, "0.30000000000000001", False),
    ({"enum": [0.3, 1]}, "0.300", True),
    ({"const": 1}, "1.0000000000000001", False),
    ({"const": 100000000000000000000000}, "1e23", True),
    ({"const": 1e23}, "100000000000000000000000", True),
    ({"const": 1e23}, "99999999999999991611392", False),  # the double nearest 1e23, not 1e23
    ({"maximum": 1e308}, BIG, True),
    ({"maximum": 1e308}, BIG[:-1] + "1", False),
    ({"maximum": 1e308}, "9" * 5000 + ".5", False),
    ({"minimum": -1e308}, "-" + "9" * 5000 + ".5", False),
    ({"maximum": 9.223372036854776e18}, "9223372036854775900", True),  # 2**63 is the double; 9223372036854776000 written
    ({"exclusiveMinimum": 0}, "1e-400", True),
    ({"maximum": 0}, "1e-400", False),
    ({"const": 0}, "1e-400", False),
    ({"multipleOf": 0.1}, "0.3", True),
    ({"multipleOf": 0.01}, "1.15", True),
    ({"multipleOf": 0.01}, "0.07", True),
    ({"multipleOf": 0.01}, "1.155", False),
    ({"multipleOf": 0.01}, "0.30000000000000001", False),
    ({"multipleOf": 3}, "1e23", False),
    ({"multipleOf": 1e-8}, "12391239123", True),
    ({"multipleOf": 0.123456789}, "1e308", False),
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("schema,text,valid", CASES, ids=[f"{json.dumps(s)} {t[:24]}" for s, t, _ in CASES])
def test_verdicts_follow_the_value_as_written(schema, text, valid, form, fast):
    checked = validator({"properties": {"n": schema}}, fast)
    for record in records(text, form):
        errors = checked.errors(record)
        assert (errors is None) is valid, (schema, text, errors)


UNIQUE = [  # (the array as written, unique as JSON Schema says)
    ("[1e23, 100000000000000000000000]", False),
    ("[0.30000000000000001, 0.3]", True),
    ("[0.30000000000000001, 0.300000000000000010]", False),
    ("[1.0000000000000001, 1]", True),
    ("[1e-400, 0]", True),
    ("[0.1000000000000000055511151231257827021181583404541015625, 0.1]", True),  # 0.1's double, written out, is not 0.1
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("array,unique", UNIQUE, ids=[a[:40] for a, _ in UNIQUE])
def test_unique_items_compare_the_values_as_written(array, unique, fast):
    checked = validator({"properties": {"n": {"uniqueItems": True}}}, fast)
    for record in records(array, "jsonl") + records(array, "array"):
        assert (checked.errors(record) is None) is unique, array


def test_the_readers_give_json_documents_and_json_lines_from_files_the_same_verdicts(tmp_path):
    lines = ['{"n": 0.30000000000000001}', '{"n": 0.3}', '{"n": 1.0000000000000001}', '{"n": 2.0}']
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "r.json").write_text("[" + ",\n".join(lines) + "]")
    checked = RecordValidator({"properties": {"n": {"anyOf": [{"type": "integer"}, {"maximum": 0.3}]}}}, "files")
    assert checked.plan is not None and checked.plan.fast
    for name, fmt in (("r.jsonl", "jsonl"), ("r.json", "json")):
        verdicts = [checked.errors(value) is None for value, _ in read_records(tmp_path / name, fmt, None)]
        assert verdicts == [False, True, False, True], (name, verdicts)
        texts = [text.strip().rstrip(b",").decode() for _, text in read_records(tmp_path / name, fmt, None)]
        assert texts == lines  # bronze keeps the text as written


def test_parquet_doubles_past_2_53_are_the_numbers_their_text_says(tmp_path):
    """Parquet floats are written as the shortest text of the double
    ("1e+23"): that text is the value validated, as stored in bronze."""
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": pa.array([1e23, 0.1, 2.0**60], pa.float64()),
                             "y": pa.array([3.4028234663852886e38, 0.1, 1.0], pa.float32())}), path)
    rows = list(read_records(path, "parquet", None))
    assert [text for _, text in rows][0].startswith(b'{"x":1e+23,')
    exact = RecordValidator({"properties": {"x": {"enum": [100000000000000000000000, 0.1, 1152921504606847000]},
                                            "y": {"enum": [340282350000000000000000000000000000000, 0.1, 1]}}},
                            "parquet")
    assert [exact.errors(value) for value, _ in rows] == [None, None, None]


def test_the_value_of_a_number_is_a_float_where_its_double_is_its_value():
    """The fast path stays fast: the usual numbers are plain floats. The
    others are the double a JSON parser gives, printed as written, except
    while they are validated."""
    value = parse_record(b'{"a": 1.23, "b": 0.5, "c": 1e-05, "d": 1234567.891, "e": 0.30000000000000001}', "x")
    assert [type(value[k]) for k in "abcd"] == [float] * 4
    exact = value["e"]
    assert type(exact) is ExactNumber and repr(exact) == "0.30000000000000001"
    assert exact == 0.3 == json.loads("0.30000000000000001") and hash(exact) == hash(0.3) and not exact > 0.3
    assert pickle.loads(pickle.dumps(exact)).exact == Decimal("0.30000000000000001")
    for fast in (True, False):
        for schema, valid in (({"const": 0.3}, False), ({"exclusiveMinimum": 0.3}, True), ({"type": "number"}, True)):
            checked = validator({"properties": {"e": schema}}, fast)
            assert (checked.errors(value) is None) is valid, (schema, fast)
    assert exact == 0.3  # as it was: validating changes nothing


# -- properties: decimal texts near the boundaries of doubles -------------------

SPECIAL = [0.0, 0.1, 0.3, 1.0, 1.15, 0.01, 2.0**53, 2.0**53 - 1, 2.0**63, 1e15, 1e16, 1e22, 1e23, 1e308,
           1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 123456789.123456789]
doubles = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=False, allow_infinity=False),
                    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))


def exact(value: float) -> Decimal:
    return Decimal(value)


@st.composite
def written_numbers(draw) -> tuple[str, Fraction]:
    """A JSON number's text near a double, and its exact value."""
    double = abs(draw(doubles))
    kind = draw(st.sampled_from(["shortest", "binary", "midpoint", "nudged", "whole", "padded"]))
    with localcontext() as context:
        context.prec = 2000
        if kind == "shortest":
            value = Decimal(repr(double))
        elif kind == "binary":
            value = exact(double)
        elif kind == "midpoint":
            above = math.nextafter(double, math.inf)
            upper = exact(above) if math.isfinite(above) else exact(double) + Decimal(2) ** 971  # past the range
            value = (exact(double) + upper) / 2
        elif kind == "nudged":
            base = Decimal(repr(double))
            step = Decimal(1).scaleb(base.adjusted() - draw(st.integers(15, 22)))
            value = base + step * draw(st.sampled_from([-1, 1]))
        elif kind == "whole":
            value = Decimal(int(double)) + draw(st.integers(-2, 2)) if double < 1e300 else exact(double)
        else:
            value = Decimal(repr(double)) * draw(st.sampled_from([1, 10, Decimal("0.1")]))
    if value.is_zero() or draw(st.booleans()):
        value = abs(value)
    elif draw(st.booleans()):
        value = -value
    if kind == "whole" and value == value.to_integral_value():
        text = str(int(value))
    elif draw(st.booleans()) and abs(value.adjusted()) < 400:
        text = format(value, "f")
    else:
        text = str(value)
    if text.endswith(".") or text in ("-0", "-0.0"):
        text = text.rstrip(".") or "0"
    json.loads(text)  # a JSON number
    return text, Fraction(value)


bounds = st.one_of(doubles, st.sampled_from([0, 1, 3, 2**53, 2**53 + 1, 10**23, 10**308 + 1]))


def value_of(bound) -> Fraction:
    return Fraction(Decimal(repr(bound))) if isinstance(bound, float) else Fraction(bound)


def expected(keyword: str, bound, value: Fraction) -> bool:
    b = value_of(bound)
    if keyword == "multipleOf":
        return (value / b).denominator == 1
    return {"minimum": value >= b, "maximum": value <= b, "exclusiveMinimum": value > b,
            "exclusiveMaximum": value < b, "const": value == b, "enum": value == b}[keyword]


_VALIDATORS: dict[str, RecordValidator] = {}


def cached(schema: dict, fast: bool) -> RecordValidator:
    key = json.dumps([schema, fast], default=repr)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = RecordValidator(schema if fast else {**schema, **REFERENCE}, "property")
    return _VALIDATORS[key]


PROPERTY = settings(max_examples=EXAMPLES * 2, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(written_numbers(), st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "const",
                                           "enum", "multipleOf"]),
       st.one_of(bounds, st.just("near")), st.sampled_from(FORMS), st.booleans(), st.data())
def test_numeric_keywords_judge_the_exact_value(number, keyword, bound, form, fast, data):
    text, value = number
    if bound == "near":  # the double next to the number, or the integer: where doubles mislead
        near = float(Fraction(value)) if abs(value) < 10**308 else 1e308
        bound = data.draw(st.sampled_from([near, math.nextafter(near, math.inf), math.nextafter(near, -math.inf),
                                           int(value)]))
        if isinstance(bound, float) and not math.isfinite(bound):
            bound = 1e308
    if keyword == "multipleOf":
        bound = abs(bound) or 0.5
        if value_of(bound) < Fraction(1, 10**30) or value_of(bound) > 10**300:
            bound = 0.01  # keep the quotient's digits reasonable
    schema = {"properties": {"n": {keyword: [bound] if keyword == "enum" else bound}}}
    checked = cached(schema, fast)
    for record in records(text, form):
        assert (checked.errors(record) is None) is expected(keyword, bound, value), (schema, text)


@PROPERTY
@given(written_numbers(), st.booleans(), st.sampled_from(["jsonl", "array"]))
def test_integer_and_number_types_judge_the_exact_value(number, fast, form):
    text, value = number
    for kind, valid in (("integer", value.denominator == 1), ("number", True)):
        checked = cached({"properties": {"n": {"type": kind}}}, fast)
        for record in records(text, form):
            assert (checked.errors(record) is None) is valid, (kind, text)


@PROPERTY
@given(written_numbers(), st.one_of(written_numbers(), st.just(None)), st.booleans())
def test_unique_items_judge_the_exact_values(first, second, fast):
    if second is None:  # the same value written another way
        text, value = first
        with localcontext(prec=5000):
            second = (str(Decimal(text).normalize()) if "." in text or "e" in text.lower() else text + ".0", value)
    checked = cached({"properties": {"n": {"uniqueItems": True}}}, fast)
    for record in records(f"[{first[0]}, {second[0]}]", "jsonl"):
        assert (checked.errors(record) is None) is (first[1] != second[1]), (first[0], second[0])


@PROPERTY
@given(written_numbers())
def test_a_number_is_a_plain_float_exactly_when_its_double_stands_for_it(number):
    text, value = number
    parsed = parse_record(('{"n": ' + text + "}").encode(), "x")["n"]
    if isinstance(parsed, int):
        assert value.denominator == 1 and parsed == value
    elif type(parsed) is float:
        assert Fraction(Decimal(repr(parsed))) == value  # the shortest text of its double is the value
        assert abs(parsed) < 2**53 or Fraction(parsed) == value
    else:
        assert type(parsed) is ExactNumber and Fraction(parsed.exact) == value
        assert float(parsed) == float(Decimal(text))  # as arithmetic: the nearest double
    double = float(Decimal(text))
    if value.denominator != 1 and abs(double) < 2**53 and Fraction(Decimal(repr(double))) == value:
        assert type(parsed) is float  # the usual case stays a plain float (the fast path)


@settings(PROPERTY)
@given(st.lists(st.one_of(doubles, st.floats(min_value=-1e30, max_value=1e30)), min_size=1, max_size=8),
       st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 1}]))
def test_floats_written_as_the_shortest_text_of_their_double_stay_floats(floats, layout):
    """What Python, JavaScript and orjson write (repr): no exact reading
    needed below 1e16; beyond, the double is not what "1e+23" says."""
    text = json.dumps({"n": floats, "s": "a b", "m": {"x": floats[0]}}, **layout).encode()
    value = parse_record(text, "x")
    for double, parsed in zip(floats, value["n"]):
        assert parsed == double
        big = abs(double) >= 1e16 and Decimal(double) != Decimal(repr(double))
        assert type(parsed) is (ExactNumber if big else float), (double, type(parsed))
