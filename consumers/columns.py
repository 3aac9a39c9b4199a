"""Validity of a Parquet batch's rows found column by column, without a
Python object per value.

A closed object schema (every property required, no other allowed:
``FlatObjectCheck.closed_width``) judges a record property by property. A
batch whose columns are exactly those properties, each a column of strings
(plain, large, view, or a dictionary of them), gives every row that very
record: its JSON text (records/arrowjson.py) writes each string as itself,
so the value read back from it is the Arrow string. Each *distinct* string
of a column is judged once, by the property's own compiled check and its
cache of valid strings (the verdicts of the row path), and Arrow's kernels
then mark the rows whose every value is a valid string (``is_in``, ``take``,
``and``). A null is JSON null: never marked, its row takes the row path, as
does every row of a batch of another shape (a number column, an extension
type, a missing or extra column). No pattern is run by Arrow (RE2 is not
ECMA-262): only Python's checks judge.

Memory: one boolean a row and the distinct strings of one column at a time,
within what the Parquet planner (records/parquetplan.py) bounds a batch to.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .compiled import CACHED_LENGTH, MAX_CACHED_VALUES, FlatObjectCheck

_t = pa.types


def _strings(kind: pa.DataType) -> bool:
    return _t.is_string(kind) or _t.is_large_string(kind) or _t.is_string_view(kind)


class ColumnCheck:
    """The rows of a batch a flat closed schema finds valid; build once per source."""

    def __init__(self, flat: FlatObjectCheck) -> None:
        self.flat = flat

    def valid_rows(self, batch: pa.RecordBatch) -> pa.BooleanArray | None:
        """True for each row found valid column by column; None when the
        batch's shape gives no verdict column-wise (every row takes the row
        path). A False row is no verdict either: the row path judges it."""
        flat = self.flat
        names = batch.schema.names
        if flat.closed_width is None or len(names) != flat.closed_width or set(names) != flat.allowed:
            return None
        if not all(_strings(kind) or (_t.is_dictionary(kind) and _strings(kind.value_type))
                   for kind in batch.schema.types):
            return None
        mask: Any = None
        for name, column in zip(names, batch.columns, strict=True):
            valid = self._column(name, column)
            mask = valid if mask is None else pc.and_(mask, valid)
        return mask

    def _column(self, name: str, column: pa.Array) -> pa.Array:
        """Whether each value of one column is a string its property's check passes."""
        if isinstance(column, pa.DictionaryArray):
            # Only the entries the batch uses are judged: each batch of a row
            # group holds the whole dictionary (a million entries, for a few
            # thousand rows), which judged a batch at a time would cost the
            # dictionary once a batch.
            used = pc.unique(column.indices).drop_null()
            entries = self._verdicts(name, column.dictionary.take(used).to_pylist())
            passing = pa.array([i for i, ok in zip(used.to_pylist(), entries, strict=True) if ok], used.type)
            return pc.fill_null(pc.is_in(column.indices, value_set=passing), False)
        if _t.is_string_view(column.type):
            column = column.cast(pa.large_string())  # Arrow's is_in takes no views
        distinct = pc.unique(column).to_pylist()
        verdicts = self._verdicts(name, distinct)
        passing = pa.array([value for value, ok in zip(distinct, verdicts, strict=True) if ok], column.type)
        return pc.fill_null(pc.is_in(column, value_set=passing), False)

    def _verdicts(self, name: str, values: list[str | None]) -> list[bool]:
        """The row path's verdict on each string (a null: False, no verdict)."""
        known = self.flat.valid_strings[name]
        check = self.flat.checks[name]
        out = []
        for value in values:
            if value is None:
                out.append(False)
            elif value in known:
                out.append(True)
            elif self._passes(check, value):
                if len(value) <= CACHED_LENGTH:
                    if len(known) >= MAX_CACHED_VALUES:
                        known.clear()
                    known.add(value)
                out.append(True)
            else:
                out.append(False)
        return out

    @staticmethod
    def _passes(check: Any, value: str) -> bool:
        try:
            return bool(check(value))
        except Exception:  # noqa: BLE001 - a check that fails is no verdict: the row path judges
            return False
