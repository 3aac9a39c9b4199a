"""Hostile numbers: what a file author can make validation cost, and the
verdicts it must still give."""
from __future__ import annotations

from decimal import Decimal

import pytest

from ingestd.consumers.validation import RecordValidator
from ingestd.records.dialect_numbers import _canonical
from ingestd.records.exactnumbers import AS_DOUBLE, EXACT, ExactNumber, comparisons
from ingestd.records.jsonrecord import parse_record


def _verdicts(schema, text: bytes) -> tuple[bool, bool]:
    """(fast path valid, jsonschema path valid) of one record."""
    record = parse_record(text, "record 1")
    fast = RecordValidator(schema, "numbers")
    reference = RecordValidator({**schema, "$comment": "reference"}, "numbers")
    reference._fast = reference._flat = None
    return fast.errors(record) is None, reference.errors(record) is None


def test_unique_items_keys_a_huge_whole_exact_number_by_its_decimal():
    """``1e131000`` is nine bytes of a record; as an ``int`` it is 131,001
    digits, and building that int took about a second: a record of a
    thousand such numbers under uniqueItems took minutes. The key is the
    decimal, which hashes and compares like the integer it equals."""
    comparisons.mode = EXACT  # as while RecordValidator validates
    try:
        key = _canonical(ExactNumber(Decimal("1E+131000")))
        assert not isinstance(key[1], int)
        assert key == _canonical(ExactNumber(Decimal("10E+130999")))
        assert key != _canonical(ExactNumber(Decimal("1E+130999")))
        assert _canonical(ExactNumber(Decimal("1E+23"))) == _canonical(10**23)
        assert hash(_canonical(ExactNumber(Decimal("1E+23")))) == hash(_canonical(10**23))
    finally:
        comparisons.mode = AS_DOUBLE


@pytest.mark.parametrize("array,unique", [
    (b"[1e23, 100000000000000000000000]", False),
    (b"[1e23, 99999999999999991611392]", True),
    (b"[1e131000, 10e130999]", False),
    (b"[1e131000, 1e130999]", True),
    (b"[1e23, 1e23, 2]", False),
    (b"[0.30000000000000001, 0.3]", True),
    (b"[1.0000000000000000000001, 1]", True),
    (b"[{\"x\": 1e23}, {\"x\": 100000000000000000000000}]", False),
    (b"[0, -0.0, -0e-400]", False),
])
def test_unique_items_verdicts_on_exact_numbers(array, unique):
    text = b'{"a": ' + array + b"}"
    assert _verdicts({"properties": {"a": {"uniqueItems": True}}}, text) == (unique, unique)


def test_multiple_of_a_huge_exact_number_takes_no_fraction(monkeypatch):
    """``1e131000`` under ``multipleOf: 1e-300`` made two Fractions of
    131,000 digits and their quotient (10 ms a number; a 131,000-digit
    integer with a fraction, about a second): a 16 MiB record of them took
    hours. Decimals written in the record and the schema are divided exactly
    by their remainder instead; the Fractions are counted, not the time."""
    import ingestd.records.dialect_numbers as numbers
    calls = []
    real = numbers._fraction
    monkeypatch.setattr(numbers, "_fraction", lambda number: calls.append(number) or real(number))
    assert numbers.is_multiple(ExactNumber(Decimal("1E+131000")), 1e-300) is True
    assert numbers.is_multiple(ExactNumber(Decimal("7E+131000")), 7) is True
    assert numbers.is_multiple(ExactNumber(Decimal("1E+131000")), 7) is False
    assert numbers.is_multiple(ExactNumber(Decimal("1" * 5000 + ".5")), 0.5) is True
    assert numbers.is_multiple(ExactNumber(Decimal("1" * 5000 + ".5")), 1e-300) is True
    assert numbers.is_multiple(ExactNumber(Decimal("1" * 5000 + ".5")), 3) is False
    assert calls == []


@pytest.mark.parametrize("value", [b"0.3", b"1.15", b"0.30000000000000001", b"1e23", b"1e-400", b"-0.0", b"-1e131000",
                                   b"12345678901234567890123", b"0." + b"5" * 3000, b"7" * 5000, b"7" * 5000 + b".7",
                                   b"9007199254740993.0000000001", b"1.0000000000000001", b"5e-324", b"4.9e-324"])
@pytest.mark.parametrize("divisor", [0.1, 0.01, 1e-300, 7, 3.3e-7, 5e-324, 1e308, 0.5, 10**30, 2.5])
def test_multiple_of_verdicts_are_those_of_exact_fractions(value, divisor):
    from fractions import Fraction

    from ingestd.records.dialect_numbers import is_multiple
    from ingestd.records.exactnumbers import written_value
    record = parse_record(b'{"a": ' + value + b"}", "record 1")["a"]
    exact = Fraction(written_value(record)) / Fraction(written_value(divisor))
    assert is_multiple(record, divisor) is (exact.denominator == 1)
    schema = {"properties": {"a": {"multipleOf": divisor}}}
    assert _verdicts(schema, b'{"a": ' + value + b"}") == (exact.denominator == 1,) * 2
