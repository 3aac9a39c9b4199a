"""Times given on the command line: ``30m``, ``2h``, ``7d`` ago, or a date/time."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime for ``text``; a date or time without a zone is local time.

    Raises ValueError with the accepted forms.
    """
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: use a duration ago (30m, 2h, 7d) or a date/time "
                         f"(2026-11-23, 2026-11-23T08:00, 2026-11-23T08:00+01:00)") from None
    return value if value.tzinfo else value.astimezone()
