"""Dead-letter operations, run history and status, against the real services."""
import json
import signal
import subprocess
import threading
import time

import pika
import pytest

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.consumers.recorder import DeadLetterRecorder
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import load_config

from .conftest import FITBIT, drop_file, ingestd_cmd, query
from .test_e2e import wait_for
from .test_ingest import event_for

pytestmark = pytest.mark.integration

STEPS = FITBIT / "hourlySteps_merged.csv"
STEPS2_SOURCE = '\n[[sources]]\nname = "steps2"\nformat = "csv"\n'


def cli(config_path, *args, check_exit=None):
    result = subprocess.run(ingestd_cmd("--config", str(config_path), *args), capture_output=True, text=True,
                            timeout=120)
    if check_exit is not None:
        assert result.returncode == check_exit, (result.stdout, result.stderr)
    return result


def on_a_terminal(config_path, *args, columns=80) -> str:
    """What a command prints on a terminal of ``columns`` columns."""
    import os
    import pty
    main, child = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), LINES="40")
    proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), *args), stdout=child, stderr=child, env=env)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(main)
    return out.decode("utf-8", "replace").replace("\r\n", "\n")


def cli_json(config_path, *args, check_exit=0):
    return json.loads(cli(config_path, *args, "--json", check_exit=check_exit).stdout)



@pytest.fixture
def consumer(procs):
    return lambda config_path: procs(config_path, "consume")


def dead_letter_file(ctx, config, relative, data):
    drop_file(config.landing_dir, relative, data)
    return ingest_message(ctx, event_for(config, relative).to_json())


def poison(config, relative):
    """An event no consumer survives: each delivery starts the event's run, as
    a consumer does, and the consumer dies (the message goes back unanswered),
    until the broker dead-letters it."""
    from ingestd.consumers.ingest import IngestContext, run_start
    from ingestd.daemon.broker import Publisher
    from ingestd.daemon.events import parse_event
    body = event_for(config, relative).to_json()
    topology = Topology(config.prefix, config.delivery_limit)
    ctx = IngestContext(config, Publisher(config.amqp_url, topology), "test-poison")
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        ch = conn.channel()
        topology.declare(ch)
        ch.basic_publish(topology.events_exchange, f"file.{relative.split('/')[0]}", body,
                         pika.BasicProperties(message_id=json.loads(body)["event_id"], delivery_mode=2))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            method, _, delivered = ch.basic_get(topology.events_queue)
            if method is not None:
                ctx.ledger().start_runs([run_start(ctx, parse_event(delivered))])
                ch.basic_nack(method.delivery_tag, requeue=True)
            elif ch.queue_declare(topology.events_queue, passive=True).method.message_count == 0:
                break
            else:
                time.sleep(0.05)
        return ch.queue_declare(topology.events_queue, passive=True).method.message_count
    finally:
        conn.close()
        ctx.close()


def run_recorder(config, seconds=2.0):
    stop = threading.Event()
    thread = threading.Thread(target=DeadLetterRecorder(config, stop).run, daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(timeout=10)


def test_each_kind_of_dead_letter_is_listed_and_filtered(setup, db):
    path, config, ctx = setup
    assert dead_letter_file(ctx, config, "mystery/a.csv", b"a\n1\n").reason == "unknown_source"
    assert dead_letter_file(ctx, config, "daily_activity/bad.csv", b'Id,ActivityDate\n1,"x\n').reason == \
        "parse_error"
    bad_rows = b"Id,Time,Value\r\n" + b"\r\n".join(b"x,y,%d" % i for i in range(5))
    assert dead_letter_file(ctx, config, "heart_rate/bad.csv", bad_rows).reason == "schema_rejected"
    assert ingest_message(ctx, b"this is not an event").reason == "bad_event"
    drop_file(config.landing_dir, "sleep_day/poison.csv", FITBIT / "sleepDay_merged.csv")
    assert poison(config, "sleep_day/poison.csv") == 0
    run_recorder(config)

    listed = cli_json(path, "dlq", "list")
    reasons = sorted(d["reason"] for d in listed["dead_letters"])
    assert reasons == ["bad_event", "delivery_limit", "parse_error", "schema_rejected", "unknown_source"]
    assert listed["waiting"] == 5 and listed["queue_messages"] == 5
    poisoned = next(d for d in listed["dead_letters"] if d["reason"] == "delivery_limit")
    assert poisoned["detail"]["broker_reason"] == "delivery_limit"
    assert poisoned["file_path"].startswith("_quarantine/sleep_day/")  # the recorder quarantined it

    assert [d["source"] for d in cli_json(path, "dlq", "list", "--source", "heart_rate")["dead_letters"]] == [
        "heart_rate"]
    assert [d["reason"] for d in cli_json(path, "dlq", "list", "--reason", "parse_error")["dead_letters"]] == [
        "parse_error"]
    assert cli_json(path, "dlq", "list", "--since", "2099-01-01")["dead_letters"] == []
    assert len(cli_json(path, "dlq", "list", "--until", "2099-01-01")["dead_letters"]) == 5
    assert len(cli_json(path, "dlq", "list", "--since", "1h")["dead_letters"]) == 5
    bad = cli(path, "dlq", "list", "--reason", "no_such_reason", check_exit=2)
    assert "unknown reason" in bad.stderr

    human = cli(path, "dlq", "list", check_exit=0).stdout
    assert "5 waiting in ops.dead_letters; 5 message(s)" in human
    assert "…" not in human  # piped: every error whole, to act on
    narrow = on_a_terminal(path, "dlq", "list", columns=100)
    table = narrow.split("\n\n")[0].splitlines()  # the prose after it wraps like any text
    assert all(len(line) <= 100 for line in table) and "5 waiting" in narrow
    # Too narrow for the errors beside the rows: each under its row, whole.
    errors = " ".join(line.strip() for line in table if line.startswith("    "))
    assert "kept failing on it" in errors and errors.count("error:") == 5


def test_show_gives_the_whole_envelope(setup, db):
    path, config, ctx = setup
    dead_letter_file(ctx, config, "daily_activity/ragged.csv", b"Id,ActivityDate\n1,2\n3\n")
    dead_id = query(db, "SELECT id FROM ops.dead_letters")[0][0]
    shown = cli_json(path, "dlq", "show", str(dead_id))
    assert shown["reason"] == "parse_error" and shown["detail"]["line"] == 3
    assert shown["event"]["path"] == "daily_activity/ragged.csv"
    assert shown["file_exists"] is True and shown["run"]["status"] == "failure"
    text = cli(path, "dlq", "show", str(dead_id), check_exit=0).stdout
    assert "parse_error" in text and "_quarantine/daily_activity/ragged.csv  (present)" in text
    assert "no dead letter with id 999999" in cli(path, "dlq", "show", "999999", check_exit=1).stderr


def test_replay_after_fix_loads_once_and_empties_the_queue(setup, db, consumer):
    path, config, ctx = setup
    dead_letter_file(ctx, config, "steps2/steps.csv", STEPS.read_bytes())
    path.write_text(path.read_text() + STEPS2_SOURCE)
    consumer(path)
    dry = cli(path, "dlq", "replay", "--reason", "unknown_source", "--dry-run", check_exit=0).stdout
    assert "1 dead letter(s) would be replayed" in dry
    summary = cli_json(path, "dlq", "replay", "--reason", "unknown_source")
    assert (summary["replayed"], summary["loaded"], summary["failed_again"]) == (1, 1, 0)
    assert query(db, "SELECT count(*) FROM bronze.steps2") == [(22099,)]
    assert query(db, "SELECT replayed_at IS NOT NULL, replay_count FROM ops.dead_letters") == [(True, 0)]
    listed = cli_json(path, "dlq", "list")
    assert (listed["waiting"], listed["queue_messages"]) == (0, 0)
    runs = cli_json(path, "runs", "--source", "steps2")["runs"]
    assert [(r["status"], r["trigger"]) for r in runs] == [("success", "replay"), ("failure", "file")]
    assert list((config.landing_dir / "_archive" / "steps2").rglob("steps.csv"))


def test_replay_of_something_loaded_meanwhile_is_skipped(setup, db, consumer):
    path, config, ctx = setup
    dead_letter_file(ctx, config, "steps2/first.csv", STEPS.read_bytes())
    path.write_text(path.read_text() + STEPS2_SOURCE)
    consumer(path)
    drop_file(config.landing_dir, "steps2/again.csv", STEPS)
    cli(path, "publish", "--no-progress", str(config.landing_dir / "steps2" / "again.csv"), check_exit=0)
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1)
    summary = cli_json(path, "dlq", "replay", "--all")
    assert (summary["replayed"], summary["skipped"], summary["loaded"]) == (1, 1, 0)
    assert query(db, "SELECT count(*) FROM bronze.steps2") == [(22099,)]


def test_replay_limit_stops_endless_loops(setup, db, consumer, write_config):
    path = write_config(extra="[dlq]\nreplay_limit = 1")
    config = load_config(path)
    ctx = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix)), "t")
    try:
        dead_letter_file(ctx, config, "nowhere/f.csv", b"a\n1\n")
    finally:
        ctx.close()
    consumer(path)
    first = cli_json(path, "dlq", "replay", "--reason", "unknown_source", check_exit=1)
    assert (first["replayed"], first["failed_again"]) == (1, 1)
    assert query(db, "SELECT replay_count, replayed_at IS NULL FROM ops.dead_letters ORDER BY id") == [
        (0, False), (1, True)]
    second = cli(path, "dlq", "replay", "--reason", "unknown_source", check_exit=1)
    assert "replay limit reached (1 of 1)" in second.stderr
    listed = cli_json(path, "dlq", "list")
    assert (listed["waiting"], listed["queue_messages"]) == (1, 1)


def test_discard_keeps_the_record_and_drops_the_message(setup, db):
    path, config, ctx = setup
    dead_letter_file(ctx, config, "daily_activity/a.csv", b'Id,ActivityDate\n1,"x\n')
    dead_letter_file(ctx, config, "daily_activity/b.csv", b"Id,ActivityDate\n1\n")
    cli(path, "dlq", "discard", check_exit=2)  # no selector: refused
    first_id = query(db, "SELECT min(id) FROM ops.dead_letters")[0][0]
    out = cli_json(path, "dlq", "discard", "--id", str(first_id), "--note", "bad export, resent", "--delete-file")
    assert out["discarded"] == [first_id] and out["removed_from_queue"] == 1
    assert query(db, "SELECT note, discarded_at IS NOT NULL FROM ops.dead_letters WHERE id = %s", (first_id,)) == [
        ("bad export, resent", True)]
    assert not (config.landing_dir / "_quarantine" / "daily_activity" / "a.csv").exists()
    assert (config.landing_dir / "_quarantine" / "daily_activity" / "b.csv").exists()
    listed = cli_json(path, "dlq", "list")
    assert (listed["waiting"], listed["queue_messages"]) == (1, 1)
    assert len(cli_json(path, "dlq", "list", "--include-discarded")["dead_letters"]) == 2


def test_status_says_what_needs_attention(setup, db, consumer):
    path, config, ctx = setup
    never_started = cli_json(path, "status", check_exit=1)
    assert any("does not exist: nothing has started yet" in p for p in never_started["problems"])
    drop_file(config.landing_dir, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    ingest_message(ctx, event_for(config, "heart_rate/h.csv").to_json())
    consumer(path)
    wait_for(lambda: cli_json(path, "status", check_exit=None)["queues"]["events"]["consumers"] == 1)
    healthy = cli_json(path, "status", check_exit=0)
    assert healthy["database"] == "ok" and healthy["broker"] == "ok" and not healthy["needs_attention"]
    heart = next(s for s in healthy["sources"] if s["source"] == "heart_rate")
    assert heart["rows_today"] == 49 and heart["last_success"] is not None
    dead_letter_file(ctx, config, "mystery/a.csv", b"a\n1\n")
    sick = cli_json(path, "status", check_exit=1)
    assert sick["dead_letters_waiting"] == 1 and sick["queues"]["dead"]["messages"] == 1
    assert any("dead letter" in p for p in sick["problems"])
    text = cli(path, "status", check_exit=1).stdout
    assert "mystery (not configured)" in text
    narrow = on_a_terminal(path, "status", columns=100)
    tables = [line for line in narrow.splitlines() if not line.startswith("attention:")]
    assert "mystery" in narrow and all(len(line) <= 100 for line in tables)
    path.write_text(path.read_text().replace(config.amqp_url, "amqp://guest:guest@127.0.0.1:1/%2F"))
    down = cli_json(path, "status", check_exit=1)
    assert down["broker"] == "unreachable"


def test_runs_lists_with_filters(setup, db):
    path, config, ctx = setup
    drop_file(config.landing_dir, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    ingest_message(ctx, event_for(config, "heart_rate/h.csv").to_json())
    dead_letter_file(ctx, config, "mystery/a.csv", b"a\n1\n")
    all_runs = cli_json(path, "runs")["runs"]
    assert [r["status"] for r in all_runs] == ["failure", "success"]
    assert [r["source"] for r in cli_json(path, "runs", "--status", "success")["runs"]] == ["heart_rate"]
    assert cli_json(path, "runs", "--source", "mystery")["runs"][0]["reason"] == "unknown_source"
    assert len(cli_json(path, "runs", "--limit", "1")["runs"]) == 1
    assert cli_json(path, "runs", "--since", "2099-01-01")["runs"] == []
    text = cli(path, "runs", check_exit=0).stdout
    assert "49/49/0" in text and "…" not in text  # piped: full width, nothing cut
    narrow = on_a_terminal(path, "runs", columns=80)
    assert "49/49/0" in narrow and all(len(line) <= 80 for line in narrow.splitlines())


def test_new_user_flow_fix_the_config_of_a_running_daemon_then_replay(write_config, db, tmp_path):
    """The issue's "done when": no restart between adding the source and replaying."""
    path = write_config()
    landing = tmp_path / "data_lake"
    daemon = subprocess.Popen(ingestd_cmd("--config", str(path), "run"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: query(db, "SELECT to_regclass('ops.pipeline_runs')")[0][0], timeout=60)
        time.sleep(1.0)
        drop_file(landing, "steps2/steps.csv", STEPS)
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 1)
        assert "unknown_source" in cli(path, "dlq", "list", check_exit=0).stdout
        assert "steps2 (not configured)" in cli(path, "status", check_exit=1).stdout
        path.write_text(path.read_text() + STEPS2_SOURCE)
        summary = cli_json(path, "dlq", "replay", "--reason", "unknown_source")
        assert summary["loaded"] == 1
        assert query(db, "SELECT count(*) FROM bronze.steps2") == [(22099,)]
        assert query(db, "SELECT replayed_at IS NOT NULL FROM ops.dead_letters") == [(True,)]
        listed = cli_json(path, "dlq", "list")
        assert (listed["waiting"], listed["queue_messages"]) == (0, 0)
        runs = cli_json(path, "runs")["runs"]
        assert [(r["status"], r["trigger"]) for r in runs] == [("success", "replay"), ("failure", "file")]
        cli(path, "status", check_exit=0)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0


def test_status_needs_attention_when_events_wait_and_no_consumer_takes_them(setup, db):
    path, config, ctx = setup
    publisher = Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit))
    drop_file(config.landing_dir, "heart_rate/h.csv", FITBIT / "heartrate_seconds_merged_excerpt.csv")
    event = event_for(config, "heart_rate/h.csv")
    publisher.publish(publisher.topology.events_exchange, event.routing_key, event.to_json(), event.event_id)
    publisher.close()
    waiting = cli_json(path, "status", check_exit=1)
    assert waiting["queues"]["events"] == {"queue": config.prefix + "ingest.events", "messages": 1, "consumers": 0}
    assert any(p.startswith("no consumer on") for p in waiting["problems"])


def test_status_piped_into_head_ends_quietly(setup):
    path, _, _ = setup
    shell = subprocess.run(" ".join(ingestd_cmd("--config", str(path), "status")) + " | head -1", shell=True,
                           capture_output=True, text=True, timeout=120)
    assert shell.stdout.startswith("database")
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr
