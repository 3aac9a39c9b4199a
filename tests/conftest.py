"""Shared fixtures: real PostgreSQL and RabbitMQ, isolated per test.

Where a Docker engine runs, testcontainers starts pinned servers
(postgres:15, rabbitmq:3.10). Otherwise the tests use
INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL, or the standard local
ports; when neither answers, the tests that need them fail (never skip).

Each test gets its own database, cloned from a migrated template
(CREATE DATABASE ... TEMPLATE), and its own broker prefix; both are removed
afterwards.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pika
import psycopg2
import pytest
from psycopg2 import sql

REPO = Path(__file__).resolve().parent.parent


def _test_data() -> Path:
    """The files the tests load (tests/data/README.md): those of others kept
    in tests/data, and the samples ingestd writes itself (daemon/samples.py),
    made here, together in one folder removed when the session ends."""
    from ingestd.daemon import samples
    folder = Path(tempfile.mkdtemp(prefix="ingestd-test-data-"))
    for name in ("fred", "parquet"):
        (folder / name).symlink_to(REPO / "tests" / "data" / name, target_is_directory=True)
    samples.write_samples(folder / "fitbit", samples.FITBIT)
    samples.write_samples(folder / "boc", samples.VALET)
    return folder


TEST_DATA = _test_data()
FITBIT = TEST_DATA / "fitbit"
SHARED_DATA = TEST_DATA  # the name tests written before tests/data use
# The real files of ../shared/data (or INGESTD_TEST_SHARED_DATA) where a copy
# lies beside the repository: extra cases, made only when it is there.
_real = Path(os.environ.get("INGESTD_TEST_SHARED_DATA") or REPO.parent / "shared" / "data")
REAL_DATA = _real if (_real / "SOURCES.md").is_file() else None

# Hermetic: the user's own settings (the Quick start exports
# INGESTD_DATABASE_URL) must reach neither the tests nor the ingestd
# processes they start, which inherit this environment. INGESTD_TEST_* are
# the tests' own knobs (docs/design.md: Tests).
CLEARED_SETTINGS = sorted(name for name in os.environ
                          if name.startswith("INGESTD_") and not name.startswith("INGESTD_TEST_"))
for _name in CLEARED_SETTINGS:
    del os.environ[_name]

# Broker prefixes this session used: their queues and exchanges are deleted
# again when the session ends, after every process of every test has stopped.
USED_PREFIXES: dict[str, str] = {}


def pytest_report_header(config):
    if CLEARED_SETTINGS:
        return (f"ingestd: {', '.join(CLEARED_SETTINGS)} cleared for these tests; to use other servers on "
                "purpose set INGESTD_TEST_DATABASE_URL / INGESTD_TEST_AMQP_URL")
    return None


def pytest_terminal_summary(terminalreporter):
    from .live import REPORT
    if SERVERS:
        terminalreporter.section("servers")
        for line in SERVERS:
            terminalreporter.write_line(line)
    if REPORT:
        terminalreporter.section("live deployment figures")
        for line in REPORT:
            terminalreporter.write_line(line)


def delete_broker_names(amqp_url: str, prefix: str) -> None:
    """Delete a prefix's queues and exchanges (absent ones are no error)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in ("ingest.events", "ingest.dead", "ingest.dead.audit"):
            channel.queue_delete(prefix + name)
        for name in ("ingest.events", "ingest.dead"):
            channel.exchange_delete(prefix + name)
    finally:
        connection.close()


def pytest_sessionfinish(session, exitstatus):
    from . import live
    live.remove_everything()
    shutil.rmtree(TEST_DATA, ignore_errors=True)
    for prefix, amqp_url in list(USED_PREFIXES.items()):
        try:
            delete_broker_names(amqp_url, prefix)
        except Exception:  # noqa: BLE001 - the broker may be gone; nothing else to clean then
            pass


# Seconds a thread started during a test has, once the test and its
# fixtures are done, to end before it counts as left running: what stopping
# takes (a watchdog observer's queue wait, a health server's poll, a broker
# wait with an inactivity timeout), with room for a loaded machine.
THREAD_GRACE_SECONDS = 5.0


def _thread_allowed(thread: threading.Thread) -> bool:
    """Threads that are not ingestd's and outlive a test by their library's
    design. None today: a thread of ingestd's (roles, workers, recorder,
    health server, watcher observers, poller, a progress bar's monitor) or
    of a test's own making is never one. An entry added here says whose
    thread it is and why no caller can stop it."""
    return False


def _describe(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    what = getattr(target, "__qualname__", None) or type(thread).__qualname__
    return f"{thread.name!r} ({what}{', daemon' if thread.daemon else ''})"


def threads_left_running(before: set[threading.Thread], grace: float) -> list[threading.Thread]:
    """The threads not in ``before`` (nor allowed) still running after
    waiting up to ``grace`` seconds in all for them to end."""
    deadline = time.monotonic() + grace
    new = [t for t in threading.enumerate() if t not in before and not _thread_allowed(t)]
    for thread in new:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t for t in new if t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left_running(request):
    """Fail a test that leaves a thread running after it (and its
    fixtures) ended: whatever a test starts, it stops and joins. Threads
    started meanwhile get ``THREAD_GRACE_SECONDS`` in all to end."""
    before = set(threading.enumerate())
    yield
    left = threads_left_running(before, THREAD_GRACE_SECONDS)
    if left:
        pytest.fail(f"{request.node.nodeid} left {len(left)} thread(s) running: "
                    + ", ".join(_describe(t) for t in left), pytrace=False)


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Where the servers of this session come from, for the terminal summary.
SERVERS: list[str] = []


@pytest.fixture(scope="session")
def service_urls():
    """(database server URL without db name, AMQP URL) of real servers."""
    db_url = os.environ.get("INGESTD_TEST_DATABASE_URL")
    amqp_url = os.environ.get("INGESTD_TEST_AMQP_URL")
    containers = []
    if not (db_url and amqp_url) and _docker_engine_available():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        # The pinned official images; other names (a mirror, or the stand-ins of tests/live.py)
        # through INGESTD_TEST_POSTGRES_IMAGE / INGESTD_TEST_RABBITMQ_IMAGE.
        postgres_image = os.environ.get("INGESTD_TEST_POSTGRES_IMAGE", "postgres:15")
        rabbitmq_image = os.environ.get("INGESTD_TEST_RABBITMQ_IMAGE", "rabbitmq:3.10-management")
        if not db_url:
            pg = PostgresContainer(postgres_image).start()
            containers.append(pg)
            db_url = pg.get_connection_url(driver=None)
            SERVERS.append(f"PostgreSQL: testcontainers, {postgres_image}")
        if not amqp_url:
            mq = RabbitMqContainer(rabbitmq_image).start()
            containers.append(mq)
            amqp_url = (f"amqp://guest:guest@{mq.get_container_host_ip()}:"
                        f"{mq.get_exposed_port(5672)}/%2F")
            SERVERS.append(f"RabbitMQ: testcontainers, {rabbitmq_image}")
    db_url = db_url or "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_url = amqp_url or "amqp://guest:guest@127.0.0.1:5672/%2F"
    try:
        psycopg2.connect(db_url, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {db_url}: {exc}. Start it, or set INGESTD_TEST_DATABASE_URL.")
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"RabbitMQ is not reachable at {amqp_url}: {exc!r}. Start it, or set INGESTD_TEST_AMQP_URL.")
    yield db_url, amqp_url
    for c in containers:
        c.stop()


def _with_dbname(url: str, name: str) -> str:
    dsn = psycopg2.extensions.parse_dsn(url)
    dsn["dbname"] = name
    return psycopg2.extensions.make_dsn(**dsn)


def _admin(url: str):
    conn = psycopg2.connect(_with_dbname(url, "postgres"))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def template_database(service_urls):
    """A migrated database, the template of every test's own database."""
    from ingestd.daemon.db import migrate

    db_url, _ = service_urls
    name = f"ingestd_tpl_{uuid.uuid4().hex[:8]}"
    url = _with_dbname(db_url, name)
    migrate(url)
    yield name
    drop_database(db_url, name)


def clone_database(db_url: str, template: str, kind: str = "t") -> tuple[str, str]:
    """(name, URL) of a new database cloned from the migrated template."""
    name = f"ingestd_{kind}_{uuid.uuid4().hex[:10]}"
    conn = _admin(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(template)))
    finally:
        conn.close()
    return name, _with_dbname(db_url, name)


def drop_database(db_url: str, name: str) -> None:
    conn = _admin(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


@pytest.fixture
def database_url(service_urls, template_database):
    db_url, _ = service_urls
    name, url = clone_database(db_url, template_database)
    yield url
    drop_database(db_url, name)


@pytest.fixture
def amqp_url(service_urls):
    return service_urls[1]


@pytest.fixture
def prefix(amqp_url):
    """A broker prefix of this test's own; its queues and exchanges are
    deleted after the test (whose processes stop first: ``procs`` depends on
    this fixture) and again when the session ends."""
    value = f"t{uuid.uuid4().hex[:8]}."
    USED_PREFIXES[value] = amqp_url
    yield value
    delete_broker_names(amqp_url, value)


@pytest.fixture
def db(database_url):
    """A connection to the test's database (autocommit), for assertions."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    yield conn
    conn.close()


def query(conn, statement, params=None):
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


SOURCES_TOML = """
[[sources]]
name = "daily_activity"
format = "csv"
schema = "{schemas}/daily_activity.json"
max_invalid_ratio = 0.1

[[sources]]
name = "sleep_day"
format = "csv"
schema = "{schemas}/sleep_day.json"

[[sources]]
name = "hourly_steps"
format = "csv"
schema = "{schemas}/hourly_steps.json"

[[sources]]
name = "heart_rate"
format = "csv"
schema = "{schemas}/heart_rate.json"

[[sources]]
name = "events_jsonl"
format = "jsonl"

[[sources]]
name = "events_json"
format = "json"

[[sources]]
name = "wrapped_json"
format = "json"
records_path = "data.items"

[[sources]]
name = "parquet_files"
format = "parquet"
"""


def config_text(landing: Path, database_url: str, amqp_url: str, prefix: str, *, landing_extra: str = "",
                broker_extra: str = "", extra: str = "", sources: str | None = None, health_port: int = 0) -> str:
    """The ingestd.toml of a test: short settle and rescan times, its own
    database and broker prefix; ``sources`` defaults to ``SOURCES_TOML``."""
    return textwrap.dedent(f"""
        [landing]
        dir = "{landing}"
        settle_seconds = 0.3
        rescan_seconds = 2
        {landing_extra}
        [database]
        url = "{database_url}"
        [broker]
        url = "{amqp_url}"
        prefix = "{prefix}"
        delivery_limit = 5
        {broker_extra}
        [consumer]
        stop_timeout_seconds = 20
        [health]
        port = {health_port}
        {extra}
    """) + (sources if sources is not None else SOURCES_TOML.format(schemas=REPO / "schemas"))


@pytest.fixture
def write_config(tmp_path, database_url, amqp_url, prefix):
    """Write an ingestd.toml for this test; returns its path."""

    def write(extra: str = "", landing_extra: str = "", sources: str | None = None, health_port: int = 0) -> Path:
        path = tmp_path / "ingestd.toml"
        path.write_text(config_text(tmp_path / "data_lake", database_url, amqp_url, prefix,
                                    landing_extra=landing_extra, extra=extra, sources=sources,
                                    health_port=health_port))
        (tmp_path / "data_lake").mkdir(exist_ok=True)
        return path

    return write


@pytest.fixture
def config(write_config):
    from ingestd.daemon.config import load_config
    return load_config(write_config())


@pytest.fixture
def procs(tmp_path, prefix):
    """Start ``ingestd <args>`` subprocesses (logs in tmp_path); stopped with
    SIGTERM (then SIGKILL) after the test, before its broker names are
    deleted (a running process would declare them again)."""
    import signal
    started = []

    def start(config_path, *args, env=None):
        log = open(tmp_path / f"{args[0]}-{len(started)}.log", "wb")
        proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), *args), stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def ingest_contexts():
    """Make consumer contexts (``make(config, worker_name)``) that record
    what they would publish; closed after the test."""
    from ingestd.consumers.context import IngestContext

    from .doubles import RecordingPublisher
    made = []

    def make(config, name="test-worker"):
        context = IngestContext(config, RecordingPublisher(), name)
        made.append(context)
        return context
    yield make
    for context in made:
        context.close()


# The four Fitbit files of the example sources: (file name, data rows).
FITBIT_FILES = {"daily_activity": ("dailyActivity_merged.csv", 940), "sleep_day": ("sleepDay_merged.csv", 413),
                "hourly_steps": ("hourlySteps_merged.csv", 22099),
                "heart_rate": ("heartrate_seconds_merged_excerpt.csv", 49)}


def one_row_csv(record_id: int) -> bytes:
    """A daily-activity CSV of one real Fitbit row, with an Id of its own
    (distinct bytes: a file per id, none skipped as already loaded)."""
    header, first = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:2]
    return header + b"\r\n" + b"%d,%s" % (record_id, first.split(b",", 1)[1])


def drop_file(landing: Path, relative: str, data: bytes | Path) -> Path:
    """Drop a file the recommended way: write a temporary name, rename into place."""
    target = landing / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".drop-{uuid.uuid4().hex[:8]}.tmp"  # short: the name itself may be 255 bytes
    tmp.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    os.replace(tmp, target)
    return target


def ingestd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingestd.daemon", *args]


@pytest.fixture
def setup(write_config):
    """A test's config path, its config, and an IngestContext on it (closed after)."""
    from ingestd.consumers.ingest import IngestContext
    from ingestd.daemon.broker import Publisher, Topology
    from ingestd.daemon.config import load_config
    path = write_config()
    config = load_config(path)
    ctx = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), "t")
    yield path, config, ctx
    ctx.close()
