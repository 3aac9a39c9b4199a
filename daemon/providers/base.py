"""What every API provider shares: the request type, the answer check,
secret handling, and the ``Provider`` interface.

A provider turns an API source's configuration and cursor into the requests
of one poll, checks an answer, says which records it already gave (their
identity) and moves the cursor. It does no I/O: the HTTP calls live in
``daemon/http.py``, the schedule in ``daemon/poller.py``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ingestd.daemon.errors import PermanentError
from ingestd.daemon.logs import is_secret_name, redact
from ingestd.daemon.sources import ApiSource

# A value the config gives a secret parameter is also scrubbed from answers and
# errors (an API that echoes the request) when it is at least this long: a
# shorter one would hide every occurrence of a common text, and is no secret.
MIN_SCRUBBED = 4
Identity = tuple[str, str]
# (x-expected: what a refused value is said not to be; daemon/config_errors.py)
ENV_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "x-expected": "the name of an environment variable (letters, digits and _, not starting with a digit)"}
SERIES_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$",
             "x-expected": "a series id of 1 to 64 letters, digits, '_', '.' or '-'"}
HTTP_URL = {"type": "string", "pattern": "^https?://", "x-expected": "an http:// or https:// URL"}
# Keys of providers of dated observations: where to ask, and from when.
DATED_OPTIONS: dict[str, Any] = {
    "series": {"type": "array", "minItems": 1, "items": SERIES_ID},
    "base_url": HTTP_URL,
    "lookback_days": {"type": "integer", "minimum": 0, "maximum": 3660},
    "start_date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "x-expected": "a date, YYYY-MM-DD"},
}


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP GET of a poll. ``url`` and ``headers`` may hold secrets and are
    never logged; ``endpoint`` is the URL without them."""

    url: str
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # Added to every record of the answer (FRED observations lack their series id).
    context: Mapping[str, Any] = field(default_factory=dict)
    # Cursor key this request advances (a FRED series id), or "" for the source.
    cursor_key: str = ""


def redact_endpoint(url: str, secrets: tuple[str, ...] = ()) -> str:
    """The URL as an event, a table or a log may hold it: without its user
    part, without any query parameter whose name is secret
    (``logs.is_secret_name``) or whose value holds one (``a=1;token=x``),
    and without any of ``secrets``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not is_secret_name(k) and redact(v) == v]
    return scrub(redact(urlunsplit(parts._replace(query=urlencode(query), netloc=parts.netloc.rsplit("@", 1)[-1]))),
                 secrets)


def configured_secrets(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The secret values a source's config holds itself: the password of its
    ``url`` or ``base_url``, their secret query parameters, the values of its
    secret ``params``."""
    found: list[str] = []
    for key in ("url", "base_url"):
        try:
            parts = urlsplit(str(settings.get(key) or ""))
            # A user part without a password is a token (https://TOKEN@host).
            found.append((parts.password if parts.password is not None else parts.username) or "")
        except ValueError:  # a host the URL cannot hold: the request fails before anything is sent
            continue
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if is_secret_name(k)]
    found += [str(v) for k, v in dict(settings.get("params") or {}).items() if is_secret_name(k)]
    return tuple(sorted({v for v in found if len(v) >= MIN_SCRUBBED}, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def records_at(doc: Any, records_path: str | None) -> Any:
    node = doc
    for part in records_path.split(".") if records_path else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def canonical(record: Mapping[str, Any], leave_out: tuple[str, ...] = ()) -> str:
    """A fingerprint of a record's values (less ``leave_out``)."""
    body = {k: v for k, v in record.items() if k not in leave_out}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Provider:
    """One kind of API. Subclasses set ``name``, the JSON Schema of the
    source keys they own (``options``, ``required``), their
    ``min_request_interval`` if the API limits its rate, and override
    ``requests``; the rest has defaults. ``providers.register`` makes one
    known to the config and the poller."""

    name: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    default_records_path: ClassVar[str | None] = None
    # JSON Schema of the [[sources]] keys this provider reads, and which of
    # them a source must set (a list of alternatives: one of them complete).
    options: ClassVar[dict[str, Any]] = {}
    required: ClassVar[list[list[str]]] = [[]]
    # Keys that name environment variables holding secrets.
    secret_env_keys: ClassVar[tuple[str, ...]] = ()
    # Seconds between two requests to this API, at least, across its sources
    # (``[poller] min_request_interval`` overrides it by provider name).
    min_request_interval: ClassVar[float] = 0.0

    def __init__(self, source: ApiSource) -> None:
        self.source = source
        self.settings = source.options

    # -- requests ------------------------------------------------------------
    def requests(self, cursor: Mapping[str, Any], environ: Mapping[str, str]) -> list[ApiRequest]:
        raise NotImplementedError

    def base_url(self) -> str:
        return str(self.settings.get("base_url") or self.default_base_url).rstrip("/")

    def secret_env(self) -> list[str]:
        """Names of the environment variables that hold this source's secrets."""
        return [str(self.settings["api_key_env"])] if self.settings.get("api_key_env") else []

    def secrets(self, environ: Mapping[str, str]) -> tuple[str, ...]:
        """The values to scrub from every text a poll of this source produces:
        its keys from the environment, and the secrets its config holds."""
        return tuple(environ[n] for n in self.secret_env() if environ.get(n)) + configured_secrets(self.settings)

    def api_key(self, environ: Mapping[str, str]) -> str | None:
        name = self.settings.get("api_key_env")
        if not name:
            return None
        key = environ.get(name)
        if not key:
            raise PermanentError("api_error", f"environment variable {name} (api_key_env) is not set",
                                 source=self.source.name)
        return key

    def start_date(self, last_date: str | None) -> str | None:
        """First date to ask for: the last one seen minus the look-back window
        (providers revise recent values), never before ``start_date``."""
        candidates = []
        if last_date:
            try:
                candidates.append(date.fromisoformat(last_date) - timedelta(days=self.lookback_days()))
            except ValueError:
                pass
        if self.settings.get("start_date"):
            candidates.append(date.fromisoformat(self.settings["start_date"]))
        return max(candidates).isoformat() if candidates else None

    def lookback_days(self) -> int:
        return int(self.settings.get("lookback_days", 0))

    # -- answers -------------------------------------------------------------
    def check_answer(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a response body, or ``api_error`` saying what is wrong."""
        excerpt = body[:200].decode("utf-8", errors="replace")
        records_path = self.source.records_path
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PermanentError("api_error", f"the response is not JSON ({exc.__class__.__name__}: {exc})",
                                 excerpt=excerpt) from None
        records = records_at(doc, records_path) if records_path else doc
        if not isinstance(records, list):
            where = f"at {records_path!r}" if records_path else "at the top level"
            raise PermanentError("api_error", f"the response has no array {where}", excerpt=excerpt,
                                 keys=sorted(doc)[:20] if isinstance(doc, dict) else None)
        bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
        if bad is not None:
            raise PermanentError("api_error", f"record {bad + 1} of the response is not an object", excerpt=excerpt)
        return records

    @property
    def has_identity(self) -> bool:
        """Whether records have an identity (repeats of one are not loaded again)."""
        return False

    def identity(self, record: Mapping[str, Any]) -> Identity | None:
        """(record key, fingerprint of its values); None for a record without
        its key fields (it is always loaded)."""
        return None

    def advance_cursor(self, request: ApiRequest, records: list[dict[str, Any]],
                       cursor: dict[str, Any]) -> dict[str, Any]:
        """The cursor after a successful answer."""
        return cursor

    @staticmethod
    def latest(records: list[dict[str, Any]], field_name: str, cursor: dict[str, Any], key: str) -> dict[str, Any]:
        """``cursor`` with ``key`` moved to the latest ``field_name`` date of ``records``."""
        dates = [r[field_name] for r in records if isinstance(r.get(field_name), str)]
        if not dates:
            return cursor
        return {**cursor, key: max([*dates, cursor.get(key) or ""])}
