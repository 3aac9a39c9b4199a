"""Hostile numbers: what a file author can make validation cost, and the
verdicts it must still give."""
from __future__ import annotations

from decimal import Decimal

import pytest

from ingestd.consumers.jsontext import AS_DOUBLE, EXACT, ExactNumber, comparisons, parse_record
from ingestd.consumers.validation import RecordValidator, _canonical


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
