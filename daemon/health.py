"""Liveness, readiness and metrics over HTTP: ``/healthz``, ``/readyz``, ``/metrics``.

Roles report a heartbeat from the loop that does their work, and the state
of their broker connection; readiness also asks the database (cached for a
moment) when a role that needs it runs in this process.
"""
from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .logs import redact
from .metrics import REGISTRY

log = logging.getLogger(__name__)


class Health:
    def __init__(self, stale_after: float = 60.0, database_check: Callable[[], str | None] | None = None) -> None:
        self.stale_after = stale_after
        self._beats: dict[str, float] = {}
        self._ready: dict[str, str | None] = {}  # component -> None when ready, else the reason
        self._lock = threading.Lock()
        self._database_check = database_check
        self._database_cache: tuple[float, str | None] = (0.0, "not checked yet")

    def beat(self, role: str) -> None:
        self._beats[role] = time.monotonic()

    def set_ready(self, component: str, problem: str | None = None) -> None:
        with self._lock:
            self._ready[component] = problem

    def alive(self) -> tuple[bool, list[str]]:
        now = time.monotonic()
        stale = sorted(r for r, t in self._beats.items() if now - t > self.stale_after)
        return not stale, stale

    def database_problem(self) -> str | None:
        if self._database_check is None:
            return None
        checked, problem = self._database_cache
        if time.monotonic() - checked > 2.0:
            problem = self._database_check()
            self._database_cache = (time.monotonic(), problem)
        return problem

    def ready(self) -> tuple[bool, list[str]]:
        with self._lock:
            problems = [f"{c}: {p}" for c, p in sorted(self._ready.items()) if p]
            waiting = not self._ready
        database = self.database_problem()
        if database:
            problems.append(f"database: {database}")
        if waiting:
            problems.append("starting")
        return not problems, problems


def database_checker(url: str) -> Callable[[], str | None]:
    def check() -> str | None:
        from .db import connect
        from .errors import IngestError
        try:
            conn = connect(url, timeout=2, application_name="ingestd-readyz")
        except IngestError as exc:  # unreachable, or a URL the server refuses: not ready, said why
            return str(exc)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return None
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
    return check


def bind_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (an IPv4 or IPv6 address, or a name).

    Raises OSError whose ``strerror`` says why in one line: the host does not
    resolve, or the system refuses the port (in use, privileged)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"the host does not resolve ({exc.strerror})") from None
    except (UnicodeError, TypeError, ValueError, OverflowError) as exc:  # what the resolver cannot even take
        raise OSError(errno.EINVAL, f"not a host name or address ({exc})") from None
    server_class = type("HealthHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
    try:
        return server_class(address, handler)
    except OSError as exc:
        why = {errno.EADDRINUSE: "the port is in use (another process, or another unit given the same port)",
               errno.EACCES: "the system refuses this port to this user (ports below 1024 need privileges)",
               errno.EADDRNOTAVAIL: "the address is not one of this machine's"}.get(exc.errno or 0, exc.strerror)
        raise OSError(exc.errno, why) from None


class HealthServer:
    """Serves the three endpoints on ``host:port`` from a daemon thread."""

    def __init__(self, health: Health, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
        outer = health

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, problems = outer.alive() if path == "/healthz" else outer.ready()
                    key = "stale" if path == "/healthz" else "problems"
                    body = json.dumps({"status": "ok" if ok else "fail",
                                       key: [redact(p) for p in problems]}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

        self.httpd = bind_server(host, port, Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("health and metrics served", extra={"step": "health", "status": "listening", "port": self.port})

    def stop(self) -> None:
        """Stop serving and wait for the server's thread (``shutdown`` waits
        for its loop; the thread ends just after)."""
        if self.thread.ident is not None:
            self.httpd.shutdown()
            self.thread.join(timeout=10)
        self.httpd.server_close()


def sample_queues(config, stop: threading.Event, every: float = 10.0) -> None:
    """Keep the queue-depth gauges current (a passive declare every ``every`` s)."""
    from .broker import CONNECTION_ERRORS, Topology, open_connection
    from .errors import TransientError
    from .metrics import QUEUE_CONSUMERS, QUEUE_MESSAGES

    topology = Topology.for_config(config)
    connection = None
    while not stop.is_set():
        try:
            if connection is None or not connection.is_open:
                connection = open_connection(config.amqp_url, config.heartbeat_seconds,
                                             topology.connection_name("metrics"))
            channel = connection.channel()
            for label, queue in (("events", topology.events_queue), ("dead", topology.dead_queue)):
                result = channel.queue_declare(queue, passive=True)
                QUEUE_MESSAGES.labels(label).set(result.method.message_count)
                QUEUE_CONSUMERS.labels(label).set(result.method.consumer_count)
            channel.close()
        except (TransientError, *CONNECTION_ERRORS):
            connection = None
        stop.wait(every)
    if connection is not None and connection.is_open:
        try:
            connection.close()
        except CONNECTION_ERRORS:
            pass  # lost meanwhile: nothing to close


def sample_dead_letters(config, stop: threading.Event, every: float = 30.0) -> None:
    """Keep ``ingestd_dead_letters_waiting`` current from the ops tables (sources that are not
    configured count as ``_unknown``, so that the series stay bounded)."""
    import psycopg2

    from .db import connect
    from .errors import TransientError
    from .ledger import Ledger
    from .metrics import set_dead_letters_waiting, source_label

    conn = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-metrics")
                conn.autocommit = True
            counts: dict[tuple[str, str], int] = {}
            for (source, reason), count in Ledger(conn).waiting_by_source_reason().items():
                key = (source_label(source, config.sources), reason)
                counts[key] = counts.get(key, 0) + count
            set_dead_letters_waiting(counts)
        except (TransientError, psycopg2.Error):
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(every)
    if conn is not None:
        conn.close()
