"""The poller role: API responses become payload events, on a schedule.

Each API source is polled every ``interval``; its cursor (the last
observation date seen, per FRED series) lives in ``ops.poll_state``. A poll
that fails after its retries is recorded as a ``failure`` run with reason
``api_error``; the other sources go on, and the failed one is tried again at
its next interval.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import db
from .backoff import Backoff
from .backoff import sleep as stop_aware_sleep
from .config import ApiSource, Config, LiveConfig
from .errors import PermanentError, Shutdown, TransientError
from .events import PayloadEvent
from .http import RetryPolicy, get_with_retries
from .landing import PAYLOADS_DIR
from .ledger import FailedRun, Ledger
from .metrics import EVENTS_PUBLISHED, POLL_ATTEMPTS, POLL_FAILURES, POLL_RATE_LIMITED
from .providers import ApiRequest, Provider, provider_for, scrub
from .publishing import Publisher

log = logging.getLogger(__name__)


class RateLimiter:
    """At least ``interval`` seconds between two requests to one provider."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[str, float] = {}
        self._clock = clock

    def wait(self, provider: str, interval: float, stop: threading.Event) -> None:
        due = self._last.get(provider, float("-inf")) + interval
        if stop_aware_sleep(due - self._clock(), stop):
            raise Shutdown()
        self._last[provider] = self._clock()


def store_payload(landing_dir: Path, source: str, body: bytes, digest: str, when: datetime) -> str:
    """Write a large body under ``_payloads/<source>/YYYY/MM/DD/`` (atomically);
    returns its landing-relative path."""
    folder = landing_dir / PAYLOADS_DIR / source / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.json"
    if not target.exists():
        staging = folder / f".{digest}.{os.getpid()}.tmp"
        staging.write_bytes(body)
        os.replace(staging, target)
    return target.relative_to(landing_dir).as_posix()


class Poller:
    def __init__(self, settings: Config | LiveConfig, publisher: Publisher, stop: threading.Event,
                 environ: Mapping[str, str] | None = None, worker: str = "poller") -> None:
        self.settings = settings
        self.publisher = publisher
        self.stop = stop
        self.environ = os.environ if environ is None else environ
        self.worker = worker
        self.rate = RateLimiter()
        config = self.config
        self.database = db.OnDemand(config.database_url, config.connect_timeout_seconds, f"ingestd-{worker}",
                                    autocommit=True)
        self.heartbeat: Callable[[], None] = lambda: None
        self.report: Callable[[str | None], None] = lambda problem: None

    @staticmethod
    def _retry_logger(source: str, endpoint: str, secrets: tuple[str, ...]) -> Callable[[int, str, float], None]:
        def on_retry(attempt: int, what: str, delay: float) -> None:
            if what.startswith("HTTP 429"):
                POLL_RATE_LIMITED.labels(source).inc()
            log.warning("API call failed; retrying", extra={
                "source": source, "step": "poll", "status": "retry", "attempt": attempt,
                "error": scrub(what, secrets), "retry_in_s": round(delay, 2), "endpoint": endpoint})
        return on_retry

    @property
    def config(self) -> Config:
        return self.settings.get() if isinstance(self.settings, LiveConfig) else self.settings

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.database.get())

    def close(self) -> None:
        self.database.drop()
        self.publisher.close()

    # -- state ---------------------------------------------------------------
    def _state(self, source: str) -> tuple[dict, datetime | None]:
        cursor, next_poll, _ = self.ledger.poll_state(source)
        return cursor, next_poll

    def _save_state(self, source: ApiSource, cursor: dict, status: str) -> None:
        next_poll = datetime.now(UTC) + timedelta(seconds=source.interval_seconds)
        self.ledger.save_poll_state(source.name, cursor, status, next_poll)

    def _record_failure(self, source: ApiSource, request: ApiRequest | None, exc: PermanentError) -> None:
        POLL_FAILURES.labels(source.name).inc()
        detail = exc.failure.detail
        summary = exc.failure.message
        if detail.get("status") and f"HTTP {detail['status']}" not in summary:
            summary = f"HTTP {detail['status']}: {summary}"
        self.ledger.record_failed_run(FailedRun(source.name, "api", summary, exc.reason, self.worker,
                                                file_path=request.endpoint if request else None))
        log.warning("poll failed", extra={"source": source.name, "step": "poll", "status": "failure",
                                          "reason": exc.reason, "detail": summary,
                                          "endpoint": request.endpoint if request else None})

    def _still_beating(self) -> bool:
        """Stop check for retry waits; the waits count as work in progress."""
        self.heartbeat()
        return self.stop.is_set()

    # -- one poll ------------------------------------------------------------
    def poll_source(self, source: ApiSource) -> bool:
        """Poll ``source`` now; True when every request succeeded."""
        provider = provider_for(source)
        cursor, _ = self._state(source.name)
        try:
            requests = provider.requests(cursor, self.environ)
        except PermanentError as exc:
            self._record_failure(source, None, exc)
            self._save_state(source, cursor, f"failure: {exc.failure.message}")
            return False
        ok = True
        for request in requests:
            records = self._fetch(provider, request)
            if records is None:
                ok = False
            else:
                cursor = provider.advance_cursor(request, records, cursor)
        self._save_state(source, cursor, "success" if ok else "failure: api_error (see ingestd runs)")
        return ok

    def _fetch(self, provider: Provider, request: ApiRequest) -> list[dict[str, Any]] | None:
        """One request: call, check, publish the payload event. Its records;
        None when it failed (recorded as a failure run)."""
        source, poller = provider.source, self.config.poller
        secrets = provider.secrets(self.environ)
        policy = RetryPolicy(max_attempts=poller.max_attempts, max_total_seconds=poller.max_retry_seconds,
                             base_seconds=poller.retry_base_seconds, timeout_seconds=poller.timeout_seconds)
        started = time.monotonic()
        try:
            self.rate.wait(provider.name, poller.interval_for(provider.name), self.stop)
            answer = get_with_retries(request.url, request.headers, policy, secrets, stop=self._still_beating,
                                      on_retry=self._retry_logger(source.name, request.endpoint, secrets))
            records = provider.check_answer(answer.body)
            event = self._payload_event(source, request, answer.status, answer.body)
            self.publisher.publish(self.publisher.topology.events_exchange, event.routing_key, event.to_json(),
                                   event.event_id)
        except PermanentError as exc:
            POLL_ATTEMPTS.labels(source.name).inc(exc.failure.detail.get("attempts", 1))
            if exc.failure.detail.get("status") == 429:
                POLL_RATE_LIMITED.labels(source.name).inc()
            self._record_failure(source, request, exc)
            return None
        except TransientError as exc:
            self._record_failure(source, request, PermanentError(
                "api_error", f"fetched, but could not publish the payload: {exc}"))
            return None
        POLL_ATTEMPTS.labels(source.name).inc(answer.attempts)
        EVENTS_PUBLISHED.labels(source.name, "payload").inc()
        self.report(None)
        log.info("payload published", extra={
            "source": source.name, "event_id": event.event_id, "step": "poll", "status": "published",
            "endpoint": request.endpoint, "records": len(records), "bytes": len(answer.body),
            "attempts": answer.attempts, "duration_ms": round((time.monotonic() - started) * 1000, 1)})
        return records

    def _payload_event(self, source: ApiSource, request: ApiRequest, status: int, body: bytes) -> PayloadEvent:
        now = datetime.now(UTC)
        digest = hashlib.sha256(body).hexdigest()
        inline = len(body) <= self.config.poller.inline_payload_bytes
        text = None
        if inline:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                inline = False
        return PayloadEvent(
            source=source.name, endpoint=request.endpoint, status_code=status, fetched_at=now.isoformat(),
            body_sha256=digest, body_size=len(body), body=text,
            body_path=None if inline else store_payload(self.config.landing_dir, source.name, body, digest, now),
            context=dict(request.context))

    # -- the role ------------------------------------------------------------
    def poll_once(self, names: list[str] | None = None) -> bool:
        sources = [s for s in self.config.api_sources if not names or s.name in names]
        results = [self.poll_source(s) for s in sources]
        return all(results)

    def run(self) -> None:
        """Poll every API source at its interval until ``stop``. Trouble with
        the database (or a bug) is logged and retried with backoff; polling
        never ends of it."""
        due: dict[str, float] = {}
        backoff = Backoff(base=1.0, cap=60.0)
        while not self.stop.is_set():
            self.heartbeat()
            if not self.publisher.connected:
                self.report(self.publisher.connect())
            try:
                self._poll_due(due)
                backoff.reset()
            except Shutdown:
                break
            except Exception as exc:  # noqa: BLE001 - database errors and the like must not end polling
                self.database.drop()
                delay = backoff.next_delay()
                log.warning("poller cannot go on; retrying", extra={
                    "step": "poll", "status": "retry", "error": f"{type(exc).__name__}: {exc}",
                    "retry_in_s": round(delay, 2)})
                stop_aware_sleep(delay, self.stop)
                continue
            next_due = min(due.values(), default=time.monotonic() + 5)
            stop_aware_sleep(max(0.05, min(5.0, next_due - time.monotonic())), self.stop)
        self.close()

    def _poll_due(self, due: dict[str, float]) -> None:
        """Poll the sources whose time has come; ``due`` (monotonic times)
        follows the configured sources, starting from ``ops.poll_state``."""
        sources = {s.name: s for s in self.config.api_sources}
        now_wall = datetime.now(UTC)
        for name in sources:
            if name not in due:
                _, next_poll = self._state(name)
                wait = (next_poll - now_wall).total_seconds() if next_poll else 0.0
                due[name] = time.monotonic() + max(0.0, wait)
        for name in [n for n in due if n not in sources]:
            del due[name]
        for name, when in sorted(due.items(), key=lambda kv: kv[1]):
            if self.stop.is_set() or time.monotonic() < when:
                continue
            self.poll_source(sources[name])
            due[name] = time.monotonic() + sources[name].interval_seconds
