"""The project's verdict on a record is jsonschema's, whatever the draft.

Generated schemas of every draft jsonschema knows (3, 4, 6, 7, 2019-09,
2020-12), named by every way of writing ``$schema`` (with or without "#",
http or https, an unknown URI), whose property names are keyword names
("pattern", "patternProperties", "$ref"...) and whose data (``enum``,
``const``, ``default``, ``examples``) looks like schemas: the verdict of
RecordValidator (compiled fast path or reference path, as the plan says)
equals that of jsonschema's validator for the draft
``jsonschema.validators.validator_for`` picks, formats asserted as ingestd
asserts them. Then the cases that were found, by hand.
"""
import json
import logging
import os
import warnings

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingestd.consumers.validation import RecordValidator
from ingestd.records.dialect import SchemaError, check_patterns, format_checker, use_ecma_patterns

# Generated schemas and records by the hundred: tens of seconds, out of the quick run.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))

D3 = "http://json-schema.org/draft-03/schema#"
D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D7 = "http://json-schema.org/draft-07/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"
D2020 = "https://json-schema.org/draft/2020-12/schema"
# How $schema is written in the wild: jsonschema knows some of these and
# reads the others (https for the old drafts, a trailing "#" on the new
# ones, a URI of one's own naming a draft) as draft 2020-12.
SPELLINGS = {
    3: [D3, D3.rstrip("#"), D3.replace("http:", "https:")],
    4: [D4, D4.rstrip("#"), D4.replace("http:", "https:"), "http://example.com/draft-04/custom"],
    6: [D6, D6.rstrip("#"), D6.replace("http:", "https:")],
    7: [D7, D7.rstrip("#"), D7.replace("http:", "https:"), "http://example.com/draft-07/schema#"],
    2019: [D2019, D2019 + "#"],
    2020: [D2020, D2020 + "#", None],
}

# Property names that are keyword names, so that a property is easily
# taken for a keyword (and the other way round).
NAMES = ["pattern", "patternProperties", "a", "$ref", "format", "items", "enum", "ingestd_pattern_0"]
PATTERNS = ["^a$", "^a", "b+", "^\\p{Lu}", "^[a-z]*$"]
STRINGS = ["", "a", "a\n", "A", "ab", "Éa", "b", "ingestd_pattern_0", "^a$", "2020-01-01"]

scalars = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, 3, 5, 5.5, 1.0, -2]), st.sampled_from(STRINGS))
instances = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(NAMES), children, max_size=3)),
    max_leaves=6,
)
numbers = st.sampled_from([0, 1, 3, 5, 5.5])


def schemas(draft: int):
    """Schemas of ``draft``'s keywords, with data that looks like schemas."""
    def build(children):
        # Data that is schema-like: a pattern in an enum is no pattern.
        data = st.one_of(scalars, st.dictionaries(st.sampled_from(["pattern", "patternProperties", "a"]),
                                                  st.one_of(st.sampled_from(PATTERNS + STRINGS),
                                                            st.dictionaries(st.sampled_from(PATTERNS), scalars,
                                                                            max_size=1)), max_size=2))
        keywords = {
            "type": st.sampled_from(["string", "integer", "number", "object", "array"]),
            "enum": st.lists(data, min_size=1, max_size=3),
            "default": data, "examples": st.lists(data, max_size=2),
            "minimum": numbers, "maximum": numbers,
            "minLength": st.integers(0, 2), "maxLength": st.integers(0, 2),
            "pattern": st.sampled_from(PATTERNS),
            "minItems": st.integers(0, 2), "maxItems": st.integers(0, 2),
            "items": st.one_of(children, st.lists(children, min_size=1, max_size=2)),
            "additionalItems": children,
            "properties": st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
            "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), children, max_size=2),
            "additionalProperties": children,
            "dependencies": st.dictionaries(st.sampled_from(NAMES), children, max_size=1),
            "$ref": st.sampled_from(["#", "#/definitions/d", "#/properties/pattern", "#/enum/0"]),
        }
        if draft in (3, 4):
            # a bound with its boolean exclusiveness (alone, it is no valid schema)
            keywords["minimum"] = st.fixed_dictionaries({"minimum": numbers, "exclusiveMinimum": st.booleans()})
            keywords["maximum"] = st.fixed_dictionaries({"maximum": numbers, "exclusiveMaximum": st.booleans()})
        if draft == 3:
            keywords["required"] = st.booleans()
            keywords["extends"] = children
            keywords["disallow"] = st.sampled_from(["string", "integer"])
        else:
            keywords.update({"required": st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
                             "allOf": st.lists(children, min_size=1, max_size=2),
                             "anyOf": st.lists(children, min_size=1, max_size=2), "not": children,
                             "minProperties": st.integers(0, 2)})
        if draft >= 6:
            keywords.update({"exclusiveMinimum": numbers, "exclusiveMaximum": numbers, "const": data,
                             "contains": children, "propertyNames": children})
        if draft >= 7:
            keywords.update({"if": children, "then": children, "else": children})
        if draft >= 2019:
            keywords.update({"$defs": st.dictionaries(st.just("d"), children, max_size=1),
                             "dependentSchemas": st.dictionaries(st.sampled_from(NAMES), children, max_size=1)})
            keywords["$ref"] = st.sampled_from(["#", "#/$defs/d", "#/properties/pattern", "#/enum/0"])
        def flat(schema):
            for name in ("minimum", "maximum"):
                if isinstance(schema.get(name), dict):
                    schema.update(schema.pop(name))
            return schema
        return st.lists(st.sampled_from(sorted(keywords)), max_size=4, unique=True).flatmap(
            lambda names: st.fixed_dictionaries({name: keywords[name] for name in names})).map(flat)

    leaf = st.one_of(st.just({}), st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "object"])}),
                     st.fixed_dictionaries({"pattern": st.sampled_from(PATTERNS)}))
    if draft >= 6:
        leaf = st.one_of(leaf, st.booleans())
    inner = st.recursive(leaf, build, max_leaves=6)

    @st.composite
    def root(draw):
        body = draw(inner)
        if isinstance(body, bool):
            body = {"not": {"not": body}} if draft != 3 else {}
        # Mostly an object with properties: the per-property fast path.
        if draw(st.booleans()):
            body = {"type": "object", "properties": draw(st.dictionaries(st.sampled_from(NAMES), inner,
                                                                         min_size=1, max_size=3))}
        spelling = draw(st.sampled_from(SPELLINGS[draft]))
        document = dict(body)
        if spelling is not None:
            document["$schema"] = spelling
        document.setdefault("definitions" if draft < 2019 else "$defs", {"d": draw(inner)})
        return document

    return root()


def jsonschemas_verdict(schema, instance):
    """jsonschema's own verdict: the class validator_for picks (2020-12 for
    an unknown or absent $schema), formats asserted as ingestd asserts them."""
    use_ecma_patterns()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=format_checker(cls)).is_valid(instance)


def agree(schema, records):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
        validator = RecordValidator(schema, "property")
    except (jsonschema.SchemaError, SchemaError):
        assume(False)
    for record in records:
        try:
            expected = jsonschemas_verdict(schema, record)
        except (RecursionError, jsonschema.exceptions._WrappedReferencingError, TypeError):
            validator.errors(record)  # no verdict from jsonschema: ours must still come, without an exception
            continue
        ours = validator.errors(record) is None
        assert ours == expected, (json.dumps(schema), record, validator.plan)


@pytest.fixture(autouse=True)
def quiet_reference_path_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="ingestd.consumers.validation")


@settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(SPELLINGS)).flatmap(schemas),
       st.lists(st.one_of(instances, st.dictionaries(st.sampled_from(NAMES), instances, min_size=1, max_size=3)),
                min_size=1, max_size=6))
def test_generated_schemas_of_every_draft_get_jsonschemas_verdicts(schema, records):
    agree(schema, records)


# -- found by review, by hand --------------------------------------------------

FOUND = [
    # draft-04 property subschemas were compiled without the root's $schema
    ({"$schema": D4, "type": "object", "properties": {"a": {"minimum": 5, "exclusiveMinimum": True}}},
     [{"a": 5.5}], [{"a": 5}]),
    ({"$schema": D4, "type": "object", "properties": {"a": {"items": [{"type": "string"}], "additionalItems": False}}},
     [{"a": ["x"]}], [{"a": ["x", 1]}, {"a": [1]}]),
    # draft-03 was read as 2020-12
    ({"$schema": D3, "minimum": 5, "exclusiveMinimum": True}, [6], [5]),
    ({"$schema": D3, "type": "object", "properties": {"a": {"type": "string", "required": True}}},
     [{"a": "x"}], [{}, {"a": 1}]),
    # $schema URIs jsonschema does not know are draft 2020-12 for it: so for ingestd
    ({"$schema": "https://json-schema.org/draft-04/schema#", "maximum": 5, "exclusiveMaximum": True}, [0.5], [3]),
    ({"$schema": "http://example.com/draft-04/custom", "maximum": 5, "exclusiveMaximum": True}, [0.5], [3]),
    ({"$schema": D7.rstrip("#"), "maximum": 5, "exclusiveMaximum": 5}, [3], [5]),
    # a property named like a keyword, and data that looks like a schema
    ({"minProperties": 0, "properties": {"patternProperties": {"type": "string"}}},
     [{"patternProperties": "x"}], [{"patternProperties": 1}]),
    ({"type": "object", "properties": {"pattern": {"type": "string", "pattern": "^a$"}}},
     [{"pattern": "a"}], [{"pattern": 1}, {"pattern": "a\n"}]),
    ({"enum": [{"pattern": "x"}]}, [{"pattern": "x"}], [{"pattern": "ingestd_pattern_0"}]),
    ({"const": {"patternProperties": {"^a": 1}}}, [{"patternProperties": {"^a": 1}}],
     [{"patternProperties": {"ingestd_pattern_0": 1}}]),
    # a $ref into data reads it as a schema: ECMA-262 there too ("$" only at the end)
    ({"minProperties": 0, "properties": {"x": {"$ref": "#/enum/0"}}, "enum": [{"pattern": "^a$"}, {"x": "a\n"}]},
     [], [{"x": "a\n"}]),
]


@pytest.mark.parametrize("schema,valid,invalid", FOUND, ids=[json.dumps(c[0])[:70] for c in FOUND])
def test_the_found_disagreements_now_agree(schema, valid, invalid):
    validator = RecordValidator(schema, "found")
    for record in valid:
        assert jsonschemas_verdict(schema, record), (schema, record)
        assert validator.errors(record) is None, (schema, record)
    for record in invalid:
        assert not jsonschemas_verdict(schema, record), (schema, record)
        assert validator.errors(record), (schema, record)


def test_draft3_is_validated_as_draft3_and_says_so():
    validator = RecordValidator({"$schema": D3, "properties": {"a": {"required": True}}}, "old")
    assert validator.plan.draft == "draft-03" and not validator.plan.fast
    assert "draft-03" in validator.plan.describe()
    assert validator.errors({}) and validator.errors({"a": 1}) is None


def test_only_patterns_in_schema_positions_are_checked():
    schema = {"properties": {"pattern": {"type": "string"}, "patternProperties": {"type": "object"}},
              "enum": [{"pattern": "(?P<x>a)"}], "default": {"patternProperties": {"(?P<y>": 1}},
              "examples": [{"pattern": "["}], "x-custom": {"pattern": "("}}
    assert check_patterns(schema) == []
    RecordValidator(schema, "data")
    # a pattern of a subschema, or one a $ref reads as a schema, is checked
    bad = {"properties": {"pattern": {"pattern": "(?P<x>a)"}}, "allOf": [{"$ref": "#/x-custom"}],
           "x-custom": {"pattern": "("}}
    assert [p.split(":")[0] for p in check_patterns(bad)] == ["/properties/pattern/pattern", "/x-custom/pattern"]


UNIQUE = [  # (array, unique as JSON Schema says)
    ([1, 1.0], False), ([1, True], True), ([0, False], True), ([None, False, 0, "", [], {}], True),
    ([{"a": 1}, {"a": 1.0}], False), ([{"a": 1}, {"a": True}], True), ([[1, [2]], [1.0, [2.0]]], False),
    ([[1], [True]], True), ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], False), (["1", 1], True),
    ([2**53 + 1, float(2**53)], True), ([10**300, 1e300], True), ([1.5, 1.5], False), (["True", True], True),
]


@pytest.mark.parametrize("array,unique", UNIQUE, ids=[json.dumps(a) for a, _ in UNIQUE])
@pytest.mark.parametrize("fast", [True, False])
def test_unique_items_verdicts_are_jsonschemas(array, unique, fast):
    schema = {"uniqueItems": True} if fast else {"uniqueItems": True, "multipleOf": 1}  # multipleOf: jsonschema
    validator = RecordValidator(schema, "unique")
    assert validator.plan.fast is fast
    assert (validator.errors(array) is None) is unique
    assert jsonschemas_verdict(schema, array) is unique


def test_unique_items_of_a_large_array_of_objects_costs_linear_time(monkeypatch):
    """jsonschema compared every pair of an array it cannot sort (objects,
    mixed types): a 16 MiB array of small objects took hours. The number
    of comparisons is counted, not the time."""
    import jsonschema._utils
    calls = []
    real_equal = jsonschema._utils.equal
    monkeypatch.setattr(jsonschema._utils, "equal", lambda a, b: calls.append(1) or real_equal(a, b))
    validator = RecordValidator({"uniqueItems": True, "multipleOf": 1}, "unique")  # the reference path
    array = [{"id": i} for i in range(5000)]
    assert validator.errors(array) is None
    assert validator.errors(array + [{"id": 4999.0}])[0]["keyword"] == "uniqueItems"
    assert len(calls) < 10 * len(array)


def test_a_nul_deep_in_a_json_record_is_refused_with_the_record_number():
    import io

    from ingestd.daemon.errors import PermanentError
    from ingestd.records.jsontext import read_json_records
    nested = b'{"a":' * 40 + b'"x\\u0000"' + b"}" * 40
    for document in (b'[{"x": 1}, ' + nested + b"]", b'[{"x": 1}, {"b": [' + nested + b"]}]"):
        with pytest.raises(PermanentError) as info:
            list(read_json_records(io.BytesIO(document), None, 1 << 20))
        failure = info.value.failure
        assert failure.reason == "load_error" and failure.detail["record"] == 2, failure
        assert "record 2" in failure.message and "/a/a/a" in failure.message
