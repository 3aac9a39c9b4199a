"""What a run's records say about the data's quality, beyond valid or not.

Kept per run in ``ops.pipeline_runs.quality`` (``ingestd runs --id``), from
the same pass that validates the records:

- ``missing_required``: the share of records missing each field the
  schema's top level requires (only an invalid record can miss one, so valid
  records cost nothing here);
- ``top_failures``: the most frequent failing keywords and where they
  failed (JSON pointers into the record);
- ``undeclared_fields``: top-level fields the records hold that the schema's
  ``properties`` (or ``patternProperties``) do not declare: schema drift;
- ``never_seen``: declared fields no record of the run held.

Everything here is bounded whatever the file (or the schema) holds: at most
``MAX_FIELDS`` undeclared names and ``MAX_FAILURE_KEYS`` distinct
failures are counted, at most ``MAX_FIELDS`` names of each list are kept
(``*_more`` says there were others), names and pointers cut at
``MAX_NAME`` characters.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingestd.records.dialect import ecma_pattern
from ingestd.records.reading import KNOWN_VALID

MAX_FIELDS = 100
MAX_FAILURE_KEYS = 1000
MAX_NAME = 200
TOP_FAILURES = 5


def _cut(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


class RunQuality:
    """Counts of one run's records; ``observe`` each, then ``summary``."""

    def __init__(self, schema: Any) -> None:
        root = schema if isinstance(schema, Mapping) else {}
        properties = root.get("properties")
        patterns = root.get("patternProperties")
        required = root.get("required")
        # Drift is said only of schemas that declare their fields.
        self.declared: frozenset[str] | None = (
            frozenset(k for k in properties if isinstance(k, str)) if isinstance(properties, Mapping) else None)
        self._patterns = ([ecma_pattern(p) for p in patterns if isinstance(p, str)]
                          if isinstance(patterns, Mapping) and self.declared is not None else [])
        self.required = [f for f in required if isinstance(f, str)] if isinstance(required, list) else []
        self.missing: dict[str, int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.undeclared: set[str] = set()
        self.undeclared_more = False
        self.seen: set[str] = set()
        self._last_keys: Any = None
        # A valid record of a schema whose top level allows no other property
        # (and has no "$ref", beside which drafts 4 to 7 ignore it) holds no
        # undeclared field: once every declared one has been seen, such
        # records have nothing left to tell.
        closed = root.get("additionalProperties") is False and "$ref" not in root
        self._closed_fields = len(self.declared) if closed and self.declared is not None else -1

    def observe(self, record: Any, errors: list[dict[str, str]] | None) -> None:
        if errors is None and len(self.seen) == self._closed_fields:
            return
        if record is KNOWN_VALID:
            # Judged valid column by column, which only a closed schema's
            # records are: it holds every declared field and no other.
            if self.declared is not None:
                self.seen.update(self.declared)
            return
        if type(record) is dict and self.declared is not None:
            keys = record.keys()
            # Records of one file mostly share their fields: a set comparison
            # in C, and the names are looked at only when they change.
            if keys != self._last_keys:
                self._last_keys = keys
                self._fields(keys)
        if errors is not None:
            self._failed(record, errors)

    def _fields(self, keys: Any) -> None:
        declared = self.declared
        assert declared is not None
        if len(self.seen) < len(declared):
            self.seen.update(k for k in keys if k in declared)
        for key in keys:
            if key in declared or not isinstance(key, str):
                continue
            name = _cut(key)
            if name in self.undeclared or any(pattern.search(key) for pattern in self._patterns):
                continue
            if len(self.undeclared) >= MAX_FIELDS:
                self.undeclared_more = True
                return
            self.undeclared.add(name)

    def _failed(self, record: Any, errors: list[dict[str, str]]) -> None:
        if type(record) is dict:
            for name in self.required:
                if name not in record:
                    self.missing[name] = self.missing.get(name, 0) + 1
        for error in errors:
            key = (error.get("keyword", "?"), _cut(error.get("pointer", "/")))
            if key in self.failures or len(self.failures) < MAX_FAILURE_KEYS:
                self.failures[key] = self.failures.get(key, 0) + 1

    def summary(self, records: int) -> dict[str, Any]:
        """The run's figures, as stored in ``ops.pipeline_runs.quality``."""
        top = sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))[:TOP_FAILURES]
        # The most missed of the required fields, in the order of their names.
        missing = sorted(sorted(self.missing.items(), key=lambda item: (-item[1], item[0]))[:MAX_FIELDS])
        out: dict[str, Any] = {
            "missing_required": {_cut(name): round(count / records, 6) for name, count in missing} if records else {},
            "top_failures": [{"keyword": k, "pointer": p, "count": n} for (k, p), n in top],
        }
        if records and len(self.missing) > MAX_FIELDS:
            out["missing_required_more"] = True
        if self.declared is not None:
            out["undeclared_fields"] = sorted(self.undeclared)
            if self.undeclared_more:
                out["undeclared_more"] = True
            never_seen = sorted(self.declared - self.seen) if records else []
            out["never_seen"] = [_cut(name) for name in never_seen[:MAX_FIELDS]]
            if len(never_seen) > MAX_FIELDS:
                out["never_seen_more"] = True
        return out
