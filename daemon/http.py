"""HTTP GET with retries: backoff with jitter on timeouts, connection errors,
429 and 5xx, honouring Retry-After, capped in attempts and in total time."""
from __future__ import annotations

import email.utils
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import __version__
from .backoff import compute_backoff
from .backoff import sleep as stop_aware_sleep
from .errors import PermanentError, Shutdown
from .providers import scrub

USER_AGENT = f"ingestd/{__version__}"
MAX_BODY_BYTES = 512 << 20


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    max_total_seconds: float = 120.0
    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    attempts: int


class _Retry(Exception):
    def __init__(self, what: str, status: int | None = None, retry_after: float | None = None,
                 excerpt: str | None = None) -> None:
        super().__init__(what)
        self.status, self.retry_after, self.excerpt = status, retry_after, excerpt


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now or time.time()))


def _excerpt(body: bytes, secrets: tuple[str, ...]) -> str:
    return scrub(body[:300].decode("utf-8", errors="replace"), secrets).strip()


def _get_once(url: str, headers: Mapping[str, str], timeout: float, secrets: tuple[str, ...]) -> Answer:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                                                   **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked in config
            body = response.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise PermanentError("too_large", f"response larger than {MAX_BODY_BYTES} bytes")
            expected = response.headers.get("Content-Length")
            if expected and expected.isdigit() and int(expected) != len(body):
                # A bounded read does not raise on a cut connection: compare.
                raise _Retry(f"truncated body: {len(body)} of {expected} bytes")
            return Answer(response.status, body, 1)
    except urllib.error.HTTPError as exc:
        body = exc.read(4096) if exc.fp else b""
        if exc.code == 429 or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code}", exc.code, retry_after_seconds(exc.headers.get("Retry-After")),
                         _excerpt(body, secrets)) from None
        raise PermanentError("api_error", f"HTTP {exc.code} {exc.reason}", status=exc.code,
                             excerpt=_excerpt(body, secrets)) from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        text = scrub(f"{type(exc).__name__}: {reason}", secrets)
        raise _Retry(text) from None


def get_with_retries(url: str, headers: Mapping[str, str], policy: RetryPolicy, secrets: tuple[str, ...] = (),
                     stop: Callable[[], bool] = lambda: False,
                     on_retry: Callable[[int, str, float], None] = lambda attempt, what, delay: None) -> Answer:
    """GET ``url``. Returns the answer of the first success; raises
    ``PermanentError(api_error)`` with the status and a body excerpt once the
    attempts or the time budget are spent, or at once for a 4xx other than 429."""
    started = time.monotonic()
    last: _Retry | None = None
    for attempt in range(1, policy.max_attempts + 1):
        try:
            answer = _get_once(url, headers, policy.timeout_seconds, secrets)
            return Answer(answer.status, answer.body, attempt)
        except _Retry as exc:
            last = exc
        if attempt == policy.max_attempts:
            break
        delay = compute_backoff(attempt - 1, base=policy.base_seconds, cap=policy.cap_seconds)
        if last.retry_after is not None:
            delay = max(delay, last.retry_after)
        remaining = policy.max_total_seconds - (time.monotonic() - started)
        if delay > remaining:
            if last.retry_after is not None and last.retry_after > remaining:
                last = _Retry(f"{last} with Retry-After {last.retry_after:g} s beyond the retry budget",
                              last.status, last.retry_after, last.excerpt)
            break
        on_retry(attempt, str(last), delay)
        if stop_aware_sleep(delay, stop):
            raise Shutdown()
    assert last is not None
    detail = {"attempts": attempt, "status": last.status, "excerpt": last.excerpt}
    message = f"gave up after {attempt} attempt(s) in {time.monotonic() - started:.1f} s: {last}"
    if last.excerpt:
        message += f": {last.excerpt[:120]}"
    raise PermanentError("api_error", message, **{k: v for k, v in detail.items() if v is not None})
