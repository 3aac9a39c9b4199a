"""Exact numbers: a number of a record stands for its value as written.

A JSON parser gives doubles, and a double is not always the number its
text says (0.30000000000000001, 1e23, 1e-400, an integer past 64 bits).
records/jsonrecord.py keeps a number's double where it is the value written
(``is_written_value``, ``doubles_are_written_values``: the fast check of a
whole record's text) and otherwise builds one of the numbers here:
``ExactNumber``, the nearest double that compares, hashes and says
``is_integer()`` by its exact decimal value while RecordValidator validates
(``comparisons``), and ``WholeNumber``, an integer too long for
``int(text)``. ``written_value`` is the exact value of any number of a
record or a schema. PostgreSQL numeric's range, which bronze stores
numbers in, is here too.
"""
from __future__ import annotations

import math
import operator
import re
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

# PostgreSQL numeric: at most 131072 digits before the decimal point and
# 16383 after it (the display scale).
NUMERIC_MAX_WEIGHT = 131071
NUMERIC_MAX_SCALE = 16383
# Python refuses to turn longer digit strings into ``int`` (quadratic time).
INT_MAX_DIGITS = 4300

# A number's text (the fast filter of records/jsonrecord.py finds the records
# whose numbers ``doubles_are_written_values`` checks one at a time).
_NUMBER = re.compile(rb"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_TWO_53 = 2**53


def doubles_are_written_values(text: bytes) -> bool:
    """Whether every number of ``text`` that orjson reads as a double is
    kept exactly by that double (``is_written_value``). Digits inside
    strings are taken for numbers too: at worst the record is read again
    exactly for nothing."""
    for found in _NUMBER.finditer(text):
        fraction, exponent = found.group(1, 2)
        token = found.group()
        if len(token) > 40:
            return False  # past 64 bits, or a number numeric's range is checked for
        if fraction is None and exponent is None:
            if len(token) >= 19 and not -2**63 <= int(token) < 2**64:
                return False  # past 64 bits: a double for orjson
            continue
        if exponent is None and len(token) <= 16:
            continue  # 15 digits at most: the double's shortest text is this value
        double = float(token)
        if -_TWO_53 < double < _TWO_53 and repr(double).encode() == token:
            continue
        exact = Decimal(token.decode("ascii"))
        if not is_written_value(float(exact), exact):
            return False
    return True


def is_written_value(value: float, exact: Decimal) -> bool:
    """Whether the double ``value`` stands exactly for ``exact``, the value
    written: below 2**53 in magnitude its shortest text must have that value
    (Python's comparisons of such doubles with integers and with each other
    then say what the values say); beyond, the double must be it exactly."""
    if not math.isfinite(value):
        return False
    if -_TWO_53 < value < _TWO_53:
        return Decimal(repr(value)) == exact
    return Decimal(value) == exact


def written_value(value: Any) -> Any:
    """The exact value a number of a record or a schema stands for: an
    ``ExactNumber``'s decimal, an ``int``, a finite float's shortest text
    read as a decimal (0.1 is one tenth, as the schema or file wrote it);
    ``NotImplemented`` for what is no number, None for NaN."""
    if type(value) is ExactNumber:
        return value.exact
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return Decimal(repr(value)) if math.isfinite(value) else Decimal(value)
    if isinstance(value, (Decimal, Fraction)):
        return None if value != value else value
    return NotImplemented


# How an ExactNumber compares: by its exact value while jsonschema validates
# for RecordValidator (set per thread), else as its double (it is the float
# a JSON parser gives), except in code compiled by fastjsonschema, which
# compares doubles: there it refuses (its globals carry COMPILED_MARK; the
# record then goes to jsonschema).
AS_DOUBLE, EXACT = 0, 1
COMPILED_MARK = "_ingestd_compares_doubles"


class _Comparisons(threading.local):
    mode = AS_DOUBLE


comparisons = _Comparisons()


class InexactComparison(Exception):
    """An ExactNumber compared where only doubles are compared."""


def _as_double(number: ExactNumber, caller: Any) -> bool:
    """Whether ``number`` compares as its double where ``caller`` (a frame)
    compares it; raises in code that would take the double for the value."""
    if caller.f_globals.get(COMPILED_MARK):
        raise InexactComparison(f"{number!r} is not its double")
    return True


def _exact_comparison(compare: Callable[[Any, Any], bool], as_double: Callable[[Any, Any], Any],
                      nan: bool) -> Callable[[Any, Any], Any]:
    def method(self: ExactNumber, other: Any) -> Any:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return as_double(self, other)
        value = written_value(other)
        if value is NotImplemented:
            return NotImplemented
        return nan if value is None else compare(self.exact, value)
    return method


class ExactNumber(float):
    """A number of a record whose double is not its value as written
    (0.30000000000000001, 1e23, 1e-400). It is that double, the float any
    JSON parser would give, for arithmetic and comparisons, except while
    RecordValidator validates: on jsonschema's path it compares (``==``,
    ``<``...), hashes and says ``is_integer()`` by its exact value; in the
    compiled validators (fastjsonschema compares doubles) it raises
    ``InexactComparison`` and the record goes to jsonschema. It prints as
    written."""

    __slots__ = ("exact", "text")
    exact: Decimal
    text: str | None

    def __new__(cls, exact: Decimal, text: str | None = None) -> ExactNumber:
        self = super().__new__(cls, float(exact))
        self.exact = exact
        self.text = text
        return self

    __eq__ = _exact_comparison(operator.eq, float.__eq__, False)
    __ne__ = _exact_comparison(operator.ne, float.__ne__, True)
    __lt__ = _exact_comparison(operator.lt, float.__lt__, False)
    __le__ = _exact_comparison(operator.le, float.__le__, False)
    __gt__ = _exact_comparison(operator.gt, float.__gt__, False)
    __ge__ = _exact_comparison(operator.ge, float.__ge__, False)

    def __hash__(self) -> int:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return float.__hash__(self)
        return hash(self.exact)  # equal numbers hash alike across int, float, Decimal

    def is_integer(self) -> bool:
        if comparisons.mode != EXACT and _as_double(self, sys._getframe(1)):
            return float.is_integer(self)
        return self.exact == self.exact.to_integral_value()

    def __repr__(self) -> str:
        return self.text if self.text is not None else str(self.exact)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExactNumber, (self.exact, self.text))


class WholeNumber(int):
    """An integer written with more digits than ``int(text)`` takes
    (``INT_MAX_DIGITS``); printed from its decimal, which has no such limit."""

    exact: Decimal

    def __new__(cls, exact: Decimal) -> WholeNumber:
        self = super().__new__(cls, int(exact))
        self.exact = exact
        return self

    def __repr__(self) -> str:
        return str(self.exact)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (WholeNumber, (self.exact,))
