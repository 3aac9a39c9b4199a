"""A JSON Schema proposed from sample records: ``ingestd infer-schema``.

Adding a source is then: drop a sample, infer, review, add. The proposal
says what the sample shows and no more: the types seen per property, the
properties present in every record (``required``), and for text (every CSV
value is text) the shapes worth checking: integers, decimals, dates and
times in the forms found, each checked with the validator the source will
use, so that the proposal accepts every record of its sample. It is draft
2020-12 within the keywords the compiled validator takes, so the source
validates on the fast path.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from ingestd.records.dialect import SchemaError

from .validation import RecordValidator

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Shapes of text, tried in order; the first that every value of a property
# has becomes its pattern (or format).
TEXT_SHAPES = (
    ("integer text", {"pattern": "^-?[0-9]+$"}),
    ("decimal text", {"pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}),
    ("ISO date", {"format": "date"}),
    ("ISO date-time", {"format": "date-time"}),
    ("US date (M/D/YYYY)", {"pattern": "^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$"}),
    ("US date and 12-hour time", {"pattern": "^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4} [0-9]{1,2}:[0-9]{2}:[0-9]{2} [AP]M$"}),
)


@cache
def shape_check(name: str) -> Callable[[str], bool] | None:
    """Whether a text has the shape ``name``, judged by the validator a
    source with the proposal will use (format asserted), so that a proposal
    never refuses a value it was made from (``2020-02-30`` is no ISO date);
    None when that validator cannot check it (a format whose package is
    missing): such a shape is never proposed."""
    keywords = dict(TEXT_SHAPES)[name]
    try:
        validator = RecordValidator({"$schema": DRAFT_2020_12, "type": "string", **keywords}, f"shape {name}")
    except SchemaError:
        return None
    return lambda text: validator.errors(text) is None


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
        self.shapes: dict[str, Callable[[str], bool]] = {
            name: check for name, _ in TEXT_SHAPES if (check := shape_check(name)) is not None}
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
            self.shapes = {name: check for name, check in self.shapes.items() if check(value)}

    def schema(self) -> dict[str, Any]:
        types = _types(self.types)
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


def _types(kinds: set[str]) -> list[str]:
    """JSON Schema types that admit values of every kind in ``kinds``."""
    types = sorted(kinds)
    if "integer" in types and "number" in types:
        types.remove("integer")  # every integer is a number
    return types


def infer_schema(records: Iterable[Any], title: str = "") -> dict[str, Any]:
    """A schema for objects like ``records`` that accepts every one of them:
    records that are not objects widen its type, and each property's shape
    is one all its texts pass."""
    properties: dict[str, _Property] = {}
    seen_in: dict[str, int] = {}
    others: set[str] = set()
    count = 0
    for record in records:
        if not isinstance(record, dict):
            others.add(json_type(record))
            continue
        count += 1
        for key, value in record.items():
            properties.setdefault(key, _Property()).see(value)
            seen_in[key] = seen_in.get(key, 0) + 1
    schema: dict[str, Any] = {"$schema": DRAFT_2020_12}
    if title:
        schema["title"] = title
    schema["description"] = (f"Proposed by ingestd infer-schema from {count} record(s)"
                             + (f" and records that are not objects ({', '.join(sorted(others))})" if others else "")
                             + ": review before use (types, required properties and text shapes are what the "
                             "sample showed).")
    types = _types(others | ({"object"} if count or not others else set()))
    schema["type"] = types[0] if len(types) == 1 else types
    schema["required"] = [k for k in properties if seen_in[k] == count] if count else []
    schema["properties"] = {k: p.schema() for k, p in properties.items()}
    return schema
