"""JSON log lines on stdout, and removal of secrets from anything logged."""
from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

# Fields every step may carry (DESIGN.md): passed with ``extra=``.
LOG_FIELDS = ("run_id", "event_id", "source", "step", "status", "duration_ms")


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Send JSON lines to stdout (or ``stream``), replacing earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        RedactingJsonFormatter(
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


# Every form a secret takes in a connection string, and in the text of
# errors that quote one:
#   scheme://user:secret@host, //user:secret@host (a URL missing its colon),
#   user:secret@host after a space or quote;
#   password=secret in a key=value DSN (quoted or not) or a URL query;
#   api_key=, token= and the like in URLs.
_USERINFO = re.compile(r"""((?:^|[\s"'(=/,;])[^\s"'/:@]*:)(?!//)[^\s"']*@""")
_SECRET_PARAMETER = re.compile(
    r"""((?<![A-Za-z0-9_])(?:ssl)?(?:password|passwd|pwd)\s*=\s*|"""
    r"""(?<![A-Za-z0-9_])(?:api_?key|apikey|access_token|token|secret)=)"""
    r"""('(?:[^'\\]|\\.)*'|[^\s&;'"]*)""", re.IGNORECASE)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` without the secrets of any connection string in it.

    One function for logs, CLI output, errors and ``/readyz``: URLs with a
    password (also malformed ones such as ``amqp//user:pw@host``), key=value
    DSNs (``host=db password='s e'``) and secret query parameters.
    """
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _SECRET_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)


# The names earlier code used; both redact everything ``redact`` does.
redact_url = redact
redact_text = redact


class RedactingJsonFormatter(JsonFormatter):
    """JSON log lines with secrets removed from the whole line, whatever
    field (message, error, traceback) carried them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
