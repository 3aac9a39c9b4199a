"""The compiled fast path: fastjsonschema where it gives jsonschema's verdicts.

A compiled validator (fastjsonschema, about 1-2 µs a record against
jsonschema's 25) answers instead of jsonschema only where it is proven to
give the same verdict: every keyword of the schema, through every subschema
and ``$ref``, is on the allow-list of its draft (``FAST_KEYWORDS``; the plan
of consumers/validation.py checks it). It reads the schema in ingestd's
dialect (records/dialect.py): ECMA-262 patterns, jsonschema's format checks,
a schema's numbers as written (``written_schema``); a record number whose
double is not its value (an ``ExactNumber``) refuses to be compared here,
and jsonschema judges its record. Flat object schemas are checked property
by property, with the verdicts on repeated strings cached
(``FlatObjectCheck``).
"""
from __future__ import annotations

import copy
import functools
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fastjsonschema
import jsonschema

from ingestd.records.dialect import DRAFTS, SchemaError, class_of, ecma_pattern, schema_positions
from ingestd.records.exactnumbers import COMPILED_MARK, ExactNumber

# Per-property verdict caches are dropped when they grow past this many
# entries (a column of unique values gains nothing from caching).
MAX_CACHED_VALUES = 50_000
# Strings longer than this are judged but not remembered: at any length the
# MAX_CACHED_VALUES strings of a property would be memory without bound (a
# compressed Parquet file of 21 KB held 200 MB of distinct strings of 200,000
# characters), and long values rarely repeat.
CACHED_LENGTH = 256

# Keywords that carry no verdict in any draft.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "readOnly", "writeOnly",
                         "deprecated", "$schema"})
# Keywords fastjsonschema (draft 4/6/7 semantics) implements with the same
# verdicts as jsonschema, where the draft means the same by them. Checked by
# differential tests (tests/test_validation_verdicts.py), which also found
# what is left out: multipleOf (jsonschema, as ingestd sets it up, divides
# the values as written; fastjsonschema divides doubles or decimals of
# them).
_COMMON = frozenset({
    "type", "enum", "maximum", "minimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxProperties", "minProperties", "required", "properties", "patternProperties",
    "additionalProperties", "allOf", "anyOf", "oneOf", "not", "items", "format", "$ref", "definitions",
})
FAST_KEYWORDS = {
    "draft-04": _COMMON | {"exclusiveMaximum", "exclusiveMinimum", "dependencies", "additionalItems"},
    "draft-06": _COMMON | {"exclusiveMaximum", "exclusiveMinimum", "dependencies", "additionalItems", "const",
                           "contains", "propertyNames"},
    "draft-07": _COMMON | {"exclusiveMaximum", "exclusiveMinimum", "dependencies", "additionalItems", "const",
                           "contains", "propertyNames", "if", "then", "else"},
    # 2019-09 and 2020-12 mean by these what draft 7 means; their own keywords
    # (unevaluated*, dependent*, prefixItems, min/maxContains, $anchor...) go
    # to jsonschema.
    "draft 2019-09": _COMMON | {"exclusiveMaximum", "exclusiveMinimum", "const", "contains", "propertyNames",
                                "if", "then", "else", "$defs"},
    "draft 2020-12": _COMMON | {"exclusiveMaximum", "exclusiveMinimum", "const", "contains", "propertyNames",
                                "if", "then", "else", "$defs"},
}


# Formats fastjsonschema checks with regexes of its own when it is given no
# check for them: those of its newest draft (2019-09, which it also uses for
# 2020-12 schemas) include those of its drafts 4, 6 and 7.
_FASTJSONSCHEMA_FORMATS = frozenset(getattr(fastjsonschema, "CodeGeneratorDraft2019",
                                            fastjsonschema.CodeGeneratorDraft07).FORMAT_REGEXS) | {"regex"}


def fast_formats(checker: jsonschema.FormatChecker | None) -> dict[str, Callable[[Any], bool]]:
    """jsonschema's own format checks, for the compiled validator: one
    meaning of every format on both paths. A format the checker lacks gets
    jsonschema's answer too (anything passes; an asserting source refuses
    such a schema at load), never fastjsonschema's own regex."""
    if checker is None:
        return {}

    def conforms(name: str) -> Callable[[Any], bool]:
        return lambda value: checker.conforms(value, name)
    return {name: conforms(name) for name in set(checker.checkers) | _FASTJSONSCHEMA_FORMATS}


# The dialect that makes fastjsonschema read a schema as jsonschema reads it
# (``validator_class``): fastjsonschema picks its draft from any "$schema" by
# substring and would read "https://json-schema.org/draft-04/schema" or a
# subschema compiled on its own under another draft. Its newest draft
# (2019-09) stands for 2020-12 too, for the keywords of FAST_KEYWORDS.
_FAST_DIALECT = {"draft-04": "http://json-schema.org/draft-04/schema#",
                 "draft-06": "http://json-schema.org/draft-06/schema#",
                 "draft-07": "http://json-schema.org/draft-07/schema#",
                 "draft 2019-09": "https://json-schema.org/draft/2019-09/schema",
                 "draft 2020-12": "https://json-schema.org/draft/2019-09/schema"}


def compile_fast(schema: Any, formats: dict[str, Callable[[Any], bool]], use_formats: bool,
                 cls: type | None = None) -> Callable[[Any], Any]:
    """fastjsonschema's validator for ``schema`` read as ``cls``'s draft (by
    default the schema's own), matching patterns as ECMA-262.

    fastjsonschema compiles patterns with Python's ``re`` while it generates
    code; the ``pattern`` and ``patternProperties`` keywords of the schema's
    subschemas (never data nor a property named "pattern") are given
    placeholders, and the compiled function's pattern table then gets the
    ECMA-262 patterns they stand for.
    """
    cls = cls or class_of(schema)
    real: dict[str, str] = {}

    def placeholder(pattern: str) -> str:
        name = f"ingestd_pattern_{len(real)}"
        real[name] = pattern
        return name

    document = copy.deepcopy(schema)
    for _, node in schema_positions(document, cls):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("pattern"), str):
            node["pattern"] = placeholder(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            node["patternProperties"] = {placeholder(k): v for k, v in node["patternProperties"].items()}
    if isinstance(document, dict):
        document["$schema"] = _FAST_DIALECT[DRAFTS.get(cls, "draft 2020-12")]
    function = fastjsonschema.compile(document, formats=formats, use_formats=use_formats, use_default=False)
    inner = getattr(function, "func", function)  # compile() binds its arguments with functools.partial
    namespace = getattr(inner, "__globals__", None)
    if not isinstance(namespace, dict):
        raise SchemaError("this fastjsonschema's validators keep no globals")
    # Its code compares doubles: a number whose double is not its value
    # (exactnumbers.ExactNumber) refuses to be compared there.
    namespace[COMPILED_MARK] = True
    if real:
        table = namespace.get("REGEX_PATTERNS")
        if not isinstance(table, dict):
            raise SchemaError("this fastjsonschema keeps no pattern table")
        for name, pattern in real.items():
            table[name] = ecma_pattern(pattern)
    return function


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_TWO_53 = 2**53


def written_schema(schema: Any, cls: type, as_integers: bool) -> Any:
    """``schema`` with the floats of its bounds, ``const`` and ``enum`` whose
    double is not the number written (1e308 is 10**308; the double is
    10**308 + 1.1e291) replaced by that number: for the compiled validator
    the integer (``as_integers``), for jsonschema an ``ExactNumber`` that
    prints as before. Python compares an integer of a record with a float by
    the double; below 2**53 the double and the shortest text agree, so
    only floats beyond it are replaced. The schema itself when there are none."""
    if not _big_floats(schema):
        return schema
    document = copy.deepcopy(schema)

    def written(value: Any) -> Any:
        if type(value) is float and math.isfinite(value) and abs(value) >= _TWO_53:
            exact = Decimal(repr(value))
            if Decimal(value) != exact:
                return int(exact) if as_integers else ExactNumber(exact, repr(value))
        if isinstance(value, list):
            return [written(v) for v in value]
        if isinstance(value, dict):
            return {k: written(v) for k, v in value.items()}
        return value

    for _, node in schema_positions(document, cls):
        if not isinstance(node, dict):
            continue
        for key in _BOUNDS + ("const", "enum"):
            if key in node and not isinstance(node[key], bool):
                node[key] = written(node[key])
    return document


def _big_floats(value: Any) -> bool:
    if type(value) is float:
        return abs(value) >= _TWO_53
    if isinstance(value, dict):
        return any(_big_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_big_floats(v) for v in value)
    return False


_contains = operator.contains
# Keywords of a property's subschema that carry no verdict with the compiled
# validator as it is set up here (defaults are not applied).
_NO_VERDICT = frozenset({"title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
                         "writeOnly"})


def _string_check(sub: Any) -> Callable[[Any], bool] | None:
    """For a subschema that says only ``type: string`` and perhaps a
    ``pattern``, the test fastjsonschema's code makes of it (``isinstance``,
    then the ECMA-262 pattern's ``search``), without a call into that code
    and an exception a failure; None for any other subschema."""
    if not isinstance(sub, Mapping) or sub.get("type") != "string" or set(sub) - {"type", "pattern"} - _NO_VERDICT:
        return None
    pattern = sub.get("pattern")
    if pattern is None and "pattern" not in sub:
        return lambda value: isinstance(value, str)
    if not isinstance(pattern, str):
        return None
    search = ecma_pattern(pattern).search
    return lambda value: isinstance(value, str) and bool(search(value))

# Top-level keywords the flat fast path understands exactly; any other makes
# validity depend on more than one property at a time.
_FLAT_KEYWORDS = {"$schema", "$id", "title", "description", "type", "properties", "required",
                  "additionalProperties", "$comment", "examples"}


@dataclass
class FlatObjectCheck:
    """Exact validity for schemas that constrain an object property by property.

    Tabular sources (CSV above all) repeat the same values over and over:
    dates, zeros, ids. When the schema is an object whose only constraints
    are ``required``, ``additionalProperties: false|true`` and one subschema
    per property, a record is valid iff its keys pass and each value passes
    its property's subschema, and that verdict is cached per string value.
    A closed object (every property required, no other allowed) whose values
    are all cached strings is found valid in one pass in C (about 0.8 µs for
    15 properties, against 2.5 µs property by property). Anything else falls
    back to the whole-record validator. (Records are parsed JSON: their
    strings are plain ``str``.)
    """

    required: frozenset[str]
    allowed: frozenset[str] | None
    # Per property, whether a value passes its subschema.
    checks: dict[str, Callable[[Any], bool]]
    # Strings already found valid, per property. Only ``str`` values are
    # remembered: a string never equals a value of another type, so a set
    # lookup cannot confuse "1" with 1 or True.
    valid_strings: dict[str, set[str]] = field(default_factory=dict)
    # The record's width when every property is required and no other is
    # allowed (a closed object, as tabular sources give): then a record of
    # that many keys, each a property, holds exactly the required ones.
    closed_width: int | None = None

    @classmethod
    def build(cls, schema: Any, formats: dict[str, Callable[[Any], bool]],
              use_formats: bool, draft: type | None = None) -> FlatObjectCheck | None:
        if not isinstance(schema, Mapping) or set(schema) - _FLAT_KEYWORDS or schema.get("type") != "object":
            return None
        additional = schema.get("additionalProperties", True)
        if not isinstance(additional, bool):
            return None
        properties = schema.get("properties", {})
        checks = {}
        for name, sub in properties.items():
            if not isinstance(sub, (Mapping, bool)) or "$ref" in str(sub):
                return None  # a reference may point at the root: not local
            # Compiled under the root's draft: a subschema alone has no "$schema".
            checks[name] = _string_check(sub) or functools.partial(
                cls._run, compile_fast(sub, formats, use_formats, draft or class_of(schema)))
        allowed = None if additional else frozenset(properties)
        required = frozenset(schema.get("required", ()))
        closed = len(required) if allowed is not None and required == allowed else None
        return cls(required, allowed, checks, {k: set() for k in checks}, closed)

    def is_valid(self, record: Any) -> bool:
        if type(record) is not dict:
            return False
        if len(record) == self.closed_width:
            # Every value a string already found valid for its property, in
            # one pass in C; a key that is no property (KeyError) or an
            # unhashable value (TypeError) says no, and the record is checked
            # property by property. A record of ``closed_width`` keys, each a
            # property, holds every required one.
            try:
                if all(map(_contains, map(self.valid_strings.__getitem__, record), record.values())):
                    return True
            except (KeyError, TypeError):
                pass
        keys = record.keys()
        if not self.required <= keys or (self.allowed is not None and not keys <= self.allowed):
            return False
        valid_strings = self.valid_strings
        for key, value in record.items():
            known = valid_strings.get(key)
            if known is None:
                continue  # no subschema for this property
            if type(value) is str and value in known:
                continue
            if not self.checks[key](value):
                return False
            if type(value) is str and len(value) <= CACHED_LENGTH:
                if len(known) >= MAX_CACHED_VALUES:
                    known.clear()
                known.add(value)
        return True

    @staticmethod
    def _run(check: Callable[[Any], Any], value: Any) -> bool:
        try:
            check(value)
            return True
        except fastjsonschema.JsonSchemaValueException:
            return False
