"""Validation verdicts exactly as jsonschema says, for draft 7 and 2020-12.

Differential tests: generated schemas and instances, the project's verdict
(compiled fast path, per-property cache, or reference path, as the schema
decides) against jsonschema's own. Then a hand-written case for every
keyword the compiled validator does not implement, patterns in the ECMA-262
flavour, and the two format modes. INGESTD_TEST_EXAMPLES sets how many
generated examples (150 by default).
"""
import json
import logging
import os

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingestd.consumers.compiled import FAST_KEYWORDS
from ingestd.consumers.validation import RecordValidator, plan_for
from ingestd.records.dialect import SchemaError, format_checker, use_ecma_patterns, validator_class

from .conftest import FITBIT, REPO

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"

KEYS = ["a", "b", "card", "billing", "Éa", "1"]
PATTERNS = ["^a", "^a$", "[0-9]", "^\\p{Letter}+$", "^\\p{Lu}", "^[a-z]*$", "\\d", "^.$", "b+"]
# Every format keyword of draft 7 and draft 2020-12 that is checked here
# (iri and iri-reference only with the optional rfc3987-syntax; without it a
# schema asserting them is refused: tests/test_formats.py, which also checks
# each format's verdicts by hand), and strings that are or are not each.
FORMATS = [name for name in ["date", "email", "ipv4", "uuid", "regex", "date-time", "time", "duration", "idn-email",
                             "hostname", "idn-hostname", "ipv6", "uri", "uri-reference", "iri", "iri-reference",
                             "uri-template", "json-pointer", "relative-json-pointer"]
           if name in format_checker(jsonschema.Draft202012Validator).checkers]
STRINGS = ["", "a", "a\n", "ab", "abc", "é", "É", "1", "12", "card", "2020-01-01", "2020-13-45", "2020-02-30",
           "x@y.com", "1.2.3.4", "256.1.1.1", "[", "^\\p{L}$", "(?P<x>a)", "123e4567-e89b-12d3-a456-426614174000",
           "2020-01-01T00:00:00Z", "2020-01-01T25:61:00Z", "12:30:00Z", "P3D", "PT", "example.com", "bücher.example",
           "::1", "https://例え.jp/é", "../a?b", "a b", "https://x/{id}", "{id", "/a/b", "/a~2", "0/a", "²2"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 3, 5, 10, 2**53 + 1, 10**30]),
    st.sampled_from([0.0, 1.0, 0.5, 0.3, 2.5, -1.5, 1e300, 3.0]),
    st.sampled_from(STRINGS),
)
instances = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(KEYS), children, max_size=4)),
    max_leaves=8,
)
numbers = st.sampled_from([0, 1, 2, 3, -1, 0.5, 2.5, 10])


DRAFT6 = "http://json-schema.org/draft-06/schema#"
DRAFT4 = "http://json-schema.org/draft-04/schema#"


def schemas(modern: bool, dialect: str | None = None):
    """Schemas over the keywords of draft 7 (or ``dialect``: draft 6, 4), and
    of 2020-12 when ``modern``."""
    def build(children):
        keywords = {
            "type": st.one_of(st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"]),
                              st.lists(st.sampled_from(["integer", "string", "null", "boolean"]), min_size=1,
                                       max_size=2, unique=True)),
            "enum": st.lists(scalars, min_size=1, max_size=3),
            "const": scalars,
            "minimum": numbers, "maximum": numbers, "exclusiveMinimum": numbers, "exclusiveMaximum": numbers,
            "multipleOf": st.sampled_from([1, 2, 3, 0.5, 0.1]),
            "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(PATTERNS),
            "format": st.sampled_from(FORMATS),
            "minItems": st.integers(0, 3), "maxItems": st.integers(0, 3), "uniqueItems": st.booleans(),
            "items": children,
            "contains": children,
            "properties": st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
            "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), children, max_size=2),
            "additionalProperties": children,
            "required": st.lists(st.sampled_from(KEYS), max_size=3, unique=True),
            "propertyNames": children,
            "minProperties": st.integers(0, 3), "maxProperties": st.integers(0, 3),
            "allOf": st.lists(children, min_size=1, max_size=2),
            "anyOf": st.lists(children, min_size=1, max_size=2),
            "oneOf": st.lists(children, min_size=1, max_size=2),
            "not": children, "if": children, "then": children, "else": children,
            "$ref": st.sampled_from(["#", "#/$defs/d" if modern else "#/definitions/d"]),
        }
        if modern:
            keywords.update({
                "prefixItems": st.lists(children, min_size=1, max_size=2),
                "unevaluatedProperties": children, "unevaluatedItems": children,
                "dependentSchemas": st.dictionaries(st.sampled_from(KEYS), children, max_size=2),
                "dependentRequired": st.dictionaries(st.sampled_from(KEYS),
                                                     st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
                                                     max_size=2),
                "minContains": st.integers(0, 2), "maxContains": st.integers(0, 2),
            })
        else:
            keywords.update({
                "items": st.one_of(children, st.lists(children, min_size=1, max_size=2)),
                "additionalItems": children,
                "dependencies": st.dictionaries(st.sampled_from(KEYS), st.one_of(
                    children, st.lists(st.sampled_from(KEYS), max_size=2, unique=True)), max_size=2),
            })
        if dialect in (DRAFT6, DRAFT4):
            for name in ("if", "then", "else"):
                del keywords[name]
        if dialect == DRAFT4:
            for name in ("const", "contains", "propertyNames"):
                del keywords[name]
            keywords["exclusiveMinimum"] = keywords["exclusiveMaximum"] = st.booleans()
        return st.one_of(st.booleans(), st.lists(st.sampled_from(sorted(keywords)), max_size=4, unique=True).flatmap(
            lambda names: st.fixed_dictionaries({name: keywords[name] for name in names})))

    leaf = st.one_of(st.booleans(), st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "object"])}))
    inner = st.recursive(leaf, build, max_leaves=6)

    @st.composite
    def root(draw):
        body = draw(inner)
        if isinstance(body, bool):
            body = {"allOf": [body]}
        document = {"$schema": DRAFT2020 if modern else dialect or DRAFT7, **body}
        document["$defs" if modern else "definitions"] = {"d": draw(inner)}
        return document

    return root()


def reference_is_valid(schema, instance, format_mode="assert") -> bool:
    use_ecma_patterns()
    cls = validator_class(schema)
    return cls(schema, format_checker=format_checker(cls) if format_mode == "assert" else None).is_valid(instance)


def verdicts_agree(schema, records, format_mode="assert"):
    cls = validator_class(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        assume(False)
    try:
        validator = RecordValidator(schema, "differential", format_mode)
    except SchemaError:
        assume(False)
    for record in records:  # one validator for all: the string cache carries over
        try:
            expected = reference_is_valid(schema, record, format_mode)
        except (RecursionError, TypeError):
            # jsonschema has no verdict (a schema referring to itself for
            # ever; its own TypeError on "items": false beside
            # "additionalItems"): ours must still come, without an exception.
            validator.errors(record)
            continue
        ours = validator.errors(record) is None
        assert ours == expected, (json.dumps(schema), record, validator.plan)


SETTINGS = settings(max_examples=EXAMPLES * 4, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def quiet_reference_path_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="ingestd.consumers.validation")


@SETTINGS
@given(schemas(modern=False), st.lists(instances, min_size=1, max_size=6), st.sampled_from(["assert", "annotate"]))
def test_draft7_verdicts_equal_jsonschemas(schema, records, format_mode):
    verdicts_agree(schema, records, format_mode)


@SETTINGS
@given(schemas(modern=True), st.lists(instances, min_size=1, max_size=6), st.sampled_from(["assert", "annotate"]))
def test_draft2020_verdicts_equal_jsonschemas(schema, records, format_mode):
    verdicts_agree(schema, records, format_mode)


@settings(SETTINGS, max_examples=EXAMPLES)
@given(st.sampled_from([DRAFT6, DRAFT4]).flatmap(lambda d: schemas(modern=False, dialect=d)),
       st.lists(instances, min_size=1, max_size=6))
def test_draft6_and_draft4_verdicts_equal_jsonschemas(schema, records):
    verdicts_agree(schema, records)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), st.fixed_dictionaries(
           {}, optional={"type": st.sampled_from(["string", "integer", "number"]), "pattern": st.sampled_from(PATTERNS),
                         "format": st.sampled_from(FORMATS), "maxLength": st.integers(0, 3),
                         "enum": st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3)}), max_size=4),
       st.lists(st.sampled_from(KEYS), max_size=3, unique=True), st.booleans(),
       st.lists(st.dictionaries(st.sampled_from(KEYS), st.one_of(st.sampled_from(STRINGS), scalars), max_size=4),
                min_size=1, max_size=12), st.sampled_from([None, DRAFT7, DRAFT2020]))
def test_flat_object_schemas_with_the_value_cache_equal_jsonschemas(properties, required, additional, records,
                                                                  dialect):
    """The per-property cache of tabular sources: repeated values, one validator."""
    schema = {"type": "object", "properties": properties, "required": required,
              "additionalProperties": additional}
    if dialect:
        schema["$schema"] = dialect
    verdicts_agree(schema, records)


NUMBERS = [0, 1, 2, 3, -1, 10, 2**53 + 1, 10**30, 0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 2.5, 3.3, -1.5, 1e300, 1e-300,
           True, False, None, "1"]


@SETTINGS
@given(st.fixed_dictionaries({}, optional={
           "type": st.sampled_from(["number", "integer", ["integer", "null"], ["number", "boolean"]]),
           "multipleOf": st.sampled_from([1, 2, 3, 0.5, 0.1, 0.3, 1e-5, 10**20]),
           "minimum": st.sampled_from(NUMBERS[:17]), "maximum": st.sampled_from(NUMBERS[:17]),
           "exclusiveMinimum": st.sampled_from(NUMBERS[:17]), "exclusiveMaximum": st.sampled_from(NUMBERS[:17]),
           "enum": st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3),
           "const": st.sampled_from(NUMBERS)}),
       st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=8), st.sampled_from([DRAFT7, DRAFT2020]))
def test_numeric_keywords_equal_jsonschemas(schema, records, dialect):
    verdicts_agree({"$schema": dialect, **schema}, records)


@SETTINGS
@given(st.fixed_dictionaries({}, optional={
           "type": st.sampled_from(["string", ["string", "null"]]), "pattern": st.sampled_from(PATTERNS),
           "format": st.sampled_from(FORMATS), "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
           "enum": st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3), "const": st.sampled_from(STRINGS)}),
       st.lists(st.sampled_from(STRINGS + [None, 1]), min_size=1, max_size=8), st.sampled_from([DRAFT7, DRAFT2020]),
       st.sampled_from(["assert", "annotate"]))
def test_string_keywords_equal_jsonschemas(schema, records, dialect, format_mode):
    verdicts_agree({"$schema": dialect, **schema}, records, format_mode)


# -- every keyword the compiled validator does not implement, by hand ---------

HAND_CASES = [
    # (schema, valid instances, invalid instances)
    ({"type": "object", "properties": {"id": {"type": "string"}}, "unevaluatedProperties": False},
     [{"id": "1"}], [{"id": "1", "extra": 2}]),
    ({"allOf": [{"properties": {"a": True}}], "unevaluatedProperties": False}, [{"a": 1}], [{"a": 1, "b": 2}]),
    ({"prefixItems": [{"type": "string"}], "unevaluatedItems": False}, [["x"]], [["x", 1]]),
    ({"prefixItems": [{"type": "integer"}, {"type": "string"}]}, [[1, "a"], [1]], [["a", 1]]),
    ({"prefixItems": [{"type": "integer"}], "items": False}, [[1]], [[1, 2]]),
    ({"dependentSchemas": {"card": {"required": ["billing"]}}}, [{"card": 1, "billing": 2}, {}], [{"card": 1}]),
    ({"dependentRequired": {"card": ["billing"]}}, [{"card": "x", "billing": "y"}], [{"card": "x"}]),
    ({"contains": {"type": "integer"}, "minContains": 2}, [[1, 2]], [[1, "a"]]),
    ({"contains": {"type": "integer"}, "maxContains": 1}, [[1, "a"]], [[1, 2]]),
    ({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "minLength": 2}, ["ab"], ["a", 5]),
    ({"properties": {"n": {"$ref": "#/$defs/n", "maximum": 3}}, "$defs": {"n": {"type": "integer"}}},
     [{"n": 2}], [{"n": 4}, {"n": "x"}]),
    ({"pattern": "^\\p{Letter}+$"}, ["abc", "Zoë", 5], ["abc1", ""]),
    ({"patternProperties": {"^\\p{Lu}": {"type": "integer"}}, "additionalProperties": False},
     [{"Éa": 1}], [{"éa": 1}, {"Éa": "x"}]),
    ({"pattern": "^a$"}, ["a"], ["a\n"]),  # ECMA-262: $ only at the very end
    ({"$schema": DRAFT7, "dependencies": {"card": ["billing"]}}, [{"card": 1, "billing": 1}], [{"card": 1}]),
    # multipleOf divides the numbers as written: 0.3 and 0.7 are multiples
    # of 0.1 (jsonschema alone, dividing doubles, would say they are not).
    ({"multipleOf": 0.1}, [0.5, 3, 0.3, 0.7], [0.33]),
    ({"enum": [[1], {"a": True}]}, [[1], {"a": True}], [[True], {"a": 1}]),
    ({"const": 1}, [1, 1.0], [True]),
    ({"const": False}, [False], [0]),
]


@pytest.mark.parametrize("schema,valid,invalid", HAND_CASES, ids=[json.dumps(c[0])[:60] for c in HAND_CASES])
def test_each_keyword_gives_jsonschemas_verdict(schema, valid, invalid):
    validator = RecordValidator(schema, "hand")
    for record in valid:
        assert validator.errors(record) is None, (schema, record)
        assert reference_is_valid(schema, record)
    for record in invalid:
        errors = validator.errors(record)
        assert errors, (schema, record)
        assert not reference_is_valid(schema, record)
        assert all({"pointer", "keyword", "message"} <= set(e) for e in errors)


def test_keywords_outside_the_allow_list_take_the_reference_path_and_say_why(caplog):
    from ingestd.consumers.validation import log_validation_plans
    from ingestd.daemon.config import SourceConfig
    caplog.set_level(logging.WARNING, logger="ingestd.consumers.validation")
    schema = {"type": "object", "unevaluatedProperties": False}
    validator = RecordValidator(schema, "orders")
    assert not validator.plan.fast
    assert "unevaluatedProperties" in validator.plan.describe()
    log_validation_plans([SourceConfig("orders", schema=schema), SourceConfig("plain", schema={"type": "object"}),
                          SourceConfig("none")])
    assert [(r.source, r.status) for r in caplog.records] == [("orders", "reference_path")]
    assert "unevaluatedProperties" in str(caplog.records[0].reasons)
    assert RecordValidator({"$schema": DRAFT7, "type": "object", "properties": {"a": {"type": "string"}}}).plan.fast


def test_a_pattern_that_is_not_ecma_262_is_refused_with_its_pointer():
    with pytest.raises(SchemaError) as info:
        RecordValidator({"properties": {"name": {"pattern": "(?P<first>a)"}}})
    assert "/properties/name/pattern" in str(info.value)


@pytest.mark.parametrize("mode,valid", [("assert", False), ("annotate", True)])
def test_format_asserts_or_annotates_as_configured(mode, valid):
    validator = RecordValidator({"type": "string", "format": "date"}, "dates", mode)
    assert (validator.errors("2020-13-45") is None) is valid
    assert validator.errors("2020-12-31") is None
    assert validator.plan.fast


def test_fitbit_schemas_keep_the_fast_path_and_agree_on_the_real_rows():
    from ingestd.records.formats import read_records
    for name, data in [("daily_activity", "dailyActivity_merged.csv"), ("sleep_day", "sleepDay_merged.csv"),
                       ("hourly_steps", "hourlySteps_merged.csv"),
                       ("heart_rate", "heartrate_seconds_merged_excerpt.csv")]:
        schema = json.loads((REPO / "schemas" / f"{name}.json").read_text())
        validator = RecordValidator(schema, name)
        assert validator.plan.fast and validator._flat is not None, name
        records = [value for value, _ in read_records(FITBIT / data, "csv", None)][:3000]
        broken = [dict(records[0], **{k: "x y" for k in list(records[0])[:1]}), {}, [1]]
        for record in records + broken:
            assert (validator.errors(record) is None) == reference_is_valid(schema, record), (name, record)


def test_draft7_allow_list_is_within_what_draft7_knows():
    draft7 = set(jsonschema.Draft7Validator.VALIDATORS) | {"definitions", "then", "else"}  # read by "if"
    assert FAST_KEYWORDS["draft-07"] <= draft7
    assert plan_for({"$schema": DRAFT7, "unevaluatedProperties": False}).fast is False


# -- through the config and the consumer ---------------------------------------

ORDERS_SCHEMA = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^\\p{Letter}+-[0-9]+$"},
                                                  "day": {"type": "string", "format": "date"}},
                 "required": ["id"], "unevaluatedProperties": False}


def orders_config(write_config, tmp_path, schema, extra=""):
    (tmp_path / "orders.json").write_text(json.dumps(schema))
    return write_config(sources=f'[[sources]]\nname = "orders"\nformat = "jsonl"\nschema = "{tmp_path / "orders.json"}"'
                                f'\nmax_invalid_ratio = 1.0\n{extra}\n')


@pytest.mark.integration
def test_records_load_with_jsonschemas_verdicts_and_check_says_which_path(write_config, tmp_path, db):
    import subprocess

    from ingestd.consumers.ingest import IngestContext, ingest_message
    from ingestd.daemon.broker import Publisher, Topology
    from ingestd.daemon.config import load_config

    from .conftest import drop_file, ingestd_cmd, query
    from .test_ingest import event_for

    path = orders_config(write_config, tmp_path, ORDERS_SCHEMA)
    config = load_config(path)
    lines = [{"id": "Zoë-1"}, {"id": "Zoë-2", "extra": 1}, {"id": "7-3"}, {"id": "ab-4", "day": "2020-13-45"},
             {"id": "ab-5", "day": "2020-12-31"}, {"id": "ab-6\n"}]
    drop_file(config.landing_dir, "orders/o.jsonl", "\n".join(json.dumps(x) for x in lines).encode())
    ctx = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), "t")
    try:
        outcome = ingest_message(ctx, event_for(config, "orders/o.jsonl").to_json())
    finally:
        ctx.close()
    assert (outcome.status, outcome.rows, outcome.rows_invalid) == ("success", 6, 4)
    rows = query(db, "SELECT record_number, validation_status, validation_errors FROM bronze.orders ORDER BY 1")
    assert [r[1] for r in rows] == ["valid", "invalid", "invalid", "invalid", "valid", "invalid"]
    assert {e["keyword"] for e in rows[1][2]} == {"unevaluatedProperties"}
    assert {e["keyword"] for e in rows[3][2]} == {"format"}
    check = subprocess.run(ingestd_cmd("--config", str(path), "check"), capture_output=True, text=True, timeout=120)
    assert "orders: draft 2020-12, format asserted (date), reference path (jsonschema): keyword " \
           "'unevaluatedProperties'" in check.stdout


def test_a_pattern_that_is_not_ecma_262_refuses_the_config_with_source_and_pointer(write_config, tmp_path):
    import subprocess

    from .conftest import ingestd_cmd
    schema = {"properties": {"name": {"pattern": "(?P<first>[a-z]+)"}}}
    path = orders_config(write_config, tmp_path, schema)
    check = subprocess.run(ingestd_cmd("--config", str(path), "check"), capture_output=True, text=True, timeout=60)
    assert check.returncode == 2
    assert "sources[orders].schema" in check.stderr and "/properties/name/pattern" in check.stderr
    assert "Traceback" not in check.stderr


def test_format_keyword_annotate_is_configurable_and_shown_by_check(write_config, tmp_path):
    import subprocess

    from ingestd.daemon.config import load_config

    from .conftest import ingestd_cmd
    path = orders_config(write_config, tmp_path, {"$schema": DRAFT7, "type": "object",
                                                  "properties": {"day": {"format": "date"}}},
                         extra='format_keyword = "annotate"')
    assert load_config(path).sources["orders"].format_keyword == "annotate"
    check = subprocess.run(ingestd_cmd("--config", str(path), "check"), capture_output=True, text=True, timeout=120)
    assert "orders: draft-07, format annotation only (date), fast path" in check.stdout
