"""Per-record validation against a source's JSON Schema.

Verdicts are jsonschema's (the reference implementation), for every draft it
knows; a schema without ``$schema`` is draft 2020-12. Two choices are made
explicit, the same on every path:

* ``pattern`` and ``patternProperties`` are ECMA-262 regular expressions in
  Unicode mode, as the specification asks (``\\p{Letter}``, ``$`` only at the
  end), matched by the ``regress`` library. A pattern that does not compile
  refuses the source's config at start (``check_patterns``).
* ``format`` asserts (the default: a data pipeline wants ``"date"`` checked)
  or only annotates, per source (``format_keyword``). Asserted, every format
  of the schema is really checked, with jsonschema's check on both paths: a
  format it cannot check (an unknown name, or a check whose package is not
  installed) refuses the source's config (``unassertable_formats``).

Numbers are judged by their value as written (JSON Schema compares numbers
by mathematical value): a record's numbers come from records/jsontext.py
as ``int``, a ``float`` whose double is the value written, or an
``ExactNumber`` (0.30000000000000001, 1e23), which jsonschema's path
compares by its exact decimal and which sends its record to that path; a
schema's floats stand for their shortest text (``"maximum": 1e308`` is
10**308, not the double next to it). ``multipleOf`` divides the values as
written (0.3 is a multiple of 0.1, 1.15 of 0.01); ``type``, bounds,
``const``, ``enum`` and ``uniqueItems`` compare exactly.

A compiled validator (fastjsonschema, about 1-2 µs a record against
jsonschema's 25) answers instead of jsonschema only where it is proven to
give the same verdict: every keyword of the schema, through every subschema
and ``$ref``, is on the allow-list of its draft (``FAST_KEYWORDS``). Any
other schema is validated by jsonschema record by record, and one log line
at start says which source and why. Only invalid records are then explained
by jsonschema (JSON pointer, keyword, message).
"""
from __future__ import annotations

import calendar
import copy
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from fractions import Fraction
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import fastjsonschema
import jsonschema
import jsonschema._format
import jsonschema._keywords
import jsonschema._utils
import regress

from ingestd.records.jsontext import AS_DOUBLE, COMPILED_MARK, EXACT, ExactNumber, comparisons, written_value

log = logging.getLogger(__name__)

MAX_ERRORS_PER_RECORD = 10
# Per-property verdict caches are dropped when they grow past this many
# entries (a column of unique values gains nothing from caching).
MAX_CACHED_VALUES = 50_000

DRAFTS = {
    jsonschema.Draft3Validator: "draft-03",
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
# Keywords whose value is a map of subschemas (``_formats`` walks their values).
_SUBSCHEMA_MAP = {"properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"}


# What jsonschema needs installed to check each format; without it, it
# passes anything. All are dependencies of ingestd (setup.cfg) but
# rfc3987-syntax (``_NOT_A_DEPENDENCY``). The other formats (date, email,
# idn-email, ipv4, ipv6, regex, uuid) need nothing.
FORMAT_PACKAGES = {"date-time": "rfc3339-validator", "time": "rfc3339-validator", "duration": "isoduration",
                   "hostname": "fqdn", "idn-hostname": "idna", "uri": "rfc3986-validator",
                   "uri-reference": "rfc3986-validator", "iri": "rfc3987-syntax", "iri-reference": "rfc3987-syntax",
                   "uri-template": "uri-template", "json-pointer": "jsonpointer",
                   "relative-json-pointer": "jsonpointer"}
_NOT_A_DEPENDENCY = {"rfc3987-syntax": "not installed with ingestd: it adds 1.5 s to every start and checks "
                                       "about 100 values a second"}
# Keywords whose value is data (or names), never a subschema.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "required", "dependentRequired", "$comment",
                            "title", "description", "$id", "$schema", "$anchor", "$vocabulary"})


class SchemaError(Exception):
    """A schema the validator cannot use (a pattern that does not compile, a
    format that cannot be asserted)."""


# -- ECMA-262 patterns ----------------------------------------------------

MAX_PATTERN_CHARS = 4096


class EcmaPattern:
    """A compiled ECMA-262 (Unicode mode) regular expression with the
    ``search`` method the validators call."""

    __slots__ = ("pattern", "_regex")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        if len(pattern) > MAX_PATTERN_CHARS:
            # regress compiles in time quadratic in a pattern's alternatives and
            # overflows its stack (the process dies) from about 80,000 of them:
            # a value of format "regex" in a record, or a schema's pattern,
            # longer than this is refused before regress sees it.
            raise re.error(f"longer than {MAX_PATTERN_CHARS} characters, which ingestd does not compile")
        try:
            self._regex = regress.Regex(pattern, flags="u")
        except regress.RegressError as exc:
            raise re.error(f"not an ECMA-262 regular expression: {exc}") from None

    def search(self, text: str, *_: Any) -> Any:
        try:
            return self._regex.find(text)
        except UnicodeEncodeError:
            # A lone surrogate (a message's "\ud800", a non-UTF-8 file name) is no Unicode text and
            # regress takes UTF-8 only: it is matched as U+FFFD, the character that stands for it.
            return self._regex.find(_LONE_SURROGATE.sub("\ufffd", text))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """Make jsonschema match patterns as ECMA-262, check uniqueItems in
    linear time and multipleOf on the values as written (idempotent).
    Refuses to start if jsonschema's internals moved, rather than validate
    silently with another regex flavour."""
    for module in (jsonschema._keywords, jsonschema._utils):
        current = getattr(module, "re", None)
        if current is None:
            raise RuntimeError(f"{module.__name__} no longer uses re: ingestd cannot give it ECMA-262 patterns; "
                               "pin jsonschema to a version this ingestd supports")
        if not isinstance(current, _EcmaRe):
            module.re = _EcmaRe()
    # uniqueItems in linear time (jsonschema compares every pair of an array
    # it cannot sort: a 16 MiB array of objects took hours), same verdict.
    if getattr(jsonschema._keywords, "uniq", None) is None:
        raise RuntimeError("jsonschema._keywords no longer uses uniq: ingestd cannot bound uniqueItems; "
                           "pin jsonschema to a version this ingestd supports")
    jsonschema._keywords.uniq = unique_items
    # multipleOf (divisibleBy in draft 3) divides the values as written:
    # jsonschema divides doubles (0.3 is no multiple of 0.1 for it, nor 1.15
    # of 0.01).
    for cls in DRAFTS:
        for keyword, function in list(cls.VALIDATORS.items()):
            if function is _JSONSCHEMA_MULTIPLE_OF:
                cls.VALIDATORS[keyword] = multiple_of


_JSONSCHEMA_MULTIPLE_OF = jsonschema._keywords.multipleOf


def multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's multipleOf on the values as written: the quotient of the
    two exact values is an integer."""
    if not validator.is_type(instance, "number"):
        return
    verdict = is_multiple(instance, divisor)
    if verdict is None:  # not a positive finite divisor, or NaN: jsonschema's own answer
        yield from _JSONSCHEMA_MULTIPLE_OF(validator, divisor, instance, schema)
    elif not verdict:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor}")


def is_multiple(instance: Any, divisor: Any) -> bool | None:
    """Whether ``instance`` is an integer multiple of ``divisor``, both as
    written (``written_value``); None when either is no finite number or the
    divisor is not positive."""
    if type(instance) is int and type(divisor) is int and divisor > 0:
        return instance % divisor == 0
    value_decimal, step_decimal = _decimal(instance), _decimal(divisor)
    if value_decimal is not None and step_decimal is not None:
        if step_decimal <= 0:
            return None
        # The exact remainder, in time about linear in the digits written:
        # Fractions of 1e131000 and 1e-300 (nine bytes of a record) cost
        # 10 ms a number, and hours for a record of them.
        try:
            with localcontext(_EXACT_DIVISION):
                return value_decimal % step_decimal == 0
        except ArithmeticError:
            pass  # no exact remainder in the context's range: the Fractions say
    value, step = _fraction(instance), _fraction(divisor)
    if value is None or step is None or step <= 0:
        return None
    return (value / step).denominator == 1


# Enough digits for any quotient of two numbers written in a record or a
# schema (a record's are within PostgreSQL numeric's range), so that the
# remainder is exact; its traps raise rather than round.
_EXACT_DIVISION = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN,
                          traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded])


def _decimal(number: Any) -> Decimal | None:
    """A finite number as written, as a decimal; None for anything else
    (booleans, NaN, infinities, what is no number)."""
    if isinstance(number, bool):
        return None
    if type(number) is ExactNumber:
        return number.exact
    exact = getattr(number, "exact", None)
    if isinstance(number, int) and isinstance(exact, Decimal):
        return exact  # a WholeNumber: its decimal as read
    if isinstance(number, int):
        return Decimal(number)
    if isinstance(number, float) and math.isfinite(number):
        return Decimal(repr(number))
    return None


def _fraction(number: Any) -> Fraction | None:
    if isinstance(number, bool):
        return None
    value = written_value(number)
    if value is None or value is NotImplemented or (isinstance(value, Decimal) and not value.is_finite()):
        return None
    return Fraction(value)


def unique_items(array: Any) -> bool:
    """Whether no two items of ``array`` are equal as JSON Schema says
    (``1 == 1.0``, ``true != 1``, objects by their members, arrays item by
    item), by hashing each item's canonical form: linear time."""
    seen: set[Any] = set()
    for item in array:
        key = _canonical(item)
        if key in seen:
            return False
        seen.add(key)
    return True


def _canonical(value: Any) -> Any:
    if value is True or value is False:
        return ("boolean", value)
    if isinstance(value, str):
        return ("string", value)
    if type(value) is ExactNumber:
        # Its exact value: whole, the decimal, which equals and hashes like
        # the integer it is (1e23 is 10**23) without building that integer
        # (1e131000 is nine bytes of a record, and its int took a second to
        # make); else a decimal apart, which no float of a record equals (a
        # float stands for its shortest text, never an ExactNumber's value).
        return ("number", value.exact) if value.is_integer() else ("decimal", value.exact)
    if isinstance(value, float) and value.is_integer():
        # 1.0 is 1; a float past 2**53 is its double (the readers give 1e300
        # as an ExactNumber, which is 10**300)
        return ("number", int(value))
    if isinstance(value, (int, float)):
        return ("number", value)
    if value is None:
        return ("null",)
    if isinstance(value, Mapping):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canonical(v) for v in value))
    return ("other", id(value))  # no JSON value: equal only to itself


def _is_ecma_regex(instance: object) -> bool:
    if isinstance(instance, str):
        ecma_pattern(instance)
    return True


def check_patterns(schema: Any, cls: type | None = None) -> list[str]:
    """Every pattern of ``schema`` that is not an ECMA-262 regular
    expression, as ``"<pointer>: <reason>"``: the ``pattern`` and
    ``patternProperties`` keywords of its subschemas (``cls``'s draft, by
    default the schema's own), never data (``enum``, ``const``, ``default``)
    nor a property that happens to be named "pattern"."""
    problems = []
    for pointer, pattern in _patterns(schema, cls or _class_of(schema)):
        try:
            ecma_pattern(pattern)
        except re.error as exc:
            problems.append(f"{pointer}: {pattern!r} is {exc}")
    return problems


def _patterns(schema: Any, cls: type) -> Iterator[tuple[str, str]]:
    for path, node in schema_positions(schema, cls, follow_refs=True):
        if not isinstance(node, dict):
            continue
        here = "".join(f"/{_escape(p)}" for p in path)
        if isinstance(node.get("pattern"), str):
            yield f"{here}/pattern", node["pattern"]
        if isinstance(node.get("patternProperties"), dict):
            for name in node["patternProperties"]:
                yield f"{here}/patternProperties/{_escape(name)}", name


# Where a keyword's value is a subschema, a list of them, or a map of them
# (each only where the draft knows the keyword); ``definitions`` and
# ``$defs`` hold subschemas by convention in every draft ($ref targets).
_ONE_SCHEMA = frozenset({"additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if",
                         "then", "else", "items", "unevaluatedProperties", "unevaluatedItems", "extends"})
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items", "extends"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "dependencies", "dependentSchemas"})
_CONTAINERS = frozenset({"definitions", "$defs"})


def _class_of(schema: Any) -> type:
    return validator_class(schema) if isinstance(schema, Mapping) else jsonschema.Draft202012Validator


def schema_positions(schema: Any, cls: type, follow_refs: bool = False) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, node) of every subschema of ``schema`` read as ``cls``'s draft
    reads it: the root and the values of that draft's applicator keywords,
    recursively; with ``follow_refs``, also what a local JSON-pointer
    ``$ref`` points at wherever that is. Data (``enum``, ``const``,
    ``default``, ``examples``), property names and unknown keywords are no
    subschemas."""
    keywords = set(getattr(cls, "VALIDATORS", ())) | _CONTAINERS
    if "if" in keywords:
        keywords |= {"then", "else"}
    draft3 = "disallow" in keywords  # draft 3: "type" and "disallow" may list schemas
    found: list[tuple[tuple[Any, ...], Any]] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[Any, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if id(node) in seen:
                continue
            seen.add(id(node))
        found.append((path, node))
        if not isinstance(node, dict):
            continue
        children: list[tuple[tuple[Any, ...], Any]] = []
        for key, value in node.items():
            if key not in keywords:
                continue
            here = path + (key,)
            if key in _SCHEMA_MAP | _CONTAINERS and isinstance(value, dict):
                children.extend((here + (name,), sub) for name, sub in value.items() if isinstance(sub, (dict, bool)))
            elif key in _ONE_SCHEMA and isinstance(value, (dict, bool)):
                children.append((here, value))
            elif (key in _SCHEMA_LIST or (draft3 and key in ("type", "disallow"))) and isinstance(value, list):
                children.extend((here + (i,), sub) for i, sub in enumerate(value) if isinstance(sub, (dict, bool)))
        if follow_refs and isinstance(node.get("$ref"), str):
            target = _local_target(schema, node["$ref"])
            if target is not None:
                children.append(target)
        stack.extend(reversed(children))  # in document order
    return found


def _local_target(root: Any, ref: str) -> tuple[tuple[Any, ...], Any] | None:
    """(path, node) a local JSON-pointer ``$ref`` ("#", "#/a/0") points at
    in ``root``; None for any other reference or a pointer to nothing."""
    if ref == "#":
        return (), root
    if not ref.startswith("#/"):
        return None
    node: Any = root
    path: list[str | int] = []
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
            path.append(token)
        elif isinstance(node, list) and token.isdigit() and token.isascii() and int(token) < len(node) \
                and (token == "0" or not token.startswith("0")):
            node = node[int(token)]
            path.append(int(token))
        else:
            return None
    return (tuple(path), node) if isinstance(node, (dict, bool)) else None


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
    formats: tuple[str, ...] = ()  # the format names the schema uses

    def describe(self) -> str:
        path = "fast path (compiled, exact for this schema)" if self.fast else (
            "reference path (jsonschema): " + "; ".join(self.slow_reasons[:5])
            + (f"; and {len(self.slow_reasons) - 5} more" if len(self.slow_reasons) > 5 else ""))
        mode = "asserted" if self.format_mode == "assert" else "annotation only"
        return f"{self.draft}, format {mode} ({', '.join(self.formats) or 'none in the schema'}), {path}"


def validator_class(schema: Mapping[str, Any]) -> type:
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def plan_for(schema: Any, format_mode: str = "assert") -> ValidationPlan:
    cls = _class_of(schema)
    draft = DRAFTS.get(cls, "draft 2020-12")
    reasons = list(_slow_reasons(schema, draft, cls))
    formats = tuple(sorted({name for _, name in _formats(schema)}))
    return ValidationPlan(draft, not reasons, tuple(dict.fromkeys(reasons)), format_mode, formats)


def _slow_reasons(schema: Any, draft: str, cls: type) -> Iterator[str]:
    if draft not in FAST_KEYWORDS:
        yield f"{draft} has no compiled validator"
        return
    allowed = FAST_KEYWORDS[draft] | ANNOTATIONS
    modern = draft in ("draft 2019-09", "draft 2020-12")
    positions = schema_positions(schema, cls)
    paths = {path for path, _ in positions}
    for path, node in positions:
        pointer = "".join(f"/{_escape(p)}" for p in path)
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
                target = _local_target(schema, value) if isinstance(value, str) else None
                if target is None:
                    yield f"a $ref that is not a local JSON pointer to a subschema at {where}"
                elif target[0] not in paths:
                    # e.g. "#/enum/0": data read as a schema, which the compiled validator would read otherwise
                    yield f"a $ref to something that is not a subschema at {where}"
                elif modern and set(node) - ANNOTATIONS - {"$ref"}:
                    yield f"$ref beside other keywords at {pointer or '/'}"
            elif key == "items" and modern and isinstance(value, list):
                yield f"'items' as an array at {where}"


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
    with ``regex`` meaning ECMA-262. It holds jsonschema's checks of every
    format whose package is installed; a later draft's formats (``uuid``,
    ``duration``) are checked in an older draft's schema too. A check that
    raises on a value finds it not of the format (jsonschema would raise:
    ``"²2"`` as a relative-json-pointer), on both paths alike."""
    checks: dict[str, Callable[[Any], bool]] = {}
    for source in (jsonschema.Draft202012Validator, cls):
        for name, (check, _) in source.FORMAT_CHECKER.checkers.items():
            checks[name] = _EXACT_CHECKS.get(check, check)
    checker = jsonschema.FormatChecker(formats=())
    for name, check in checks.items():
        if name in _NO_BLANKS:
            check = _without_blanks(check)
        elif name in ("email", "idn-email"):
            check = _mailbox_blanks(check)
        checker.checks(name, raises=Exception)(check)
    checker.checks("regex", raises=re.error)(_is_ecma_regex)
    return checker


# -- where ingestd's format checks are stricter than jsonschema's -------------
#
# jsonschema's checks of date-time, time, hostname, uri and uri-reference
# match with Python's "$", which also matches before a final "\n": they
# took "2020-01-01T00:00:00Z\n" for a date-time; its uri-template check takes
# any blank. None of these formats' grammars (RFC 3339, 1123, 3986, 3987,
# 4122, 4291, 5890, 6570, ISO 8601 durations) has a space or a control
# character anywhere, so a value with one is none of them. json-pointer,
# relative-json-pointer and regex may hold any character and keep
# jsonschema's checks.
_NO_BLANKS = frozenset({"date-time", "date", "time", "duration", "ipv4", "ipv6", "uuid", "hostname", "idn-hostname",
                        "uri", "uri-reference", "iri", "iri-reference", "uri-template", "host-name", "ip-address"})
_BLANK_OR_CONTROL = re.compile("[\x00-\x20\x7f-\x9f]")


def _without_blanks(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def conforms(value: Any) -> bool:
        return not (isinstance(value, str) and _BLANK_OR_CONTROL.search(value)) and check(value)
    return conforms


def _mailbox_blanks(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """jsonschema's email check (an "@") without what no RFC 5321/6531
    mailbox holds: a control character anywhere, a space outside a quoted
    local part ("a b"@example.com has one; a@example.com\n is none)."""
    def conforms(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if _CONTROL.search(value):
            return False
        local, _, domain = value.rpartition("@")
        quoted = len(local) >= 2 and local[0] == local[-1] == '"'
        return not (" " in domain or (" " in local and not quoted)) and check(value)
    return conforms


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# RFC 3339 (5.6) date-time, whole: "t" and "z" in either case, a leap second
# (second 60) where it can be (5.7): at 23:59:60 UTC, whatever the offset
# ("1990-12-31T15:59:60-08:00"). jsonschema's check (rfc3339-validator)
# refuses every leap second.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
                      re.ASCII)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    sign, offset_hour, offset_minute = match.group(7), int(match.group(8) or 0), int(match.group(9) or 0)
    if not (year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return False  # year 0 as jsonschema's check says (no proleptic year 0 in Python either)
    if hour > 23 or minute > 59 or second > 60 or offset_hour > 23 or offset_minute > 59:
        return False
    if second == 60:
        offset = (offset_hour * 60 + offset_minute) * (-1 if sign == "-" else 1)
        return (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59
    return True


def _is_time(value: Any) -> bool:
    return _is_datetime("1970-01-01T" + value) if isinstance(value, str) else True


_EXACT_CHECKS: dict[Any, Callable[[Any], bool]] = {}
for _name, _exact in (("is_datetime", _is_datetime), ("is_time", _is_time)):
    if hasattr(jsonschema._format, _name):  # absent without rfc3339-validator: the format is then refused
        _EXACT_CHECKS[getattr(jsonschema._format, _name)] = _exact


def unassertable_formats(schema: Any, format_mode: str = "assert",
                         checker: jsonschema.FormatChecker | None = None) -> list[str]:
    """Why each format of ``schema`` cannot be asserted, with what to do:
    a name the checker does not know (an unknown format, or one whose
    package is missing) would pass anything. Nothing under "annotate"."""
    if format_mode != "assert":
        return []
    if checker is None:
        checker = format_checker(validator_class(schema) if isinstance(schema, Mapping)
                                 else jsonschema.Draft202012Validator)
    where: dict[str, list[str]] = {}
    for pointer, name in _formats(schema):
        if name not in checker.checkers:
            where.setdefault(name, []).append(pointer)
    problems = []
    for name, pointers in where.items():
        at = ", ".join(pointers[:3]) + (f" and {len(pointers) - 3} more" if len(pointers) > 3 else "")
        package = FORMAT_PACKAGES.get(name)
        if package:
            why = (f"cannot be checked: its check needs the package {package} (pip install {package}; "
                   f"{_NOT_A_DEPENDENCY.get(package, 'a dependency of ingestd: reinstall ingestd')})")
        else:
            why = f"is not a format ingestd can check (it checks {', '.join(sorted(checker.checkers))})"
        problems.append(f"format {json.dumps(name)} at {at} {why}; or set format_keyword = \"annotate\" "
                        "for this source to keep it as an annotation only")
    return problems


def _formats(schema: Any) -> Iterator[tuple[str, str]]:
    """(pointer, name) of every ``format`` keyword of ``schema``: in every
    subschema, and in any object a ``$ref`` could reach, but not in data
    (``enum``, ``const``, ``default``, ``examples``)."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, pointer = stack.pop()
        children: list[tuple[Any, str]] = []
        if isinstance(node, list):
            children = [(sub, f"{pointer}/{i}") for i, sub in enumerate(node)]
        elif isinstance(node, dict):
            if isinstance(node.get("format"), str):
                yield f"{pointer}/format", node["format"]
            for key, value in node.items():
                where = f"{pointer}/{_escape(key)}"
                if key in _SUBSCHEMA_MAP and isinstance(value, dict):
                    children.extend((sub, f"{where}/{_escape(k)}") for k, sub in value.items())
                elif key not in _DATA_KEYWORDS and isinstance(value, (dict, list)):
                    children.append((value, where))
        stack.extend(reversed(children))  # in document order


# Formats fastjsonschema checks with regexes of its own when it is given no
# check for them: those of its newest draft (2019-09, which it also uses for
# 2020-12 schemas) include those of its drafts 4, 6 and 7.
_FASTJSONSCHEMA_FORMATS = frozenset(getattr(fastjsonschema, "CodeGeneratorDraft2019",
                                            fastjsonschema.CodeGeneratorDraft07).FORMAT_REGEXS) | {"regex"}


def _fast_formats(checker: jsonschema.FormatChecker | None) -> dict[str, Callable[[Any], bool]]:
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
    cls = cls or _class_of(schema)
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
    # (jsontext.ExactNumber) refuses to be compared there.
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
        cls = _class_of(schema)
        problems = check_patterns(schema, cls)
        checker = format_checker(cls) if format_mode == "assert" else None
        problems += unassertable_formats(schema, format_mode, checker)
        if problems:
            raise SchemaError("; ".join(problems))
        self._reference = cls(written_schema(schema, cls, as_integers=False), format_checker=checker)
        self.plan = plan_for(schema, format_mode)
        if self.plan.fast:
            formats = _fast_formats(checker)
            compiled = written_schema(schema, cls, as_integers=True)
            try:
                self._fast = compile_fast(compiled, formats, checker is not None, cls)
                self._flat = _FlatObjectCheck.build(compiled, formats, checker is not None, cls)
            except Exception as exc:  # noqa: BLE001 - any compile failure means "use the reference path"
                self._fast = self._flat = None
                self.plan = ValidationPlan(self.plan.draft, False, (f"fastjsonschema cannot compile it: {exc}",),
                                           format_mode)

    def errors(self, record: Any) -> list[dict[str, str]] | None:
        """None when ``record`` is valid, else its errors (at most 10)."""
        if self._reference is None:
            return None
        try:
            # The compiled path compares doubles: a number whose double is not
            # its value (an ExactNumber) raises there, and jsonschema judges.
            if self._flat is not None:
                if self._flat.is_valid(record):
                    return None
            elif self._fast is not None:
                try:
                    self._fast(record)
                    return None
                except fastjsonschema.JsonSchemaValueException:
                    pass
        except Exception:  # noqa: BLE001 - the compiled path failing is no verdict: the reference gives it
            pass  # (a schema that refers to itself without end: RecursionError; the reference says what it can)
        found = []
        numbers = comparisons
        try:
            numbers.mode = EXACT
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
        finally:
            numbers.mode = AS_DOUBLE
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
              use_formats: bool, draft: type | None = None) -> _FlatObjectCheck | None:
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
            checks[name] = compile_fast(sub, formats, use_formats, draft or _class_of(schema))
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
