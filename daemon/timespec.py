"""Times given on the command line: ``30m``, ``2h``, ``7d`` ago, or a date/time."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "use a duration ago (30m, 2h, 7d) or a date/time (2026-11-23, 2026-11-23T08:00, 2026-11-23T08:00+01:00)"


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime, in UTC, for ``text``; a date or time without a
    zone is local time.

    Raises ValueError with the accepted forms, also for a time no datetime
    holds (before the year 1 or after 9999 in UTC: ``999999999d`` ago).
    """
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if not match:
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text[:40]!r}: {FORMS}") from None
    try:
        if match:
            return (now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})).astimezone(UTC)
        return (value if value.tzinfo else value.astimezone()).astimezone(UTC)
    except (OverflowError, ValueError):  # timedelta and datetime refuse what is past their range so
        raise ValueError(f"{text[:40]!r} is too far back or out of range (years 1 to 9999 in UTC)") from None
