"""The consumer's handling of one event, against the real PostgreSQL and RabbitMQ."""
import hashlib
import json
import os

import pika
import pytest

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.events import FileEvent

from .conftest import FITBIT, SHARED_DATA, drop_file, query

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(config):
    publisher = Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit))
    context = IngestContext(config, publisher, "test-worker")
    yield context
    context.close()


def event_for(config, relative, trigger="file"):
    st = os.lstat(config.landing_dir / relative)
    return FileEvent(source=relative.split("/")[0] if "/" in relative else "_no_source", path=relative,
                     size=st.st_size, mtime_ns=st.st_mtime_ns, trigger=trigger)


def ingest(ctx, relative):
    return ingest_message(ctx, event_for(ctx.config, relative).to_json())


def dead_queue_bodies(config):
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    ch = conn.channel()
    bodies = []
    while True:
        method, props, body = ch.basic_get(Topology(config.prefix).dead_queue, auto_ack=True)
        if method is None:
            break
        bodies.append((props.headers or {}, body))
    conn.close()
    return bodies


def test_real_file_loads_with_manifest_run_and_archive(ctx, config, db):
    drop_file(config.landing_dir, "daily_activity/dailyActivity_merged.csv", FITBIT / "dailyActivity_merged.csv")
    outcome = ingest(ctx, "daily_activity/dailyActivity_merged.csv")
    assert outcome.status == "success" and outcome.rows == 940
    assert query(db, "SELECT count(*), count(DISTINCT record_number), min(record_number), max(record_number)"
                     " FROM bronze.daily_activity") == [(940, 940, 1, 940)]
    expected = hashlib.sha256((FITBIT / "dailyActivity_merged.csv").read_bytes()).hexdigest()
    assert query(db, "SELECT checksum, row_count, source_filename FROM ops.raw_ingest_manifest") == [
        (expected, 940, "daily_activity/dailyActivity_merged.csv")]
    run = query(db, "SELECT status, rows_total, rows_valid, rows_invalid, trigger FROM ops.pipeline_runs")
    assert run == [("success", 940, 940, 0, "file")]
    row = query(db, "SELECT raw_data, validation_status, file_hash, pipeline_run_id::text, source"
                    " FROM bronze.daily_activity WHERE record_number = 1")[0]
    assert row[0]["Id"] == "1503960366" and row[0]["TotalDistance"] == "8.5"
    assert row[1:3] == ("valid", expected) and row[3] == str(outcome.run_id) and row[4] == "daily_activity"
    archived = list((config.landing_dir / "_archive" / "daily_activity").rglob("*.csv"))
    assert [p.name for p in archived] == ["dailyActivity_merged.csv"]
    assert not (config.landing_dir / "daily_activity" / "dailyActivity_merged.csv").exists()


def test_same_bytes_under_another_name_are_skipped(ctx, config, db):
    drop_file(config.landing_dir, "sleep_day/a.csv", FITBIT / "sleepDay_merged.csv")
    drop_file(config.landing_dir, "sleep_day/b copy.csv", FITBIT / "sleepDay_merged.csv")
    assert ingest(ctx, "sleep_day/a.csv").status == "success"
    second = ingest(ctx, "sleep_day/b copy.csv")
    assert second.status == "skipped" and "already loaded" in second.message
    assert query(db, "SELECT count(*) FROM bronze.sleep_day") == [(413,)]
    assert query(db, "SELECT status FROM ops.pipeline_runs ORDER BY started_at") == [("success",), ("skipped",)]


def test_redelivered_event_after_commit_is_a_no_op(ctx, config, db):
    drop_file(config.landing_dir, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    body = event_for(config, "heart_rate/h.csv").to_json()
    assert ingest_message(ctx, body).status == "success"
    again = ingest_message(ctx, body, redelivered=True)
    assert again.status == "skipped"
    assert query(db, "SELECT count(*) FROM bronze.heart_rate") == [(49,)]


def test_a_redelivered_event_archives_the_file_its_dead_worker_loaded_but_did_not_move(ctx, config, db):
    """A worker that dies between its commit and the move leaves the loaded file in the landing
    folder; the event comes back to another worker, which skips the load and archives the very
    bytes loaded, and nothing else: a file since replaced under the same name stays."""
    landing = config.landing_dir
    original = (FITBIT / "heartrate_seconds_merged_excerpt.csv").read_bytes()
    drop_file(landing, "heart_rate/h.csv", original)
    st = os.lstat(landing / "heart_rate/h.csv")
    body = event_for(config, "heart_rate/h.csv").to_json()
    assert ingest_message(ctx, body).status == "success"
    archived = list((landing / "_archive" / "heart_rate").rglob("h*.csv"))
    assert len(archived) == 1 and not (landing / "heart_rate/h.csv").exists()

    # What the dead worker left: the loaded bytes, where the event names them.
    drop_file(landing, "heart_rate/h.csv", original)
    os.utime(landing / "heart_rate/h.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    again = ingest_message(ctx, body, redelivered=True)
    assert again.status == "skipped" and "already loaded" in again.message
    assert not (landing / "heart_rate/h.csv").exists()
    assert len(list((landing / "_archive" / "heart_rate").rglob("h*.csv"))) == 2

    # Other bytes of the same size and time under that name: not this event's file; it stays.
    other = original.replace(b"2016", b"2017", 1)
    assert len(other) == len(original) and other != original
    drop_file(landing, "heart_rate/h.csv", other)
    os.utime(landing / "heart_rate/h.csv", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ingest_message(ctx, body, redelivered=True).status == "skipped"
    assert (landing / "heart_rate/h.csv").read_bytes() == other
    assert query(db, "SELECT count(*) FROM bronze.heart_rate") == [(49,)]


def test_interrupted_run_is_closed_when_the_event_comes_back(ctx, config, db):
    drop_file(config.landing_dir, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    body = event_for(config, "heart_rate/h.csv").to_json()

    def crash():
        raise RuntimeError("worker killed")
    ctx.before_commit = crash
    with pytest.raises(RuntimeError):
        ingest_message(ctx, body)
    ctx.drop_connection()
    ctx.before_commit = None
    assert ingest_message(ctx, body, redelivered=True).status == "success"
    assert query(db, "SELECT count(*) FROM bronze.heart_rate") == [(49,)]
    statuses = query(db, "SELECT status, coalesce(error_summary, '') LIKE 'interrupted%%' FROM ops.pipeline_runs"
                         " ORDER BY started_at")
    assert statuses == [("failure", True), ("success", False)]


def test_invalid_records_are_kept_and_too_many_reject_the_file(ctx, config, db):
    good = (FITBIT / "heartrate_seconds_merged_excerpt.csv").read_bytes()
    lines = good.split(b"\r\n")
    few_bad = b"\r\n".join(lines[:3] + [b"2022484408,not a time,97"] + lines[3:])
    drop_file(config.landing_dir, "heart_rate/few.csv", few_bad)
    assert ingest(ctx, "heart_rate/few.csv").status == "success"
    invalid = query(db, "SELECT record_number, validation_errors FROM bronze.heart_rate"
                        " WHERE validation_status = 'invalid'")
    assert len(invalid) == 1 and invalid[0][0] == 3
    assert invalid[0][1][0]["pointer"] == "/Time" and invalid[0][1][0]["keyword"] == "pattern"

    many_bad = b"Id,Time,Value\r\n" + b"\r\n".join(b"x,y,%d" % i for i in range(10))
    drop_file(config.landing_dir, "heart_rate/many.csv", many_bad)
    outcome = ingest(ctx, "heart_rate/many.csv")
    assert outcome.status == "failure" and outcome.reason == "schema_rejected"
    assert query(db, "SELECT rows_total, rows_valid, rows_invalid FROM ops.pipeline_runs WHERE run_id = %s",
                 (outcome.run_id,)) == [(10, 0, 10)]
    assert query(db, "SELECT count(*) FROM bronze.heart_rate") == [(50,)]
    assert (config.landing_dir / "_quarantine" / "heart_rate" / "many.csv").exists()


BAD_INPUTS = [
    ("daily_activity/ragged.csv", b"Id,ActivityDate\n1,2\n3\n", "parse_error"),
    ("daily_activity/quote.csv", b'Id,ActivityDate\n1,"open\n', "parse_error"),
    ("daily_activity/latin1.csv", b"Id,ActivityDate\n1,caf\xe9\n", "encoding_error"),
    ("daily_activity/empty.csv", b"", "parse_error"),
    ("events_json/scalar.json", b'"hello"', "parse_error"),
    ("events_json/nan.json", b'[{"a": NaN}]', "parse_error"),
    ("events_jsonl/nul.jsonl", b'{"a": "x\\u0000y"}\n', "load_error"),
    ("events_jsonl/infinity.jsonl", b'{"a": Infinity}\n', "parse_error"),
    ("parquet_files/truncated.parquet", (SHARED_DATA / "parquet" / "alltypes_plain.parquet").read_bytes()[:700],
     "parse_error"),
    ("not_configured/file.csv", b"a\n1\n", "unknown_source"),
    ("stray_in_root.csv", b"a\n1\n", "unknown_source"),
]


@pytest.mark.parametrize("relative,data,reason", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_dead_lettered_with_its_reason(ctx, config, db, relative, data, reason):
    drop_file(config.landing_dir, relative, data)
    outcome = ingest(ctx, relative)
    assert (outcome.status, outcome.reason) == ("failure", reason)
    dead = query(db, "SELECT reason, error, file_path, event->>'path' FROM ops.dead_letters")
    assert len(dead) == 1 and dead[0][0] == reason and dead[0][3] == relative
    assert dead[0][2].startswith("_quarantine/")
    assert (config.landing_dir / dead[0][2]).exists() and not (config.landing_dir / relative).exists()
    assert query(db, "SELECT status, reason FROM ops.pipeline_runs") == [("failure", reason)]
    messages = dead_queue_bodies(config)
    assert len(messages) == 1 and messages[0][0]["x-ingestd-reason"] == reason
    assert json.loads(messages[0][1])["path"] == relative


def test_empty_json_lines_file_is_also_refused(ctx, config):
    drop_file(config.landing_dir, "events_jsonl/e.jsonl", b"")
    assert ingest(ctx, "events_jsonl/e.jsonl").reason == "parse_error"


def test_awkward_file_names_load(ctx, config, db):
    names = ["events_jsonl/with space.jsonl", "events_jsonl/quote'\"s.jsonl", "events_jsonl/ünï cødé.jsonl",
             "events_jsonl/x'); DROP TABLE ops.pipeline_runs; --.jsonl", "events_jsonl/tab\there.jsonl"]
    for n, name in enumerate(names):
        drop_file(config.landing_dir, name, b'{"n": %d}\n' % n)
        assert ingest(ctx, name).status == "success", name
    assert sorted(r[0] for r in query(db, "SELECT file_path FROM bronze.events_jsonl")) == sorted(names)


def test_symlink_out_of_the_landing_zone_is_rejected(ctx, config, db, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(b'{"password": "x"}\n')
    (config.landing_dir / "events_jsonl").mkdir(parents=True, exist_ok=True)
    os.symlink(secret, config.landing_dir / "events_jsonl" / "link.jsonl")
    outcome = ingest(ctx, "events_jsonl/link.jsonl")
    assert outcome.reason == "path_rejected"
    assert query(db, "SELECT to_regclass('bronze.events_jsonl')") == [(None,)]
    assert secret.exists()


def test_file_deleted_between_event_and_load(ctx, config, db):
    path = drop_file(config.landing_dir, "events_jsonl/gone.jsonl", b'{"a": 1}\n')
    body = event_for(config, "events_jsonl/gone.jsonl").to_json()
    path.unlink()
    outcome = ingest_message(ctx, body)
    assert (outcome.status, outcome.reason) == ("failure", "unreadable_file")
    assert query(db, "SELECT reason FROM ops.dead_letters") == [("unreadable_file",)]


def test_file_changed_after_its_event_is_left_for_the_next_event(ctx, config, db):
    path = drop_file(config.landing_dir, "events_jsonl/grow.jsonl", b'{"a": 1}\n')
    body = event_for(config, "events_jsonl/grow.jsonl").to_json()
    with open(path, "ab") as fh:
        fh.write(b'{"a": 2}\n')
    assert ingest_message(ctx, body).status == "skipped"
    assert path.exists()
    assert ingest(ctx, "events_jsonl/grow.jsonl").rows == 2


def test_message_that_is_not_an_event_is_dead_lettered(ctx, config, db):
    for body in (b"\x00\xffgarbage", b'{"version": 1, "kind": "file"}', b"[1,2,3]"):
        assert ingest_message(ctx, body).reason == "bad_event"
    assert query(db, "SELECT count(*) FROM ops.dead_letters WHERE reason = 'bad_event'") == [(3,)]
    assert len(dead_queue_bodies(config)) == 3


def test_formats_json_records_path_and_parquet_load(ctx, config, db):
    drop_file(config.landing_dir, "wrapped_json/w.json", b'{"data": {"items": [{"k": 1}, {"k": 2.5}]}}')
    drop_file(config.landing_dir, "events_json/a.json.gz",
              __import__("gzip").compress(b'[{"k": "x"}, {"k": null}]'))
    drop_file(config.landing_dir, "parquet_files/int96.parquet", SHARED_DATA / "parquet" / "int96_from_spark.parquet")
    drop_file(config.landing_dir, "parquet_files/plain.parquet", SHARED_DATA / "parquet" / "alltypes_plain.parquet")
    for rel in ("wrapped_json/w.json", "events_json/a.json.gz", "parquet_files/int96.parquet",
                "parquet_files/plain.parquet"):
        assert ingest(ctx, rel).status == "success", rel
    assert query(db, "SELECT raw_data FROM bronze.wrapped_json ORDER BY record_number") == [({"k": 1},), ({"k": 2.5},)]
    assert query(db, "SELECT count(*) FROM bronze.events_json") == [(2,)]
    assert query(db, "SELECT count(*) FROM bronze.parquet_files") == [(14,)]


def test_symlink_inside_the_landing_zone_loads_its_target(ctx, config, db):
    target = drop_file(config.landing_dir, "events_jsonl/real/data.jsonl", b'{"a": 1}\n{"a": 2}\n')
    os.symlink(target, config.landing_dir / "events_jsonl" / "link.jsonl")
    outcome = ingest(ctx, "events_jsonl/link.jsonl")
    assert (outcome.status, outcome.rows) == ("success", 2)
    assert target.exists()  # the link was archived, not its target


def test_two_workers_racing_on_the_same_bytes_load_them_once(config, db):
    import threading
    data = (FITBIT / "hourlySteps_merged.csv").read_bytes()
    drop_file(config.landing_dir, "hourly_steps/a.csv", data)
    drop_file(config.landing_dir, "hourly_steps/b.csv", data)
    outcomes = {}
    barrier = threading.Barrier(2)

    def work(name):
        context = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix)), f"racer-{name}")
        body = event_for(config, f"hourly_steps/{name}.csv").to_json()
        context.conn()  # connect before the start line
        barrier.wait()
        try:
            outcomes[name] = ingest_message(context, body).status
        finally:
            context.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["skipped", "success"]
    assert query(db, "SELECT count(*) FROM bronze.hourly_steps") == [(22099,)]
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == [(1,)]
