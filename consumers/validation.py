"""Per-record validation against a source's JSON Schema.

The hot path asks a compiled validator (fastjsonschema, about 1-2 µs a
record) whether a record is valid; only for the invalid ones does jsonschema,
the reference implementation, explain why (JSON pointer, keyword, message).
Where the schema uses something fastjsonschema cannot compile, jsonschema
does both jobs (slower, same results).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import fastjsonschema
import jsonschema

log = logging.getLogger(__name__)

MAX_ERRORS_PER_RECORD = 10
# Per-property verdict caches are dropped when they grow past this many
# entries (a column of unique values gains nothing from caching).
MAX_CACHED_VALUES = 50_000
# Top-level keywords the flat fast path understands exactly; any other makes
# validity depend on more than one property at a time.
_FLAT_KEYWORDS = {"$schema", "$id", "title", "description", "type", "properties", "required",
                  "additionalProperties", "$comment", "examples"}


class RecordValidator:
    """Validates records against one schema; build once per source."""

    def __init__(self, schema: Mapping[str, Any] | None, source: str = "") -> None:
        self.schema = schema
        self._fast: Callable[[Any], Any] | None = None
        self._reference: jsonschema.protocols.Validator | None = None
        if schema is None:
            return
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._reference = cls(schema, format_checker=cls.FORMAT_CHECKER)
        try:
            # use_default=False: the raw record must never be modified.
            self._fast = fastjsonschema.compile(dict(schema), use_default=False)
            self._flat = _FlatObjectCheck.build(schema)
        except Exception as exc:  # noqa: BLE001 - any compile failure means "use the slow path"
            self._flat = None
            log.warning(
                "schema not compilable by fastjsonschema; validating with jsonschema only",
                extra={"source": source, "step": "validate", "status": "slow_path", "error": str(exc)},
            )

    def errors(self, record: Any) -> list[dict[str, str]] | None:
        """None when ``record`` is valid, else its errors (at most 10)."""
        if self._reference is None:
            return None
        if self._flat is not None:
            if self._flat.is_valid(record):
                return None
        elif self._fast is not None:
            try:
                self._fast(record)
                return None
            except fastjsonschema.JsonSchemaValueException:
                pass
        found = []
        for error in self._reference.iter_errors(record):
            found.append(
                {
                    "pointer": "/" + "/".join(str(p) for p in error.absolute_path),
                    "keyword": str(error.validator),
                    "message": error.message[:500],
                }
            )
            if len(found) >= MAX_ERRORS_PER_RECORD:
                break
        # The two validators disagreed: jsonschema is the reference.
        return found or None


class _FlatObjectCheck:
    """Exact validity for schemas that constrain an object property by property.

    Tabular sources (CSV above all) repeat the same values over and over:
    dates, zeros, ids. When the schema is an object whose only constraints
    are ``required``, ``additionalProperties: false|true`` and one subschema
    per property, a record is valid iff its keys pass and each value passes
    its property's subschema, and that verdict is cached per (type, value).
    Anything else falls back to the whole-record validator.
    """

    def __init__(self, required: frozenset[str], allowed: frozenset[str] | None,
                 checks: dict[str, Callable[[Any], Any]]) -> None:
        self.required = required
        self.allowed = allowed
        self.checks = checks
        # Strings already found valid, per property. Only ``str`` values are
        # remembered: a string never equals a value of another type, so a set
        # lookup cannot confuse "1" with 1 or True.
        self.valid_strings: dict[str, set[str]] = {k: set() for k in checks}

    @classmethod
    def build(cls, schema: Mapping[str, Any]) -> "_FlatObjectCheck | None":
        if set(schema) - _FLAT_KEYWORDS or schema.get("type") != "object":
            return None
        additional = schema.get("additionalProperties", True)
        if not isinstance(additional, bool):
            return None
        properties = schema.get("properties", {})
        checks = {}
        for name, sub in properties.items():
            if not isinstance(sub, Mapping) or "$ref" in str(sub):
                return None  # a reference may point at the root: not local
            checks[name] = fastjsonschema.compile(dict(sub), use_default=False)
        allowed = None if additional else frozenset(properties)
        return cls(frozenset(schema.get("required", ())), allowed, checks)

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
