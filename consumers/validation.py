"""Per-record validation against a source's JSON Schema.

Verdicts are jsonschema's (the reference implementation), for every draft it
knows; a schema without ``$schema`` is draft 2020-12. Two choices are made
explicit, the same on every path:

* ``pattern`` and ``patternProperties`` are ECMA-262 regular expressions in
  Unicode mode, as the specification asks (``\\p{Letter}``, ``$`` only at the
  end), matched by the ``regress`` library. A pattern that does not compile
  refuses the source's config at start (``check_patterns``).
* ``format`` asserts (the default: a data pipeline wants ``"date"`` checked)
  or only annotates, per source (``format_keyword``).

A compiled validator (fastjsonschema, about 1-2 µs a record against
jsonschema's 25) answers instead of jsonschema only where it is proven to
give the same verdict: every keyword of the schema, through every subschema
and ``$ref``, is on the allow-list of its draft (``FAST_KEYWORDS``). Any
other schema is validated by jsonschema record by record, and one log line
at start says which source and why. Only invalid records are then explained
by jsonschema (JSON pointer, keyword, message).
"""
from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema._keywords
import jsonschema._utils
import regress

log = logging.getLogger(__name__)

MAX_ERRORS_PER_RECORD = 10
# Per-property verdict caches are dropped when they grow past this many
# entries (a column of unique values gains nothing from caching).
MAX_CACHED_VALUES = 50_000

DRAFTS = {
    jsonschema.Draft4Validator: "draft-04",
    jsonschema.Draft6Validator: "draft-06",
    jsonschema.Draft7Validator: "draft-07",
    jsonschema.Draft201909Validator: "draft 2019-09",
    jsonschema.Draft202012Validator: "draft 2020-12",
}
# Keywords that carry no verdict in any draft.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "readOnly", "writeOnly",
                         "deprecated", "$schema"})
# Keywords fastjsonschema (draft 4/6/7 semantics) implements with the same
# verdicts as jsonschema, where the draft means the same by them. Checked by
# differential tests (tests/test_validation_verdicts.py), which also found
# what is left out: multipleOf (jsonschema divides doubles, so 0.3 is no
# multiple of 0.1 for it, and takes float remainders of large numbers;
# fastjsonschema computes in decimals).
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
# Keywords whose value is a subschema, a list of them, or a map of them.
_SUBSCHEMA = {"additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if", "then", "else",
              "items", "unevaluatedProperties", "unevaluatedItems", "contentSchema"}
_SUBSCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_SUBSCHEMA_MAP = {"properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"}


class SchemaError(Exception):
    """A schema the validator cannot use (a pattern that does not compile)."""


# -- ECMA-262 patterns ----------------------------------------------------

class EcmaPattern:
    """A compiled ECMA-262 (Unicode mode) regular expression with the
    ``search`` method the validators call."""

    __slots__ = ("pattern", "_regex")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            self._regex = regress.Regex(pattern, flags="u")
        except regress.RegressError as exc:
            raise re.error(f"not an ECMA-262 regular expression: {exc}") from None

    def search(self, text: str, *_: Any) -> Any:
        return self._regex.find(text)


@lru_cache(maxsize=4096)
def ecma_pattern(pattern: str) -> EcmaPattern:
    return EcmaPattern(pattern)


class _EcmaRe:
    """Stands in for the ``re`` module inside jsonschema's keyword functions,
    which call ``re.search(pattern, text)`` for ``pattern``,
    ``patternProperties`` and the properties that ``additionalProperties``
    and ``unevaluatedProperties`` see; everything else is ``re``'s."""

    error = re.error

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def search(pattern: str, text: str, flags: int = 0) -> Any:
        return ecma_pattern(pattern).search(text)


def use_ecma_patterns() -> None:
    """Make jsonschema match patterns as ECMA-262 (idempotent). Refuses to
    start if jsonschema's internals moved, rather than validate silently with
    another regex flavour."""
    for module in (jsonschema._keywords, jsonschema._utils):
        current = getattr(module, "re", None)
        if current is None:
            raise RuntimeError(f"{module.__name__} no longer uses re: ingestd cannot give it ECMA-262 patterns; "
                               "pin jsonschema to a version this ingestd supports")
        if not isinstance(current, _EcmaRe):
            module.re = _EcmaRe()


def _is_ecma_regex(instance: object) -> bool:
    if isinstance(instance, str):
        ecma_pattern(instance)
    return True


def check_patterns(schema: Any) -> list[str]:
    """Every pattern of ``schema`` that is not an ECMA-262 regular
    expression, as ``"<pointer>: <reason>"``."""
    problems = []
    for pointer, pattern in _patterns(schema, ""):
        try:
            ecma_pattern(pattern)
        except re.error as exc:
            problems.append(f"{pointer}: {pattern!r} is {exc}")
    return problems


def _patterns(node: Any, pointer: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{pointer}/{_escape(key)}"
            if key == "pattern" and isinstance(value, str):
                yield here, value
            elif key == "patternProperties" and isinstance(value, dict):
                for name in value:
                    yield f"{here}/{_escape(name)}", name
            yield from _patterns(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _patterns(value, f"{pointer}/{index}")


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


# -- which path -------------------------------------------------------------

@dataclass(frozen=True)
class ValidationPlan:
    """How a source's records are validated: the draft, whether the compiled
    fast path is exact for this schema, and if not, why."""

    draft: str
    fast: bool
    slow_reasons: tuple[str, ...] = ()
    format_mode: str = "assert"

    def describe(self) -> str:
        path = "fast path (compiled, exact for this schema)" if self.fast else (
            "reference path (jsonschema): " + "; ".join(self.slow_reasons[:5])
            + (f"; and {len(self.slow_reasons) - 5} more" if len(self.slow_reasons) > 5 else ""))
        return f"{self.draft}, format {'asserted' if self.format_mode == 'assert' else 'annotation only'}, {path}"


def validator_class(schema: Mapping[str, Any]) -> type:
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def plan_for(schema: Any, format_mode: str = "assert") -> ValidationPlan:
    draft = DRAFTS.get(validator_class(schema) if isinstance(schema, Mapping) else jsonschema.Draft202012Validator,
                       "draft 2020-12")
    reasons = list(_slow_reasons(schema, draft))
    return ValidationPlan(draft, not reasons, tuple(dict.fromkeys(reasons)), format_mode)


def _slow_reasons(schema: Any, draft: str) -> Iterator[str]:
    allowed = FAST_KEYWORDS.get(draft, frozenset()) | ANNOTATIONS
    if draft not in FAST_KEYWORDS:
        yield f"{draft} has no compiled validator"
        return
    modern = draft in ("draft 2019-09", "draft 2020-12")
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            yield f"a subschema that is not an object at {pointer or '/'}"
            continue
        for key, value in node.items():
            where = f"{pointer}/{_escape(key)}"
            if key == "$id" and pointer == "":
                continue
            if key not in allowed:
                yield f"keyword {key!r} at {where}"
                continue
            if key == "$ref":
                if not isinstance(value, str) or not value.startswith("#"):
                    yield f"a $ref that is not local at {where}"
                elif modern and set(node) - ANNOTATIONS - {"$ref"}:
                    yield f"$ref beside other keywords at {pointer or '/'}"
            elif key == "items" and modern and isinstance(value, list):
                yield f"'items' as an array at {where}"
            if key in _SUBSCHEMA and isinstance(value, (dict, bool)):
                stack.append((value, where))
            if key in _SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((sub, f"{where}/{i}") for i, sub in enumerate(value))
            if key in _SUBSCHEMA_MAP and isinstance(value, dict):
                stack.extend((sub, f"{where}/{_escape(k)}") for k, sub in value.items()
                             if isinstance(sub, (dict, bool)))


def log_validation_plans(sources) -> None:
    """One line at start for each source whose schema jsonschema validates
    record by record, with why (the compiled path cannot honour it)."""
    for source in sources:
        if source.schema is None:
            continue
        plan = plan_for(source.schema, source.format_keyword)
        if not plan.fast:
            log.warning("schema validated by jsonschema record by record (slower)", extra={
                "source": source.name, "step": "validate", "status": "reference_path", "draft": plan.draft,
                "reasons": list(plan.slow_reasons[:10])})


# -- the validator ----------------------------------------------------------

def format_checker(cls: Any) -> jsonschema.FormatChecker:
    """The draft's format checker (``cls``: a jsonschema validator class),
    with ``regex`` meaning ECMA-262."""
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    checker.checks("regex", raises=re.error)(_is_ecma_regex)
    return checker


def _fast_formats(checker: jsonschema.FormatChecker | None) -> dict[str, Callable[[Any], bool]]:
    """jsonschema's own format checks, for the compiled validator: one
    meaning of every format on both paths."""
    if checker is None:
        return {}

    def conforms(name: str) -> Callable[[Any], bool]:
        return lambda value: checker.conforms(value, name)
    return {name: conforms(name) for name in checker.checkers}


def compile_fast(schema: Any, formats: dict[str, Callable[[Any], bool]], use_formats: bool) -> Callable[[Any], Any]:
    """fastjsonschema's validator for ``schema``, matching patterns as ECMA-262.

    fastjsonschema compiles patterns with Python's ``re`` while it generates
    code; it is given placeholders, and the compiled function's pattern table
    then gets the ECMA-262 patterns they stand for.
    """
    real: dict[str, str] = {}

    def placeholder(pattern: str) -> str:
        name = f"ingestd_pattern_{len(real)}"
        real[name] = pattern
        return name

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    out[key] = placeholder(value)
                elif key == "patternProperties" and isinstance(value, dict):
                    out[key] = {placeholder(k): swap(v) for k, v in value.items()}
                else:
                    out[key] = swap(value)
            return out
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    function = fastjsonschema.compile(swap(copy.deepcopy(schema)), formats=formats, use_formats=use_formats,
                                      use_default=False)
    if real:
        inner = getattr(function, "func", function)  # compile() binds its arguments with functools.partial
        table = getattr(inner, "__globals__", {}).get("REGEX_PATTERNS")
        if not isinstance(table, dict):
            raise SchemaError("this fastjsonschema keeps no pattern table")
        for name, pattern in real.items():
            table[name] = ecma_pattern(pattern)
    return function


class RecordValidator:
    """Validates records against one schema; build once per source."""

    def __init__(self, schema: Mapping[str, Any] | bool | None, source: str = "",
                 format_mode: str = "assert") -> None:
        self.schema = schema
        self.source = source
        self._fast: Callable[[Any], Any] | None = None
        self._flat: _FlatObjectCheck | None = None
        self._reference: Any = None
        self.plan: ValidationPlan | None = None
        if schema is None:
            return
        use_ecma_patterns()
        problems = check_patterns(schema)
        if problems:
            raise SchemaError("; ".join(problems))
        cls = validator_class(schema) if isinstance(schema, Mapping) else jsonschema.Draft202012Validator
        checker = format_checker(cls) if format_mode == "assert" else None
        self._reference = cls(schema, format_checker=checker)
        self.plan = plan_for(schema, format_mode)
        if self.plan.fast:
            formats = _fast_formats(checker)
            try:
                self._fast = compile_fast(schema, formats, checker is not None)
                self._flat = _FlatObjectCheck.build(schema, formats, checker is not None)
            except Exception as exc:  # noqa: BLE001 - any compile failure means "use the reference path"
                self._fast = self._flat = None
                self.plan = ValidationPlan(self.plan.draft, False, (f"fastjsonschema cannot compile it: {exc}",),
                                           format_mode)

    def errors(self, record: Any) -> list[dict[str, str]] | None:
        """None when ``record`` is valid, else its errors (at most 10)."""
        if self._reference is None:
            return None
        try:
            if self._flat is not None:
                if self._flat.is_valid(record):
                    return None
            elif self._fast is not None:
                try:
                    self._fast(record)
                    return None
                except fastjsonschema.JsonSchemaValueException:
                    pass
        except RecursionError:
            pass  # a schema that refers to itself without end: the reference says what it can
        found = []
        try:
            for error in self._reference.iter_errors(record):
                found.append({
                    "pointer": "/" + "/".join(_escape(p) for p in error.absolute_path),
                    "keyword": str(error.validator),
                    "message": error.message[:500],
                })
                if len(found) >= MAX_ERRORS_PER_RECORD:
                    break
        except Exception as exc:  # noqa: BLE001 - a validator fault must not stop the load
            # jsonschema itself failed on this record (a schema it cannot
            # evaluate for it): never called valid without a verdict.
            return [{"pointer": "/", "keyword": "$schema",
                     "message": f"the schema cannot be evaluated for this record ({type(exc).__name__}: {exc})"[:500]}]
        # The fast path is exact where used: a disagreement is the reference's call.
        return found or None


# Top-level keywords the flat fast path understands exactly; any other makes
# validity depend on more than one property at a time.
_FLAT_KEYWORDS = {"$schema", "$id", "title", "description", "type", "properties", "required",
                  "additionalProperties", "$comment", "examples"}


@dataclass
class _FlatObjectCheck:
    """Exact validity for schemas that constrain an object property by property.

    Tabular sources (CSV above all) repeat the same values over and over:
    dates, zeros, ids. When the schema is an object whose only constraints
    are ``required``, ``additionalProperties: false|true`` and one subschema
    per property, a record is valid iff its keys pass and each value passes
    its property's subschema, and that verdict is cached per string value.
    Anything else falls back to the whole-record validator.
    """

    required: frozenset[str]
    allowed: frozenset[str] | None
    checks: dict[str, Callable[[Any], Any]]
    # Strings already found valid, per property. Only ``str`` values are
    # remembered: a string never equals a value of another type, so a set
    # lookup cannot confuse "1" with 1 or True.
    valid_strings: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, schema: Any, formats: dict[str, Callable[[Any], bool]],
              use_formats: bool) -> _FlatObjectCheck | None:
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
            checks[name] = compile_fast(sub, formats, use_formats)
        allowed = None if additional else frozenset(properties)
        return cls(frozenset(schema.get("required", ())), allowed, checks, {k: set() for k in checks})

    def is_valid(self, record: Any) -> bool:
        if type(record) is not dict:
            return False
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
            if not self._run(self.checks[key], value):
                return False
            if type(value) is str:
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
