"""JSON log lines on stdout, and removal of secrets from anything logged."""
from __future__ import annotations

import logging
import os
import re
import sys
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

# Fields every step may carry (DESIGN.md): passed with ``extra=``.
LOG_FIELDS = ("run_id", "event_id", "source", "step", "status", "duration_ms")


ENV_LOG_FORMAT = "INGESTD_LOG_FORMAT"


def setup_logging(level: str = "INFO", stream=None, log_format: str | None = None) -> None:
    """Log to stdout (or ``stream``), replacing earlier handlers: JSON lines
    for machines, or text lines for people; by default text when the stream
    is a terminal, else JSON (``INGESTD_LOG_FORMAT`` or ``--log-format``
    decide otherwise)."""
    stream = stream or sys.stdout
    chosen = log_format or os.environ.get(ENV_LOG_FORMAT) or ("text" if _isatty(stream) else "json")
    handler = logging.StreamHandler(stream)
    if chosen == "text":
        handler.setFormatter(RedactingTextFormatter())
    else:
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
    if "," in text and _URL_LIST.search(text):
        # A list of broker URLs (broker.url of a cluster): each on its own, so that the
        # password of one does not swallow the host of the next.
        return ",".join(redact(part) for part in _URL_LIST.split(text))
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _SECRET_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)


_URL_LIST = re.compile(r",\s*(?=amqps?://)")


# The names earlier code used; both redact everything ``redact`` does.
redact_url = redact
redact_text = redact


class RedactingJsonFormatter(JsonFormatter):
    """JSON log lines with secrets removed from the whole line, whatever
    field (message, error, traceback) carried them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# Attributes every LogRecord has; the rest came with ``extra=`` and are shown.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class RedactingTextFormatter(logging.Formatter):
    """One line for people: time (UTC, with its zone), level, message, then
    the fields as key=value; secrets removed."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC).strftime("%Y-%m-%d %H:%M:%S%z")
        fields = " ".join(f"{key}={_text(value)}" for key, value in vars(record).items()
                          if key not in _RECORD_FIELDS and value is not None)
        line = f"{when} {record.levelname:<7} {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text(value) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text
