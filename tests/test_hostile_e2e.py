"""Hostile input end to end, through `ingestd run`: one case for each kind of
attack or accident that once lost a file, changed a value, moved what it
should not or printed a secret. Each asserts the outcome, the rows, and
what is on disk afterwards.

Most cases share one running daemon (sources j: json, l: jsonl, c: csv);
the ones that restart it or need their own settings start their own.
"""
import gzip
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

import pika
import psycopg2
import pytest

from .conftest import USED_PREFIXES, clone_database, delete_broker_names, drop_database, drop_file, ingestd_cmd, query
from .conftest import config_text as shared_config_text
from .test_e2e import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SOURCES = """
[[sources]]
name = "j"
format = "json"

[[sources]]
name = "l"
format = "jsonl"

[[sources]]
name = "c"
format = "csv"
"""


def config_text(landing: Path, database_url: str, amqp_url: str, prefix: str, extra: str = "",
                health_port: int = 0) -> str:
    """The config of these tests' daemon: three sources without schemas;
    ``extra`` goes into [broker]."""
    return shared_config_text(landing, database_url, amqp_url, prefix, broker_extra=extra, sources=SOURCES,
                              health_port=health_port)


class Daemon:
    """A running `ingestd run` and what the tests ask of it."""

    def __init__(self, folder: Path, database_url: str, amqp_url: str, prefix: str) -> None:
        self.folder = folder
        self.landing = folder / "data_lake"
        self.landing.mkdir(parents=True, exist_ok=True)
        self.config = folder / "ingestd.toml"
        self.config.write_text(config_text(self.landing, database_url, amqp_url, prefix))
        self.database_url = database_url
        self.amqp_url = amqp_url
        self.prefix = prefix
        USED_PREFIXES[prefix] = amqp_url
        self.log = folder / "run.log"
        self.proc = None
        self.db = psycopg2.connect(database_url)
        self.db.autocommit = True

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(ingestd_cmd("--config", str(self.config), "run"), stdout=log,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def drop(self, relative: str | bytes, data: bytes) -> Path:
        if isinstance(relative, bytes):
            relative = os.fsdecode(relative)
        return drop_file(self.landing, relative, data)

    def runs_of(self, shown_path: str) -> list[tuple]:
        return query(self.db, "SELECT status, reason, rows_total, error_summary FROM ops.pipeline_runs"
                              " WHERE file_path = %s AND status <> 'running' ORDER BY finished_at", (shown_path,))

    def outcome(self, shown_path: str, count: int = 1, timeout: float = 60) -> tuple:
        """The last of the first ``count`` finished runs of a file."""
        runs = wait_for(lambda: (r := self.runs_of(shown_path)) and len(r) >= count and r, timeout=timeout)
        return runs[-1]

    def dead_letters(self, reason: str | None = None) -> list[tuple]:
        return query(self.db, "SELECT id, reason, file_path, error FROM ops.dead_letters"
                              + (" WHERE reason = %s" if reason else "") + " ORDER BY id",
                     (reason,) if reason else None)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(ingestd_cmd("--config", str(self.config), *args), capture_output=True, timeout=120)

    def publish_raw(self, body: bytes, routing_key: str = "file.c") -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(f"{self.prefix}ingest.events", routing_key, body,
                              pika.BasicProperties(delivery_mode=2, message_id=str(uuid.uuid4())), mandatory=True)
        connection.close()


@pytest.fixture(scope="module")
def daemon(service_urls, template_database, tmp_path_factory):
    """One `ingestd run` for the cases that do not restart it."""
    name, url = clone_database(service_urls[0], template_database, "h")
    prefix = f"h{uuid.uuid4().hex[:8]}."
    running = Daemon(tmp_path_factory.mktemp("hostile"), url, service_urls[1], prefix)
    running.start()
    yield running
    running.stop()
    running.db.close()
    delete_broker_names(service_urls[1], prefix)
    drop_database(service_urls[0], name)


@pytest.fixture
def own_daemon(service_urls, template_database, tmp_path):
    """A daemon of the test's own (started by the test), removed after."""
    made = []

    def make() -> Daemon:
        name, url = clone_database(service_urls[0], template_database, "h")
        running = Daemon(tmp_path / f"d{len(made)}", url, service_urls[1], f"h{uuid.uuid4().hex[:8]}.")
        made.append((name, running))
        return running

    yield make
    for name, running in made:
        running.stop()
        running.db.close()
        delete_broker_names(service_urls[1], running.prefix)
        drop_database(service_urls[0], name)


def quarantined(daemon: Daemon, source: str) -> list[str]:
    folder = daemon.landing / "_quarantine" / source
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def archived(daemon: Daemon, source: str) -> list[str]:
    folder = daemon.landing / "_archive" / source
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# 1. Nesting: bounded before any parser builds state, plain or gzipped.
def test_100_kb_of_brackets_is_a_parse_error_plain_or_gzipped_and_the_daemon_goes_on(daemon):
    daemon.drop("j/brackets.json", b"[" * 100_000)
    daemon.drop("j/brackets.json.gz", gzip.compress(b"[" * 100_000 + b" "))
    daemon.drop("l/brackets.jsonl", b'{"a":' + b"[" * 100_000 + b"\n")
    for path in ("j/brackets.json", "j/brackets.json.gz", "l/brackets.jsonl"):
        status, reason, _, error = daemon.outcome(path)
        assert (status, reason) == ("failure", "parse_error"), error
    assert "nested deeper than 128 levels" in daemon.outcome("l/brackets.jsonl")[3]
    assert quarantined(daemon, "j") >= ["brackets.json", "brackets.json.gz"]
    daemon.drop("j/after.json", b'[{"id": 1}]')
    assert daemon.outcome("j/after.json")[:3] == ("success", None, 1)
    assert daemon.proc.poll() is None


# 2. Leading whitespace: every record loads.
def test_a_document_after_leading_whitespace_loads_every_record(daemon):
    daemon.drop("j/spaces.json", b" " * 64 + b'[{"id":1},{"id":2}]')
    daemon.drop("j/newlines.json", b"\n" * 200 + b'[{"id":3}]')
    assert daemon.outcome("j/spaces.json")[:3] == ("success", None, 2)
    assert daemon.outcome("j/newlines.json")[:3] == ("success", None, 1)
    assert query(daemon.db, "SELECT raw_data->>'id' FROM bronze.j WHERE file_path IN ('j/spaces.json',"
                            " 'j/newlines.json') ORDER BY 1") == [("1",), ("2",), ("3",)]
    assert {"spaces.json", "newlines.json"} <= set(archived(daemon, "j"))


# 3. Not a document: refused, like an empty file.
@pytest.mark.parametrize("relative,data", [("j/space.json", b" "), ("j/bom.json", b"\xef\xbb\xbf"),
                                           ("j/formfeed.json", b"[\f]"), ("l/space.jsonl", b" \n"),
                                           ("c/bom.csv", b"\xef\xbb\xbf")])
def test_a_file_that_holds_no_document_is_a_parse_error(daemon, relative, data):
    daemon.drop(relative, data)
    status, reason, _, _ = daemon.outcome(relative)
    assert (status, reason) == ("failure", "parse_error")
    assert Path(relative).name in quarantined(daemon, relative.split("/")[0])


def reference(text: str):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# 4. Values: exactly as written, or refused with the record and a reason.
def test_numbers_and_strings_are_stored_exactly_as_the_file_says(daemon):
    line = '{"n": 123456789012345678901234567890, "d": 12345678901234567.89, "e": 1.50, "x": 1e400}'
    daemon.drop("l/numbers.jsonl", line.encode() + b"\n")
    document = '[{"big": 9223372036854775808, "neg": -99999999999999999999999}, {"p": "C:\\\\u0000dir"}]'
    daemon.drop("j/numbers.json", document.encode())
    assert daemon.outcome("l/numbers.jsonl")[:3] == ("success", None, 1)
    assert daemon.outcome("j/numbers.json")[:3] == ("success", None, 2)
    stored = query(daemon.db, "SELECT raw_data::text FROM bronze.l WHERE file_path = 'l/numbers.jsonl'")[0][0]
    assert reference(stored) == reference(line)
    assert query(daemon.db, "SELECT raw_data->>'n', raw_data->>'d', raw_data->>'e' FROM bronze.l"
                            " WHERE file_path = 'l/numbers.jsonl'") == [
        ("123456789012345678901234567890", "12345678901234567.89", "1.50")]
    rows = query(daemon.db, "SELECT raw_data::text FROM bronze.j WHERE file_path = 'j/numbers.json'"
                            " ORDER BY record_number")
    assert [reference(r[0]) for r in rows] == reference(document)
    assert reference(rows[1][0]) == {"p": "C:\\u0000dir"}  # a backslash, then the text u0000


@pytest.mark.parametrize("relative,data,reason,words", [
    ("j/surrogate.json", b'[{"ok": 1}, {"s": "\\ud800"}]', "encoding_error", "record 2"),
    ("j/surrogate2.json", b'[{"s": "\\uD888\\u1234"}]', "encoding_error", "lone UTF-16 surrogate"),
    ("j/nul.json", b'[{"s": "a\\u0000b"}]', "load_error", "U+0000"),
    ("j/latin1.json", '[{"name": "Zoë"}]'.encode("latin-1"), "encoding_error", "not valid UTF-8"),
    ("j/numeric.json", b'[{"tiny": 1e-20000}]', "load_error", "numeric"),
])
def test_what_jsonb_cannot_hold_is_refused_with_the_record_and_a_reason(daemon, relative, data, reason, words):
    daemon.drop(relative, data)
    status, got, rows, error = daemon.outcome(relative)
    assert (status, got) == ("failure", reason), error
    assert words in error
    # bronze.j exists only once a load into j committed: run alone, this test may meet none
    if query(daemon.db, "SELECT to_regclass('bronze.j')") != [(None,)]:
        assert query(daemon.db, "SELECT count(*) FROM bronze.j WHERE file_path = %s", (relative,)) == [(0,)]


# 5. A file name that is not UTF-8: loaded, shown with escapes; a bad one recorded and replayable.
def test_a_file_name_that_is_not_utf8_loads_and_a_bad_one_is_dead_lettered_and_replayed(daemon):
    daemon.drop(b"c/caf\xe9.csv", b"a\n1\n")
    assert daemon.outcome("c/caf\\xe9.csv")[:3] == ("success", None, 1)
    assert query(daemon.db, "SELECT file_path FROM bronze.c WHERE file_path LIKE 'c/caf%'") == [("c/caf\\xe9.csv",)]
    assert os.fsdecode(b"caf\xe9.csv") in archived(daemon, "c")
    daemon.drop(b"c/bad\xe9.csv", b"a,b\n1\n")
    status, reason, _, _ = daemon.outcome("c/bad\\xe9.csv")
    assert (status, reason) == ("failure", "parse_error")
    (dead_id, _, shown, _), = [d for d in daemon.dead_letters("parse_error") if "bad" in (d[2] or "")]
    assert shown.startswith("_quarantine/c/bad\\xe9")
    held = daemon.landing / "_quarantine" / "c" / os.fsdecode(b"bad\xe9.csv")
    assert held.exists()
    held.write_bytes(b"a,b\n1,2\n")  # fixed where it lies; the replay loads it from there
    replay = daemon.cli("dlq", "replay", "--id", str(dead_id), "--wait", "60")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert b"1 loaded" in replay.stdout
    assert query(daemon.db, "SELECT raw_data FROM bronze.c WHERE raw_data ? 'b'") == [({"a": "1", "b": "2"},)]


def file_event(source: str, path: str, size: int = 1, mtime_ns: int = 1) -> bytes:
    return json.dumps({"version": 1, "event_id": str(uuid.uuid4()), "kind": "file", "source": source,
                       "created_at": "2026-01-01T00:00:00+00:00", "path": path, "size": size,
                       "mtime_ns": mtime_ns}).encode()


# 6. Crafted events: refused as bad_event, nothing moved.
def test_crafted_events_move_nothing_and_are_each_one_bad_event(daemon):
    daemon.drop("c/keep/inner.csv.part", b"a\n1\n")  # an ignored file
    (daemon.landing / "_archive").mkdir(exist_ok=True)
    before = daemon.dead_letters("bad_event")
    crafted = [("c", "c"), ("_no_source", "_archive"), ("j", "c/keep/inner.csv.part"), ("c", "c/keep"),
               ("c", "c/x\x00.csv"), ("c", "../etc/passwd"), ("c", "_quarantine/c/anything.csv")]
    for source, path in crafted:
        daemon.publish_raw(file_event(source, path))
    wait_for(lambda: len(daemon.dead_letters("bad_event")) >= len(before) + len(crafted))
    time.sleep(1.0)  # a crash loop would add delivery_limit letters meanwhile
    assert len(daemon.dead_letters("bad_event")) == len(before) + len(crafted)
    assert daemon.dead_letters("delivery_limit") == []
    assert (daemon.landing / "c" / "keep" / "inner.csv.part").exists()
    assert (daemon.landing / "c").is_dir() and (daemon.landing / "_archive").is_dir()
    assert not (daemon.landing / "_quarantine" / "_no_source").exists()
    assert daemon.proc.poll() is None


# 8. A file cut while it loads: skipped, and the newer event decides.
def test_a_file_truncated_while_it_loads_is_skipped_then_judged_by_its_newer_event(daemon):
    line = b'{"Id": 1503960366, "ActivityDate": "4/12/2016", "TotalSteps": 13162, "TotalDistance": 8.5}\n'
    path = daemon.drop("l/cut.jsonl", line * 400_000)
    wait_for(lambda: query(daemon.db, "SELECT count(*) FROM ops.pipeline_runs WHERE file_path = 'l/cut.jsonl'"
                                      " AND status = 'running'")[0][0], interval=0.02)
    with open(path, "r+b") as fh:
        fh.truncate(len(line) * 1000 + 7)  # mid-line
    runs = wait_for(lambda: (r := daemon.runs_of("l/cut.jsonl")) and len(r) >= 2 and r, timeout=90)
    assert runs[0][0] == "skipped" and "changed" in runs[0][3]
    assert runs[1][:2] == ("failure", "parse_error")
    cut = [d for d in daemon.dead_letters() if (d[2] or "").startswith("_quarantine/l/cut")]
    assert len(cut) == 1
    if query(daemon.db, "SELECT to_regclass('bronze.l')") != [(None,)]:
        assert query(daemon.db, "SELECT count(*) FROM bronze.l WHERE file_path = 'l/cut.jsonl'") == [(0,)]


# 11. A second event for a file already dead-lettered: skipped, not a second dead letter.
def test_a_second_event_for_a_file_already_dead_lettered_is_skipped(daemon):
    path = daemon.drop("c/twice.csv", b"a,b\n1\n")
    st = path.stat()
    assert daemon.outcome("c/twice.csv")[:2] == ("failure", "parse_error")
    daemon.publish_raw(file_event("c", "c/twice.csv", st.st_size, st.st_mtime_ns))
    status, reason, _, error = daemon.outcome("c/twice.csv", count=2)
    assert (status, reason) == ("skipped", None) and "dead-lettered as #" in error
    assert len([d for d in daemon.dead_letters() if "twice" in (d[2] or "")]) == 1


# 12. Control characters in names never reach the terminal raw.
def test_an_escape_sequence_in_a_file_name_is_escaped_in_human_output(daemon):
    name = "c/\x1b]0;pwned\x07\x1b[2J.csv"
    daemon.drop(name, b"a,b\n1\n")
    assert daemon.outcome(name)[:2] == ("failure", "parse_error")
    dead_id = [d for d in daemon.dead_letters() if "pwned" in (d[2] or "")][0][0]
    for args in (("runs",), ("dlq", "list"), ("dlq", "show", str(dead_id)), ("status",)):
        shown = daemon.cli(*args)
        assert b"\x1b" not in shown.stdout + shown.stderr, args
        assert b"\x07" not in shown.stdout + shown.stderr, args
    assert b"\\x1b]0;pwned" in daemon.cli("dlq", "show", str(dead_id)).stdout


# 7. Symlinks out of the zone: quarantined as links, once, whatever the restarts.
def test_a_symlink_out_of_the_zone_is_quarantined_once_and_its_target_untouched(own_daemon, tmp_path):
    daemon = own_daemon()
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"secret,data\n1,2\n")
    (daemon.landing / "c").mkdir()
    (daemon.landing / "c" / "link.csv").symlink_to(outside)
    (daemon.landing / "c" / "dirlink").symlink_to(tmp_path)
    daemon.start()
    wait_for(lambda: len(daemon.dead_letters("path_rejected")) >= 2)
    held = daemon.landing / "_quarantine" / "c"
    assert (held / "link.csv").is_symlink() and (held / "dirlink").is_symlink()
    assert not (daemon.landing / "c" / "link.csv").exists()
    assert outside.read_bytes() == b"secret,data\n1,2\n"
    daemon.stop()
    daemon.start()
    time.sleep(6)  # the start scan and two rescans
    assert len(daemon.dead_letters("path_rejected")) == 2
    assert query(daemon.db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'") == [(0,)]


# 9. Secrets: never printed, whatever the form of the connection string.
def test_database_passwords_are_never_printed_in_any_form(own_daemon, service_urls):
    daemon = own_daemon()
    dsn = psycopg2.extensions.parse_dsn(daemon.database_url)
    keyvalue = (f"host={dsn['host']} port={dsn.get('port', 5432)} user={dsn['user']} dbname={dsn['dbname']}"
                f" password='Se cret1'")
    url = (f"postgresql://{dsn['user']}:Secret2@{dsn['host']}:{dsn.get('port', 5432)}/{dsn['dbname']}"
           f"?password=Secret3&connect_timeout=5")
    secrets = (b"Se cret1", b"Secret2", b"Secret3")
    for form in (keyvalue, url):
        daemon.config.write_text(config_text(daemon.landing, form, daemon.amqp_url, daemon.prefix,
                                             health_port=0))
        outputs = [daemon.cli(*args) for args in (("check",), ("status",), ("runs",), ("dlq", "list"))]
        assert outputs[0].returncode == 0, outputs[0].stdout + outputs[0].stderr
        for out in outputs:
            assert not any(s in out.stdout + out.stderr for s in secrets), out.args
    port = 19000 + os.getpid() % 1000
    daemon.config.write_text(config_text(daemon.landing, url, daemon.amqp_url, daemon.prefix, health_port=port))
    daemon.start()
    ready = wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz"))
    daemon.stop()
    assert not any(s in ready for s in secrets)
    assert b"ingestd starting" in daemon.log.read_bytes()
    assert not any(s in daemon.log.read_bytes() for s in secrets)
    for broken, key in ((f"postgres//u:Secret4@{dsn['host']}/x", "database.url"),):
        daemon.config.write_text(config_text(daemon.landing, broken, daemon.amqp_url, daemon.prefix))
        out = daemon.cli("check")
        assert out.returncode == 2 and key.encode() in out.stderr
        assert b"Secret4" not in out.stdout + out.stderr and b"Traceback" not in out.stderr
    daemon.config.write_text(config_text(daemon.landing, daemon.database_url,
                                         "amqp//guest:Secret5@127.0.0.1:5672/%2F", daemon.prefix))
    out = daemon.cli("check")
    assert out.returncode == 2 and b"broker.url" in out.stderr and b"Secret5" not in out.stdout + out.stderr


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        return exc.read()
    except OSError:
        return None


# 10. An idle dead-letter connection stays alive: no false interrupted runs.
@pytest.mark.slow
def test_a_dead_letter_after_a_long_idle_spell_is_recorded_at_once(own_daemon):
    daemon = own_daemon()
    daemon.config.write_text(config_text(daemon.landing, daemon.database_url, daemon.amqp_url, daemon.prefix,
                                         extra="heartbeat_seconds = 5"))
    daemon.start()
    daemon.drop("c/first.csv", b"a,b\n1\n")
    assert daemon.outcome("c/first.csv")[:2] == ("failure", "parse_error")
    time.sleep(25)  # five heartbeat intervals without a message on the dead-letter connection
    daemon.drop("c/second.csv", b"a,b\n1\n")
    assert daemon.outcome("c/second.csv")[:2] == ("failure", "parse_error")
    assert query(daemon.db, "SELECT count(*) FROM ops.pipeline_runs WHERE error_summary LIKE 'interrupted%'") == [(0,)]
    assert len(daemon.dead_letters("parse_error")) == 2
    assert b"transient failure" not in daemon.log.read_bytes()
