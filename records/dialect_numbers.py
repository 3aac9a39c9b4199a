"""JSON Schema's number keywords on the numbers as written.

A record's numbers come from records/jsonrecord.py as ``int``, a ``float``
whose double is the value written, or an ``ExactNumber``
(0.30000000000000001, 1e23). jsonschema, as ingestd sets it up
(``records.dialect.use_ecma_patterns``), judges ``multipleOf`` by dividing
the values as written (0.3 is a multiple of 0.1, 1.15 of 0.01) and
``uniqueItems`` by each item's exact value, in linear time.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
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
from typing import Any

import jsonschema
import jsonschema._keywords

from .exactnumbers import ExactNumber, written_value

# jsonschema's own multipleOf: ``multiple_of`` takes its place and gives its answer where
# no exact one is defined.
JSONSCHEMA_MULTIPLE_OF = jsonschema._keywords.multipleOf


def multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's multipleOf on the values as written: the quotient of the
    two exact values is an integer."""
    if not validator.is_type(instance, "number"):
        return
    verdict = is_multiple(instance, divisor)
    if verdict is None:  # not a positive finite divisor, or NaN: jsonschema's own answer
        yield from JSONSCHEMA_MULTIPLE_OF(validator, divisor, instance, schema)
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
