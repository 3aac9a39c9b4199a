"""The long-running roles and how they start: ``ingestd run``, ``watch``,
``consume``, ``poll`` (and ``migrate``, which they do first).

Start-up checks that retrying cannot cure (a login refused, a landing folder
that cannot be written) stop the start with their fix (``StartupError``);
servers not answering yet are waited for.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import __version__
from .commands import Command, always
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    REASONS,
    NotPermittedError,
    Shutdown,
    StartupError,
    TransientError,
)
from .logs import redact_url

if TYPE_CHECKING:
    from .broker import Publisher
    from .children import ParentLink
    from .config import Config
    from .health import Health, HealthServer
    from .poller import Poller
    from .runner import Supervisor
    from .watcher import Watcher

log = logging.getLogger("ingestd")
SWITCH_INTERVAL_SECONDS = 0.001


def cmd_migrate(config, args) -> int:
    from .db import migrate

    applied = migrate(config.database_url, config.connect_timeout_seconds)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; up to date"))
    return EXIT_OK


def _migrate_with_retry(config, stop: threading.Event) -> None:
    """Migrate, waiting out an unreachable database; a refusal (login, role,
    permission) stops the start with its fix."""
    from .backoff import keep_trying, log_retry
    from .db import migrate

    def attempt() -> None:
        try:
            migrate(config.database_url, config.connect_timeout_seconds)
        except NotPermittedError as exc:
            raise StartupError(f"{exc}; fix: {exc.fix}") from None
    keep_trying(attempt, stop=stop, errors=(TransientError,),
                on_retry=log_retry(logging.getLogger(__name__), "migrate failed, retrying", step="migrate"))


def _check_broker_access(config) -> None:
    """One connection at start: a refusal (login, virtual host) stops the
    start with its fix; an unreachable broker is left to the roles, which
    retry (files wait in the landing zone meanwhile)."""
    from .broker import open_connection

    try:
        open_connection(config.amqp_url, config.heartbeat_seconds, "ingestd-start").close()
    except NotPermittedError as exc:
        raise StartupError(f"{exc}; fix: {exc.fix}") from None
    except TransientError as exc:
        log.warning("broker not reachable yet; the roles keep trying",
                    extra={"step": "start", "status": "retry", "error": str(exc)})


def _prepare_landing(config) -> None:
    try:
        config.landing_dir.mkdir(parents=True, exist_ok=True)
        for name in config.sources:
            (config.landing_dir / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise StartupError(f"landing folder {config.landing_dir}: {exc.strerror} ({exc.filename}); fix: create it "
                           f"and give this user ({_user()}) write access, e.g. "
                           f"{_chown_fix(config.landing_dir)}") from None
    if not os.access(config.landing_dir, os.W_OK | os.X_OK):
        raise StartupError(f"landing folder {config.landing_dir} is not writable by this user ({_user()}): loaded "
                           f"files move to _archive/ and failed ones to _quarantine/ there; fix: "
                           f"{_chown_fix(config.landing_dir)} (or chmod u+w)")


def _user() -> str:
    import pwd
    try:
        return f"{pwd.getpwuid(os.geteuid()).pw_name}, uid {os.geteuid()}"
    except KeyError:
        return f"uid {os.geteuid()}"


def _chown_fix(folder) -> str:
    """The chown that fixes ``folder``, by numbers: in a container the user's name means nothing on
    the host, where the mounted folder is owned."""
    fix = f"chown -R {os.geteuid()}:{os.getegid()} {folder}"
    if Path("/run/.containerenv").exists() or Path("/.dockerenv").exists():
        fix += (" on the host, for the folder mounted there, or run the container as the folder's owner "
                "(docker compose: LANDING_OWNER in .env)")
    return fix


def cmd_run(config, args) -> int:
    options = ["--log-level", logging.getLevelName(logging.getLogger().level)]
    if args.log_format:
        options += ["--log-format", args.log_format]
    return run_roles(config, watch=True, consumers=args.workers or config.workers, poll=bool(config.api_sources),
                     processes=None if args.threads else options)


def cmd_poll(config, args) -> int:
    if not config.api_sources and args.once:
        print("ingestd poll: no API sources (kind = \"api\") in the config", file=sys.stderr)
        return EXIT_USAGE
    if not config.api_sources:
        # As a service the poller idles until API sources appear in the
        # (re-read) config, rather than failing and being restarted in a loop.
        log.warning("no API sources configured yet; the poller waits for the config to gain some",
                    extra={"step": "poll", "status": "idle"})
    unknown = sorted(set(args.sources) - {s.name for s in config.api_sources})
    if unknown:
        print(f"ingestd poll: not API sources of this config: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    if not args.once:
        if args.sources:
            print("ingestd poll: naming sources needs --once", file=sys.stderr)
            return EXIT_USAGE
        return run_roles(config, watch=False, consumers=0, poll=True)
    from .broker import Publisher, Topology
    from .db import migrate
    from .poller import Poller

    migrate(config.database_url, config.connect_timeout_seconds)
    poller = Poller(config, Publisher(config.amqp_url, Topology.for_config(config),
                                      config.heartbeat_seconds, "poller"), threading.Event())
    try:
        ok = poller.poll_once(args.sources or None)
    finally:
        poller.close()
    for source in [s for s in config.api_sources if not args.sources or s.name in args.sources]:
        print(f"{source.name}: {_last_status(config, source.name)}")
    return EXIT_OK if ok else EXIT_FAILED


def _last_status(config, source: str) -> str:
    from .db import connect
    from .ledger import Ledger

    conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-poll")
    try:
        _, next_poll, last_status = Ledger(conn).poll_state(source)
    finally:
        conn.close()
    return "never polled" if next_poll is None else f"{last_status} (next poll {next_poll:%Y-%m-%d %H:%M:%S %Z})"


def cmd_watch(config, args) -> int:
    return run_roles(config, watch=True, consumers=0)


def cmd_consume(config, args) -> int:
    from .children import ParentLink

    try:
        link = ParentLink.from_environment()
    except ValueError as exc:
        print(f"ingestd consume: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if link is not None:
        return run_child(config, link)
    return run_roles(config, watch=False, consumers=args.workers or config.workers)

def run_roles(config: Config, watch: bool, consumers: int, poll: bool = False,
              processes: list[str] | None = None) -> int:
    """Run the watcher, ``consumers`` consumer workers and the poller, as
    asked, until a signal; the process's exit status. The workers are
    threads of this process, or with ``processes`` (the options of their
    command line) child processes (daemon/children.py)."""
    # The roles are threads that mostly wait on sockets. A thread whose
    # answer has arrived waits for the interpreter lock until the holder
    # lets go, by default up to 5 ms: a convoy that a burst of small files
    # (several round trips each) pays on every step. 1 ms: 763 -> 892
    # files/s for 10,000 small files, large files as fast (docs/performance.md).
    from .health import Health, database_checker
    from .runner import Supervisor

    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    needs_database = bool(consumers or poll)
    health = Health(database_check=database_checker(config.database_url) if needs_database else None)
    # The handlers first: a signal from here on asks for the stop, which the finally below
    # answers by removing the metrics folder (a signal's default action would leave it).
    supervisor = Supervisor(health)
    supervisor.install_signal_handlers()
    if consumers and processes is not None:
        # The consumer processes get the parent-death signal (daemon/children.py). Ignored here,
        # and so from their first instant (an ignored signal stays ignored across exec) until
        # their handler is set: one sent by hand, to this process or to a child still starting,
        # ends neither.
        from .children import PARENT_DEATH_SIGNAL
        signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_IGN)
    metrics_dir = Path(tempfile.mkdtemp(prefix="ingestd-metrics-")) if consumers and processes is not None else None
    try:
        server = _health_server(config, health, metrics_dir)
        if server is False:
            return EXIT_USAGE
        _log_start(config, watch, consumers, poll, health_on=server is not None, processes=metrics_dir is not None)
        if server is not None:
            server.start()
        try:
            try:
                _prepare_landing(config)
                if needs_database:
                    _migrate_with_retry(config, supervisor.stop)
                _check_broker_access(config)
            except Shutdown:
                return EXIT_OK
            _set_source_gauges(config, watch, consumers)
            roles = _Roles(config, supervisor, health)
            if poll:
                roles.start_poller()
            if watch:
                roles.start_watcher()
            if consumers:
                roles.start_consumer_services()
                if metrics_dir is not None and processes is not None:
                    roles.start_consumer_processes(consumers, metrics_dir, processes)
                else:
                    roles.start_workers(consumers)
            return supervisor.wait(join_timeout=config.stop_timeout_seconds + 5)
        finally:
            if server is not None:
                server.stop()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _health_server(config: Config, health: Health, metrics_dir: Path | None) -> HealthServer | None | Literal[False]:
    """The server of health and metrics (None when the port is 0); False when it cannot listen (said why)."""
    from .health import HealthServer
    from .metrics import registry_with_children

    if not config.health_port:
        return None
    try:
        return HealthServer(health, config.health_host, config.health_port, registry_with_children(metrics_dir))
    except OSError as exc:
        print(f"ingestd: cannot serve health and metrics on {config.health_host}:{config.health_port}: "
              f"{exc.strerror or exc}; set [health] host and port (or INGESTD_HEALTH_HOST, INGESTD_HEALTH_PORT;"
              " port 0 turns it off)", file=sys.stderr)
        return False


def run_child(config: Config, link: ParentLink) -> int:
    """One consumer worker of an ``ingestd run`` (daemon/children.py): no health server, no
    systemd, no migration; it reports to the parent over ``link`` and stops when the parent
    asks or is gone."""
    from .children import LINK_ENV, METRICS_ENV
    from .health import Health
    from .runner import Supervisor

    os.environ.pop(LINK_ENV, None)  # nothing this process starts is a child of the parent
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    health = Health()
    supervisor = Supervisor(health)
    supervisor.install_signal_handlers()
    if not link.die_with_parent(supervisor.request_stop_from_signal):
        # The parent died while this process started: the metrics folder is removed by the last
        # child out, which may be this one.
        link.hold_metrics_folder(os.environ.get(METRICS_ENV))
        link.leave_metrics_folder(os.environ.get(METRICS_ENV))
        return EXIT_OK
    link.hold_metrics_folder(os.environ.get(METRICS_ENV))
    log.info("consumer process starting", extra={"step": "start", "status": "starting", "version": __version__,
                                                 "parent_pid": link.parent_pid})
    supervisor.start("parent-link", lambda: link.serve(health, supervisor.stop, supervisor.request_stop))
    _Roles(config, supervisor, health).start_workers(1)
    status = supervisor.wait(join_timeout=config.stop_timeout_seconds + 5)
    link.leave_metrics_folder(os.environ.get(METRICS_ENV))
    return status


def _set_source_gauges(config: Config, watch: bool, consumers: int) -> None:
    """Metrics known at start: the sources' expected intervals, the landing folder's disk (the
    watcher), and each source's last success as the database has it (the consumers)."""
    from .metrics import set_source_gauges, start_source_series, watch_landing_disk
    if watch:
        watch_landing_disk(config.landing_dir)
    import psycopg2

    from .db import connect
    from .ledger import Ledger

    last = None
    if consumers:
        try:
            conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-metrics")
            try:
                last = Ledger(conn).last_successes(list(config.sources))
            finally:
                conn.close()
        except (TransientError, psycopg2.Error) as exc:  # the gauge waits for this process's first success
            log.warning("last successes not read for the metrics", extra={"step": "start", "error": str(exc)})
    set_source_gauges(config.sources.values(), last)
    if consumers:
        start_source_series(config.sources.values(), REASONS)


def _log_start(config: Config, watch: bool, consumers: int, poll: bool, health_on: bool,
               processes: bool = False) -> None:
    log.info("ingestd starting", extra={
        "step": "start", "status": "starting", "version": __version__, "watcher": watch, "consumers": consumers,
        "consumer_processes": processes,
        "poller": poll, "config": str(config.path), "landing_dir": str(config.landing_dir),
        "sources": sorted(config.sources), "database": redact_url(config.database_url),
        "database_from": config.origin("database.url"), "broker": redact_url(config.amqp_url),
        "broker_from": config.origin("broker.url"), "prefix": config.prefix,
        "health": f"{config.health_host}:{config.health_port}" if health_on else "off"})
    if consumers:
        from ingestd.consumers.validation import log_validation_plans
        log_validation_plans(config.sources.values())


class _Roles:
    """Starts each role in its thread, with its heartbeat and readiness."""

    def __init__(self, config: Config, supervisor: Supervisor, health: Health) -> None:
        from .broker import Topology
        from .config import LiveConfig

        self.config = config
        self.supervisor = supervisor
        self.health = health
        self.topology = Topology.for_config(config)
        self.live = LiveConfig(config)

    def reporter(self, component: str) -> Callable[[str | None], None]:
        self.health.set_ready(component, "connecting")
        return lambda problem: self.health.set_ready(component, problem)

    def publisher(self, role: str) -> Publisher:
        from .broker import Publisher

        return Publisher(self.config.amqp_url, self.topology, self.config.heartbeat_seconds, role)

    def start_poller(self) -> None:
        from .poller import Poller
        self._start_publishing("poller", lambda publisher: Poller(self.live, publisher, self.supervisor.stop))

    def start_watcher(self) -> None:
        from .watcher import Watcher
        self._start_publishing("watcher", lambda publisher: Watcher(self.config, publisher, self.supervisor.stop))

    def _start_publishing(self, name: str, make: Callable[[Publisher], Poller | Watcher]) -> None:
        """A role that publishes events: its own publisher, made in its thread."""
        report = self.reporter(f"broker ({name})")

        def role() -> None:
            worker = make(self.publisher(name))
            worker.heartbeat = lambda: self.health.beat(name)
            worker.report = report
            worker.run()
        self.supervisor.start(name, role)

    def start_consumer_services(self) -> None:
        """What runs once beside the consumers: the dead-letter recorder, the samplers of the
        queue and dead-letter gauges, and partition maintenance."""
        from ingestd.consumers.recorder import DeadLetterRecorder

        from .health import sample_dead_letters, sample_queues
        from .metrics import start_source_series
        from .partition_maintenance import maintenance_loop
        config, stop = self.config, self.supervisor.stop
        self.live.on_reload.append(lambda fresh: start_source_series(fresh.sources.values(), REASONS))
        self.supervisor.start("recorder", DeadLetterRecorder(config, stop).run)
        self.supervisor.start("queue-sampler", lambda: sample_queues(config, stop))
        self.supervisor.start("dead-letter-sampler", lambda: sample_dead_letters(config, stop))
        by = f"{os.uname().nodename}-{os.getpid()}"
        self.supervisor.start("partitions", lambda: maintenance_loop(
            lambda: self.live.get().sources.values(), config.database_url, config.connect_timeout_seconds, stop, by))

    def start_workers(self, count: int) -> None:
        """``count`` consumer workers, threads of this process."""
        from ingestd.consumers.worker import ConsumerWorker

        for n in range(1, count + 1):
            worker = ConsumerWorker(self.config, f"{os.uname().nodename}-{os.getpid()}-c{n}", self.supervisor.stop,
                                    live=self.live)
            worker.heartbeat = (lambda role: lambda: self.health.beat(role))(f"consumer-{n}")
            worker.report = self.reporter(f"broker (consumer-{n})")
            self.supervisor.start(f"consumer-{n}", worker.run)

    def start_consumer_processes(self, count: int, metrics_dir: Path, options: list[str]) -> None:
        """``count`` consumer workers, each a child process, started and tended by one thread."""
        from .children import ConsumerProcesses

        children = ConsumerProcesses(self.config, count, self.health, self.supervisor.stop, metrics_dir, options)
        self.supervisor.on_force.append(children.kill_all)
        self.supervisor.on_force.append(lambda: shutil.rmtree(metrics_dir, ignore_errors=True))
        self.supervisor.start("children", children.run)


def _workers_argument(parser) -> None:
    parser.add_argument("--workers", type=int, metavar="N", help="consumer workers (default: [consumer] workers)")


def _run_arguments(parser) -> None:
    _workers_argument(parser)
    parser.add_argument("--threads", action="store_true",
                        help="consumer workers as threads of this one process, not as processes of their own "
                             "(less memory, slower on bursts of small files; e.g. for debugging)")


def _poll_arguments(parser) -> None:
    parser.add_argument("--once", action="store_true", help="poll now, once, and exit")
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="only these API sources (with --once)")


COMMANDS = [
    Command("migrate", help="create the database if needed and apply sql/ migrations",
            description="Apply the numbered SQL migrations (idempotent; safe to run concurrently).",
            handler=cmd_migrate),
    Command("run", help="watcher and consumers under one command",
            description="Run the watcher (and the poller) and N consumer workers under one command (the simple "
                        "VM case): each worker is a child process (ingestd consume) that this one starts, "
                        "restarts and stops; --threads keeps them in this process. Applies migrations first.",
            handler=cmd_run, add_arguments=_run_arguments, long_running=always),
    Command("watch", help="the watcher role only",
            description="Watch the landing folder and publish an event for each complete file.",
            handler=cmd_watch, long_running=always),
    Command("consume", help="consumer workers only",
            description="Consume events and load them into bronze tables. Applies migrations first.",
            handler=cmd_consume, add_arguments=_workers_argument, long_running=always),
    Command("poll", help="the API poller role",
            description="Poll the API sources (kind = \"api\") at their intervals and publish each "
                        "answer as a payload event. With --once, poll now and exit: 0 when every "
                        "poll succeeded, 1 otherwise (for cron and for testing).",
            handler=cmd_poll, add_arguments=_poll_arguments, long_running=lambda args: not args.once),
]
