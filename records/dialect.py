"""The JSON Schema dialect of ingestd: how it reads a source's schema.

Verdicts are jsonschema's (the reference implementation), for every draft it
knows; a schema without ``$schema`` is draft 2020-12 (``validator_class``).
Three choices are made explicit, the same on every path of
consumers/validation.py, and the same when daemon/config.py checks a
source's schema at load:

* ``pattern`` and ``patternProperties`` are ECMA-262 regular expressions in
  Unicode mode, as the specification asks (``\\p{Letter}``, ``$`` only at the
  end), matched by the ``regress`` library in linear time. A pattern that
  does not compile refuses the source's config at start (``check_patterns``).
* ``format`` asserts (the default: a data pipeline wants ``"date"`` checked)
  or only annotates, per source (``format_keyword``). Asserted, every format
  of the schema is really checked, with jsonschema's check on both paths
  (``format_checker``, stricter where records/dialect_formats.py says): a
  format it cannot check (an unknown name, or a check whose package is not
  installed) refuses the source's config (``unassertable_formats``).
* Numbers are judged by their value as written (JSON Schema compares numbers
  by mathematical value): a record's numbers come from records/jsonrecord.py
  as ``int``, a ``float`` whose double is the value written, or an
  ``ExactNumber`` (0.30000000000000001, 1e23), which jsonschema's path
  compares by its exact decimal. ``multipleOf`` divides the values as
  written (0.3 is a multiple of 0.1, 1.15 of 0.01) and ``uniqueItems`` runs
  in linear time (records/dialect_numbers.py).

``use_ecma_patterns`` sets jsonschema up so; ``schema_positions`` says where
a draft finds subschemas, for every walk over a schema.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema._keywords
import jsonschema._utils
import regress

from .dialect_formats import stricter_check
from .dialect_numbers import JSONSCHEMA_MULTIPLE_OF, multiple_of, unique_items

DRAFTS = {
    jsonschema.Draft3Validator: "draft-03",
    jsonschema.Draft4Validator: "draft-04",
    jsonschema.Draft6Validator: "draft-06",
    jsonschema.Draft7Validator: "draft-07",
    jsonschema.Draft201909Validator: "draft 2019-09",
    jsonschema.Draft202012Validator: "draft 2020-12",
}


def validator_class(schema: Mapping[str, Any]) -> type:
    """The jsonschema validator class of the draft ``schema`` names (2020-12 without ``$schema``)."""
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def class_of(schema: Any) -> type:
    """The jsonschema validator class of ``schema``'s draft; a boolean schema's is 2020-12's."""
    return validator_class(schema) if isinstance(schema, Mapping) else jsonschema.Draft202012Validator


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
            if function is JSONSCHEMA_MULTIPLE_OF:
                cls.VALIDATORS[keyword] = multiple_of


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
    for pointer, pattern in _patterns(schema, cls or class_of(schema)):
        try:
            ecma_pattern(pattern)
        except re.error as exc:
            problems.append(f"{pointer}: {pattern!r} is {exc}")
    return problems


def _patterns(schema: Any, cls: type) -> Iterator[tuple[str, str]]:
    for path, node in schema_positions(schema, cls, follow_refs=True):
        if not isinstance(node, dict):
            continue
        here = "".join(f"/{pointer_token(p)}" for p in path)
        if isinstance(node.get("pattern"), str):
            yield f"{here}/pattern", node["pattern"]
        if isinstance(node.get("patternProperties"), dict):
            for name in node["patternProperties"]:
                yield f"{here}/patternProperties/{pointer_token(name)}", name


# -- where the subschemas are ---------------------------------------------

# Where a keyword's value is a subschema, a list of them, or a map of them
# (each only where the draft knows the keyword); ``definitions`` and
# ``$defs`` hold subschemas by convention in every draft ($ref targets).
_ONE_SCHEMA = frozenset({"additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if",
                         "then", "else", "items", "unevaluatedProperties", "unevaluatedItems", "extends"})
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items", "extends"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "dependencies", "dependentSchemas"})
_CONTAINERS = frozenset({"definitions", "$defs"})


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
            target = local_target(schema, node["$ref"])
            if target is not None:
                children.append(target)
        stack.extend(reversed(children))  # in document order
    return found


def local_target(root: Any, ref: str) -> tuple[tuple[Any, ...], Any] | None:
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


def pointer_token(key: Any) -> str:
    """``key`` as a token of a JSON pointer ("a/b" is "a~1b")."""
    return str(key).replace("~", "~0").replace("/", "~1")


# -- formats ---------------------------------------------------------------

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
# Keywords whose value is a map of subschemas (``schema_formats`` walks their values).
_SUBSCHEMA_MAP = {"properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"}


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
            checks[name] = check
    checker = jsonschema.FormatChecker(formats=())
    for name, check in checks.items():
        checker.checks(name, raises=Exception)(stricter_check(name, check))
    checker.checks("regex", raises=re.error)(_is_ecma_regex)
    return checker


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
    for pointer, name in schema_formats(schema):
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


def schema_formats(schema: Any) -> Iterator[tuple[str, str]]:
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
                where = f"{pointer}/{pointer_token(key)}"
                if key in _SUBSCHEMA_MAP and isinstance(value, dict):
                    children.extend((sub, f"{where}/{pointer_token(k)}") for k, sub in value.items())
                elif key not in _DATA_KEYWORDS and isinstance(value, (dict, list)):
                    children.append((value, where))
        stack.extend(reversed(children))  # in document order
