"""API providers: which requests a poll makes, and what a good answer looks like.

Pure functions: a source's configuration and cursor in, requests out; a
response body in, records checked (or an ``api_error`` saying what was
wrong). The HTTP calls live in ``daemon/http.py``, the schedule in
``daemon/poller.py``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .config import SourceConfig
from .errors import PermanentError

DEFAULT_BASE_URL = {"fred": "https://api.stlouisfed.org", "valet": "https://www.bankofcanada.ca"}
# Query parameters that carry secrets, removed from every URL that is shown.
SECRET_PARAMS = {"api_key", "apikey", "key", "token", "access_token", "password", "secret"}


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
    """The URL without secret query parameters, and without any secret value."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in SECRET_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(query), netloc=parts.netloc.rsplit("@", 1)[-1]))
    for secret in secrets:
        if secret:
            clean = clean.replace(secret, "***")
    return clean


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def secrets_of(source: SourceConfig, environ: Mapping[str, str]) -> tuple[str, ...]:
    names = ([source.api_key_env] if source.api_key_env else []) + [env for _, env in source.headers_env]
    return tuple(environ[n] for n in names if environ.get(n))


def _start_date(source: SourceConfig, last_date: str | None) -> str | None:
    """First date to ask for: the last one seen minus the look-back window
    (providers revise recent values), never before ``start_date``."""
    candidates = []
    if last_date:
        try:
            candidates.append(date.fromisoformat(last_date) - timedelta(days=source.lookback_days))
        except ValueError:
            pass
    if source.start_date:
        candidates.append(date.fromisoformat(source.start_date))
    return max(candidates).isoformat() if candidates else None


def _api_key(source: SourceConfig, environ: Mapping[str, str]) -> str | None:
    if not source.api_key_env:
        return None
    key = environ.get(source.api_key_env)
    if not key:
        raise PermanentError("api_error", f"environment variable {source.api_key_env} (api_key_env) is not set",
                             source=source.name)
    return key


def build_requests(source: SourceConfig, cursor: Mapping[str, Any], environ: Mapping[str, str]) -> list[ApiRequest]:
    """The requests of one poll of ``source``, given its cursor."""
    secrets = secrets_of(source, environ)
    base = (source.base_url or DEFAULT_BASE_URL.get(source.provider or "", "")).rstrip("/")
    if source.provider == "fred":
        key = _api_key(source, environ)
        requests = []
        for series in source.series:
            params = {"series_id": series, "file_type": "json"}
            start = _start_date(source, cursor.get(series))
            if start:
                params["observation_start"] = start
            public = f"{base}/fred/series/observations?{urlencode(params)}"
            url = public + (f"&{urlencode({'api_key': key})}" if key else "")
            requests.append(ApiRequest(url, redact_endpoint(public, secrets), {}, {"series_id": series}, series))
        return requests
    if source.provider == "valet":
        path = (f"/valet/observations/group/{quote(source.group)}/json" if source.group
                else f"/valet/observations/{','.join(quote(s) for s in source.series)}/json")
        params = {}
        start = _start_date(source, cursor.get("last_date"))
        if start:
            params["start_date"] = start
        url = base + path + (f"?{urlencode(params)}" if params else "")
        return [ApiRequest(url, redact_endpoint(url, secrets))]
    if source.provider == "http_json":
        params = dict(source.params)
        key = _api_key(source, environ)
        if key:
            params["api_key"] = key
        split = urlsplit(source.url or "")
        query = parse_qsl(split.query, keep_blank_values=True) + list(params.items())
        url = urlunsplit(split._replace(query=urlencode(query)))
        headers = {}
        for header, env in source.headers_env:
            if not environ.get(env):
                raise PermanentError("api_error", f"environment variable {env} (headers_env.{header}) is not set")
            headers[header] = environ[env]
        return [ApiRequest(url, redact_endpoint(url, secrets), headers)]
    raise ValueError(f"unknown provider {source.provider!r}")


def records_at(doc: Any, records_path: str | None) -> Any:
    node = doc
    for part in (records_path or "").split(".") if records_path else []:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_answer(body: bytes, source: SourceConfig) -> list[dict[str, Any]]:
    """The records of a response body, or ``api_error`` saying what is wrong."""
    excerpt = body[:200].decode("utf-8", errors="replace")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PermanentError("api_error", f"the response is not JSON ({exc.__class__.__name__}: {exc})",
                             excerpt=excerpt) from None
    records = records_at(doc, source.records_path) if source.records_path else doc
    if not isinstance(records, list):
        where = f"at {source.records_path!r}" if source.records_path else "at the top level"
        raise PermanentError("api_error", f"the response has no array {where}", excerpt=excerpt,
                             keys=sorted(doc)[:20] if isinstance(doc, dict) else None)
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise PermanentError("api_error", f"record {bad + 1} of the response is not an object", excerpt=excerpt)
    return records


def _canonical(record: Mapping[str, Any], leave_out: tuple[str, ...]) -> str:
    body = {k: v for k, v in record.items() if k not in leave_out}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def record_identity(source: SourceConfig) -> Callable[[Mapping[str, Any]], tuple[str, str] | None] | None:
    """(record key, fingerprint of its values) for sources whose records have
    an identity, None otherwise. A record without its key fields gets None
    (it is always loaded)."""
    if source.provider == "fred":
        def fred(record):
            if not isinstance(record.get("date"), str):
                return None
            # realtime_start/end change with every call: only the value counts.
            return f"{record.get('series_id', '')}|{record['date']}", str(record.get("value"))
        return fred
    if source.provider == "valet":
        def valet(record):
            if not isinstance(record.get("d"), str):
                return None
            return record["d"], _canonical(record, ("d",))
        return valet
    if source.record_key:
        fields = source.record_key

        def generic(record):
            if any(f not in record for f in fields):
                return None
            return "|".join(json.dumps(record[f], sort_keys=True) for f in fields), _canonical(record, ())
        return generic
    return None


def advance_cursor(source: SourceConfig, request: ApiRequest, records: list[dict[str, Any]],
                   cursor: dict[str, Any]) -> dict[str, Any]:
    """The cursor after a successful answer: the last observation date seen."""
    field_name = "date" if source.provider == "fred" else "d" if source.provider == "valet" else None
    if field_name is None:
        return cursor
    dates = [r[field_name] for r in records if isinstance(r.get(field_name), str)]
    if not dates:
        return cursor
    key = request.cursor_key if source.provider == "fred" else "last_date"
    updated = dict(cursor)
    updated[key] = max([*dates, cursor.get(key) or ""])
    return updated
