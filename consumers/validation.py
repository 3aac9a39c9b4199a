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
        except Exception as exc:  # noqa: BLE001 - any compile failure means "use the slow path"
            log.warning(
                "schema not compilable by fastjsonschema; validating with jsonschema only",
                extra={"source": source, "step": "validate", "status": "slow_path", "error": str(exc)},
            )

    def errors(self, record: Any) -> list[dict[str, str]] | None:
        """None when ``record`` is valid, else its errors (at most 10)."""
        if self._reference is None:
            return None
        if self._fast is not None:
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
