"""Per-record validation against a source's JSON Schema.

Verdicts are jsonschema's (the reference implementation), in ingestd's
dialect (records/dialect.py: ECMA-262 patterns, formats asserted or only
annotated per source, numbers judged by their value as written). A schema
that dialect cannot use (a pattern that does not compile, a format that
cannot be asserted) is refused with ``SchemaError``.

A compiled validator (consumers/compiled.py: fastjsonschema, about 1-2 µs a
record against jsonschema's 25) answers instead of jsonschema only where it
is proven to give the same verdict: every keyword of the schema, through
every subschema and ``$ref``, is on the allow-list of its draft
(``FAST_KEYWORDS``). ``plan_for`` says which path a schema takes; any other
schema is validated by jsonschema record by record, and one log line at
start says which source and why (``log_validation_plans``). Only invalid
records are then explained by jsonschema (JSON pointer, keyword, message).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from ingestd.records.dialect import (
    DRAFTS,
    SchemaError,
    check_patterns,
    class_of,
    format_checker,
    local_target,
    pointer_token,
    schema_formats,
    schema_positions,
    unassertable_formats,
    use_ecma_patterns,
)
from ingestd.records.exactnumbers import AS_DOUBLE, EXACT, comparisons

from .compiled import ANNOTATIONS, FAST_KEYWORDS, FlatObjectCheck, compile_fast, fast_formats, written_schema

log = logging.getLogger(__name__)

MAX_ERRORS_PER_RECORD = 10


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


def plan_for(schema: Any, format_mode: str = "assert") -> ValidationPlan:
    """Which path ``schema``'s records take, and why not the compiled one."""
    cls = class_of(schema)
    draft = DRAFTS.get(cls, "draft 2020-12")
    reasons = list(_slow_reasons(schema, draft, cls))
    formats = tuple(sorted({name for _, name in schema_formats(schema)}))
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
        pointer = "".join(f"/{pointer_token(p)}" for p in path)
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            yield f"a subschema that is not an object at {pointer or '/'}"
            continue
        for key, value in node.items():
            where = f"{pointer}/{pointer_token(key)}"
            if key == "$id" and pointer == "":
                continue
            if key not in allowed:
                yield f"keyword {key!r} at {where}"
                continue
            if key == "$ref":
                target = local_target(schema, value) if isinstance(value, str) else None
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

class RecordValidator:
    """Validates records against one schema; build once per source."""

    def __init__(self, schema: Mapping[str, Any] | bool | None, source: str = "",
                 format_mode: str = "assert") -> None:
        self.schema = schema
        self.source = source
        self._fast: Callable[[Any], Any] | None = None
        self._flat: FlatObjectCheck | None = None
        self._columns: Any = None
        self._reference: Any = None
        self.plan: ValidationPlan | None = None
        if schema is None:
            return
        use_ecma_patterns()
        cls = class_of(schema)
        problems = check_patterns(schema, cls)
        checker = format_checker(cls) if format_mode == "assert" else None
        problems += unassertable_formats(schema, format_mode, checker)
        if problems:
            raise SchemaError("; ".join(problems))
        self._reference = cls(written_schema(schema, cls, as_integers=False), format_checker=checker)
        self.plan = plan_for(schema, format_mode)
        if self.plan.fast:
            formats = fast_formats(checker)
            compiled = written_schema(schema, cls, as_integers=True)
            try:
                self._fast = compile_fast(compiled, formats, checker is not None, cls)
                self._flat = FlatObjectCheck.build(compiled, formats, checker is not None, cls)
            except Exception as exc:  # noqa: BLE001 - any compile failure means "use the reference path"
                self._fast = self._flat = None
                self.plan = ValidationPlan(self.plan.draft, False, (f"fastjsonschema cannot compile it: {exc}",),
                                           format_mode)

    def valid_rows(self, batch: Any) -> Any:
        """For an Arrow record batch of a Parquet file, a boolean a row:
        True where the row's record is valid, found column by column
        (consumers/columns.py); a False row, or None for the whole batch,
        is no verdict: those records take ``errors``."""
        if self._flat is None or self._flat.closed_width is None:
            return None
        if self._columns is None:
            from .columns import ColumnCheck  # pyarrow: only where Parquet is read
            self._columns = ColumnCheck(self._flat)
        return self._columns.valid_rows(batch)

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
                    "pointer": "/" + "/".join(pointer_token(p) for p in error.absolute_path),
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

