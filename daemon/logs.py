"""JSON log lines on stdout, and removal of secrets from anything logged."""
from __future__ import annotations

import logging
import re
import sys
from urllib.parse import urlsplit, urlunsplit

from pythonjsonlogger.json import JsonFormatter

# Fields every step may carry (DESIGN.md): passed with ``extra=``.
LOG_FIELDS = ("run_id", "event_id", "source", "step", "status", "duration_ms")


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Send JSON lines to stdout (or ``stream``), replacing earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC, whatever the machine's zone
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pika logs every connection hiccup at ERROR with tracebacks; our own
    # reconnect messages say what matters.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def redact_url(url: str) -> str:
    """The URL without its password (``user:***@host``), for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_PASSWORD_IN_TEXT = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]*@")


def redact_text(text: str) -> str:
    """Remove passwords from URLs embedded in free text (library error messages)."""
    return _PASSWORD_IN_TEXT.sub(r"\1***@", text)
