"""A JSON Schema proposed from sample records: ``ingestd infer-schema``.

Adding a source is then: drop a sample, infer, review, add. The proposal
says what the sample shows and no more: the types seen per property, the
properties present in every record (``required``), and for text (every CSV
value is text) the shapes worth checking: integers, decimals, dates and
times in the forms found. It is draft 2020-12 within the keywords the
compiled validator takes, so the source validates on the fast path.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Shapes of text, tried in order; the first that every value of a property
# matches becomes its pattern (or format).
TEXT_SHAPES = (
    ("integer text", {"pattern": "^-?[0-9]+$"}),
    ("decimal text", {"pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}),
    ("ISO date", {"format": "date"}),
    ("ISO date-time", {"format": "date-time"}),
    ("US date (M/D/YYYY)", {"pattern": "^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$"}),
    ("US date and 12-hour time", {"pattern": "^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4} [0-9]{1,2}:[0-9]{2}:[0-9]{2} [AP]M$"}),
)
_MATCHERS = {
    "integer text": re.compile(r"-?[0-9]+"),
    "decimal text": re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"),
    "ISO date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "ISO date-time": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                                r"([Zz]|[-+][0-9]{2}:[0-9]{2})"),
    "US date (M/D/YYYY)": re.compile(r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}"),
    "US date and 12-hour time": re.compile(r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{4} [0-9]{1,2}:[0-9]{2}:[0-9]{2} [AP]M"),
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Property:
    def __init__(self) -> None:
        self.types: set[str] = set()
        self.shapes: set[str] = {name for name, _ in TEXT_SHAPES}
        self.texts = 0
        self.empty_texts = 0

    def see(self, value: Any) -> None:
        kind = json_type(value)
        self.types.add(kind)
        if kind == "string":
            self.texts += 1
            if value == "":
                self.empty_texts += 1
                return
            self.shapes = {s for s in self.shapes if _MATCHERS[s].fullmatch(value)}

    def schema(self) -> dict[str, Any]:
        types = sorted(self.types)
        if "integer" in types and "number" in types:
            types.remove("integer")
        out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if types == ["string"] and self.texts > self.empty_texts:
            for name, keywords in TEXT_SHAPES:
                if name in self.shapes:
                    out.update(keywords)
                    if self.empty_texts:  # empty cells: allowed beside the shape
                        out = {"anyOf": [out, {"const": ""}]}
                    out.setdefault("description", f"{name} in the sample")
                    break
        return out


def infer_schema(records: Iterable[Any], title: str = "") -> dict[str, Any]:
    """A schema for objects like ``records`` (non-objects are counted apart)."""
    properties: dict[str, _Property] = {}
    seen_in: dict[str, int] = {}
    count = 0
    for record in records:
        if not isinstance(record, dict):
            continue
        count += 1
        for key, value in record.items():
            properties.setdefault(key, _Property()).see(value)
            seen_in[key] = seen_in.get(key, 0) + 1
    schema: dict[str, Any] = {"$schema": DRAFT_2020_12}
    if title:
        schema["title"] = title
    schema["description"] = (f"Proposed by ingestd infer-schema from {count} record(s): review before use "
                             "(types, required properties and text shapes are what the sample showed).")
    schema["type"] = "object"
    schema["required"] = [k for k in properties if seen_in[k] == count] if count else []
    schema["properties"] = {k: p.schema() for k, p in properties.items()}
    return schema
