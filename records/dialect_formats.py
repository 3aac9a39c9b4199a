"""Where ingestd's format checks are stricter than jsonschema's.

``records.dialect.format_checker`` holds jsonschema's check of every format
whose package is installed, each as ``stricter_check`` makes it.

jsonschema's checks of date-time, time, hostname, uri and uri-reference
match with Python's "$", which also matches before a final "\\n": they
took "2020-01-01T00:00:00Z\\n" for a date-time; its uri-template check takes
any blank. None of these formats' grammars (RFC 3339, 1123, 3986, 3987,
4122, 4291, 5890, 6570, ISO 8601 durations) has a space or a control
character anywhere, so a value with one is none of them. json-pointer,
relative-json-pointer and regex may hold any character and keep
jsonschema's checks. Date-time and time are RFC 3339's whole, leap seconds
included (``_is_datetime``).
"""
from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from typing import Any

import jsonschema._format

# Formats whose values hold no blank nor control character (see above).
_NO_BLANKS = frozenset({"date-time", "date", "time", "duration", "ipv4", "ipv6", "uuid", "hostname", "idn-hostname",
                        "uri", "uri-reference", "iri", "iri-reference", "uri-template", "host-name", "ip-address"})
_BLANK_OR_CONTROL = re.compile("[\x00-\x20\x7f-\x9f]")


def _without_blanks(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def conforms(value: Any) -> bool:
        return not (isinstance(value, str) and _BLANK_OR_CONTROL.search(value)) and check(value)
    return conforms


def _mailbox_blanks(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """jsonschema's email check (an "@") without what no RFC 5321/6531
    mailbox holds: a control character anywhere, a space outside a quoted
    local part ("a b"@example.com has one; a@example.com\n is none)."""
    def conforms(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if _CONTROL.search(value):
            return False
        local, _, domain = value.rpartition("@")
        quoted = len(local) >= 2 and local[0] == local[-1] == '"'
        return not (" " in domain or (" " in local and not quoted)) and check(value)
    return conforms


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# RFC 3339 (5.6) date-time, whole: "t" and "z" in either case, a leap second
# (second 60) where it can be (5.7): at 23:59:60 UTC, whatever the offset
# ("1990-12-31T15:59:60-08:00"). jsonschema's check (rfc3339-validator)
# refuses every leap second.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
                      re.ASCII)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    sign, offset_hour, offset_minute = match.group(7), int(match.group(8) or 0), int(match.group(9) or 0)
    if not (year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return False  # year 0 as jsonschema's check says (no proleptic year 0 in Python either)
    if hour > 23 or minute > 59 or second > 60 or offset_hour > 23 or offset_minute > 59:
        return False
    if second == 60:
        offset = (offset_hour * 60 + offset_minute) * (-1 if sign == "-" else 1)
        return (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59
    return True


def _is_time(value: Any) -> bool:
    return _is_datetime("1970-01-01T" + value) if isinstance(value, str) else True


_EXACT_CHECKS: dict[Any, Callable[[Any], bool]] = {}
for _name, _exact in (("is_datetime", _is_datetime), ("is_time", _is_time)):
    if hasattr(jsonschema._format, _name):  # absent without rfc3339-validator: the format is then refused
        _EXACT_CHECKS[getattr(jsonschema._format, _name)] = _exact



def stricter_check(name: str, check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """jsonschema's ``check`` of the format ``name`` as ingestd asserts it:
    date-time and time as RFC 3339 says, no blank nor control character
    where the format's grammar has none, an email's blanks only in a quoted
    local part; any other check as it is."""
    check = _EXACT_CHECKS.get(check, check)
    if name in _NO_BLANKS:
        return _without_blanks(check)
    if name in ("email", "idn-email"):
        return _mailbox_blanks(check)
    return check
