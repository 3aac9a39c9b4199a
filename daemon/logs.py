"""JSON log lines on stdout, and removal of secrets from anything logged."""
from __future__ import annotations

import logging
import os
import re
import sys
from datetime import UTC, datetime
from urllib.parse import unquote_plus

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


# A parameter (a URL's query, a key=value DSN, a log field, a table of
# params) is secret by its name alone, case and separators ignored: when the
# name contains one of SECRET_FRAGMENTS, or one of its words ends in "key" or
# "keys" (api_key, apiKey, X-Api-Key, privatekey; not keyword), or is one of
# SECRET_WORDS (short words that are parts of innocent ones: signal, design).
# The rule errs on the side of hiding: `author` is hidden too.
SECRET_FRAGMENTS = ("token", "secret", "passw", "passphrase", "pwd", "auth", "credential", "signature",
                    "session", "cookie", "bearer", "jwt", "hmac", "private")
SECRET_WORDS = ("sig", "pass", "otp", "sid")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
REDACTED = "***"


def is_secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` (percent-encoded or not) holds a
    secret: the one rule of every redaction (logs, ``config show``, the
    endpoint an API event carries)."""
    words = [w.lower() for w in _WORDS.findall(unquote_plus(name))]
    joined = "".join(words)
    return (any(f in joined for f in SECRET_FRAGMENTS) or joined.endswith(("key", "keys"))
            or any(w in SECRET_WORDS or w.endswith(("key", "keys")) for w in words))


# user:secret@host in a URL (scheme://user:secret@host, //user:secret@host, a
# URL missing its colon), or after a space or quote: the secret runs to the
# last @ before a space, whatever it holds (quotes, /, :, @).
_SCHEME_USERINFO = re.compile(r"""((?<![\w+.-])[A-Za-z][\w+.-]*://[^\s"'/:@]*:)[^\s]*@""")
_USERINFO = re.compile(r"""((?:^|[\s"'(=/,;])[^\s"'/:@]*:)(?!//)[^\s]*@""")
# The user part of an http(s) URL without a password is a token (https://TOKEN@host).
_HTTP_USER = re.compile(r"(?i)(\bhttps?://)[^\s/?#@:\"']+@")
# name=value: a URL's query parameter, a DSN's keyword, a log field.
_ASSIGNMENT = re.compile(r"""(?<![\w.%+\-\[\]~])([\w.%+\-\[\]~]+)(\s*=\s*)""")
# Characters after a quote that make it the end of the text quoting a value.
_CLOSERS = " \t\r\n,;:)]}"


def redact(text: str) -> str:
    """``text`` (a log line, an error, any output) without the secrets of
    any connection string or URL in it.

    Hidden whole, never in part: the password of a URL (also in malformed
    ones such as ``amqp//user:pw@host``), the user part of an http(s) URL
    without one, and the value of every parameter whose name is secret
    (``is_secret_name``): a URL's query, a key=value DSN (quoted or not:
    ``host=db password='s e'``), a log field. A value in free text ends at
    a space, at ``&`` in a URL's query, or at a quote that closes the text
    quoting it; a password that holds spaces is hidden only where the text is
    known to be one URL (``redact_url``).
    """
    if not text:
        return text
    if "," in text and _URL_LIST.search(text):
        # A list of broker URLs (broker.url of a cluster): each on its own, so that the
        # password of one does not swallow the host of the next.
        return ",".join(redact(part) for part in _URL_LIST.split(text))
    text = _SCHEME_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _HTTP_USER.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _redact_assignments(text)


def _redact_assignments(text: str) -> str:
    """``text`` with the value of every ``name=value`` of a secret name hidden."""
    out, done = [], 0
    for found in _ASSIGNMENT.finditer(text):
        if found.start() < done or not is_secret_name(found.group(1)):
            continue
        in_query = found.start() > 0 and text[found.start() - 1] in "?&;"
        out += [text[done:found.end()], REDACTED]
        done = _value_end(text, found.end(), in_query, found.start())
    return "".join(out) + text[done:]


def _value_end(text: str, at: int, in_query: bool, name_at: int) -> int:
    """Where the value starting at ``at`` ends: a quoted one (a DSN's
    ``'...'``, backslash escapes) at its closing quote; a bare one at a
    space, at ``&`` in a query, or at a quote that closes one opened before
    the name (the text quoting the value)."""
    if not in_query and at < len(text) and text[at] == "'":
        i = at + 1
        while i < len(text) and text[i] != "'":
            i += 2 if text[i] == "\\" else 1
        return min(i + 1, len(text))
    i = at
    while i < len(text):
        char = text[i]
        if char.isspace() or (in_query and char == "&"):
            break
        if char in "'\"" and (i + 1 == len(text) or text[i + 1] in _CLOSERS) and char in text[:name_at]:
            break
        # A backslash escapes the next character in a DSN; in a query only a
        # quote (as JSON writes one).
        i += 2 if char == "\\" and (not in_query or text[i + 1:i + 2] == '"') else 1
    return min(i, len(text))


_URL_LIST = re.compile(r",\s*(?=amqps?://)")
_SCHEME = re.compile(r"[A-Za-z][\w+.-]*://")


def redact_url(url: str) -> str:
    """``url``, known to be one URL, connection string or comma-separated
    list of broker URLs (never free text), as it may be shown: the password
    up to the last ``@`` (an http(s) URL's whole user part), and the value
    of every secret query parameter, hidden whole whatever they hold, spaces
    included."""
    if "," in url and _URL_LIST.search(url):
        return ",".join(redact_url(part) for part in _URL_LIST.split(url))
    if not _SCHEME.match(url):  # a key=value DSN
        return redact(url)
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    user, colon, _ = rest[:at].partition(":")
    # A user name holds no / ? # (nor does a token standing for one): an @
    # after one of them is in the path or query (?email=a@b), not the end of
    # a user part. A password holds anything up to the last @.
    if at >= 0 and not any(c in user for c in "/?#"):
        http = scheme.lower() in ("http", "https")
        rest = (REDACTED if http else user + (colon and ":" + REDACTED)) + "@" + rest[at + 1:]
    path, question, query = rest.partition("?")
    return scheme + sep + path + question + "&".join(_redact_piece(piece) for piece in query.split("&"))


def _redact_piece(piece: str) -> str:
    """One ``name=value`` of a query, hidden from the first secret name on
    (also one after a ``;``, which some servers take as a separator)."""
    start = 0
    for part in piece.split(";"):
        name, equals, _ = part.partition("=")
        if equals and is_secret_name(name):
            return piece[:start + len(name)] + "=" + REDACTED
        start += len(part) + 1
    return piece


# The name earlier code used for free text.
redact_text = redact


class RedactingJsonFormatter(JsonFormatter):
    """JSON log lines with secrets removed from the whole line, whatever
    field (message, error, traceback) carried them."""

    def process_log_record(self, log_data):
        # Each value before it is JSON-encoded (quotes and backslashes still
        # as they were); the whole line once more after, for what the encoder
        # turned into text itself (an exception given as a field).
        return {key: _redact_value(value) for key, value in log_data.items()}

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return value


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
        # Each value redacted as it is, before it is quoted; the line once more after.
        fields = " ".join(f"{key}={_text(redact(str(value)))}" for key, value in vars(record).items()
                          if key not in _RECORD_FIELDS and value is not None)
        line = f"{when} {record.levelname:<7} {redact(record.getMessage())}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text(value) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text
