"""A dead letter touches only the file ingestd moved for it.

The file path of a dead letter comes from an event, and events are untrusted:
a crafted event may name another dead letter's quarantined file. Discarding
with --delete-file, replaying, and the broker's dead-letter recorder must act
only on a file that ingestd itself quarantined for that dead letter (or for
an earlier failure of the same event, which its replay carries on).
"""
import json
import os

import pika
import pytest

from ingestd.consumers.ingest import ingest_message
from ingestd.daemon.broker import Topology
from ingestd.daemon.events import FileEvent

from .conftest import drop_file, query
from .test_dlq import cli, cli_json, run_recorder

pytestmark = pytest.mark.integration

BROKEN = b'Id,ActivityDate\n1,"x\n'  # an unterminated quote: parse_error



def crafted_replay(config, relative: str) -> FileEvent:
    """An event nobody replayed, naming a quarantined file as a replay would."""
    st = os.lstat(config.landing_dir / relative)
    return FileEvent(source=relative.split("/")[1], path=relative, size=st.st_size, mtime_ns=st.st_mtime_ns,
                     trigger="replay", replay_count=1)


def first_dead_letter(ctx, config):
    drop_file(config.landing_dir, "daily_activity/a.csv", BROKEN)
    event = FileEvent(source="daily_activity", path="daily_activity/a.csv", size=len(BROKEN),
                      mtime_ns=os.lstat(config.landing_dir / "daily_activity/a.csv").st_mtime_ns)
    assert ingest_message(ctx, event.to_json()).reason == "parse_error"
    quarantined = config.landing_dir / "_quarantine" / "daily_activity" / "a.csv"
    assert quarantined.read_bytes() == BROKEN
    return event, quarantined


def test_a_crafted_event_naming_another_dead_letters_file_cannot_have_it_deleted(setup, db):
    path, config, ctx = setup
    _, quarantined = first_dead_letter(ctx, config)
    crafted = crafted_replay(config, "_quarantine/daily_activity/a.csv")
    assert ingest_message(ctx, crafted.to_json()).reason == "parse_error"
    crafted_id = query(db, "SELECT id FROM ops.dead_letters WHERE event_id = %s", (crafted.event_id,))[0][0]

    out = cli_json(path, "dlq", "discard", "--id", str(crafted_id), "--delete-file")
    assert out["discarded"] == [crafted_id]
    assert quarantined.read_bytes() == BROKEN  # the first dead letter's file is still there
    shown = cli_json(path, "dlq", "show", str(crafted_id))
    assert shown["file_path"] is None and shown["event"]["path"] == "_quarantine/daily_activity/a.csv"
    replay = cli(path, "dlq", "replay", "--all", "--wait", "0", check_exit=None)
    # The first dead letter still finds its own file.
    assert "no longer at" not in replay.stderr + replay.stdout


def test_a_crafted_replay_cannot_be_replayed_from_another_dead_letters_file(setup, db):
    path, config, ctx = setup
    first, quarantined = first_dead_letter(ctx, config)
    crafted = crafted_replay(config, "_quarantine/daily_activity/a.csv")
    ingest_message(ctx, crafted.to_json())
    crafted_id = query(db, "SELECT id FROM ops.dead_letters WHERE event_id = %s", (crafted.event_id,))[0][0]
    out = cli(path, "dlq", "replay", "--id", str(crafted_id), "--wait", "0", check_exit=1)
    assert "not quarantined for this dead letter" in out.stderr
    assert query(db, "SELECT replayed_at FROM ops.dead_letters WHERE id = %s", (crafted_id,)) == [(None,)]
    assert quarantined.read_bytes() == BROKEN


def test_the_recorder_gives_a_broker_dead_letter_no_foreign_file(setup, db):
    path, config, ctx = setup
    _, quarantined = first_dead_letter(ctx, config)
    crafted = crafted_replay(config, "_quarantine/daily_activity/a.csv")
    topology = Topology(config.prefix, config.delivery_limit)
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        # As the broker dead-letters a message (no x-ingestd-reason header).
        channel.basic_publish(topology.dead_exchange, "file.daily_activity", crafted.to_json(),
                              pika.BasicProperties(message_id=crafted.event_id, delivery_mode=2))
    finally:
        conn.close()
    run_recorder(config)
    rows = query(db, "SELECT id, file_path FROM ops.dead_letters WHERE event_id = %s", (crafted.event_id,))
    assert len(rows) == 1 and rows[0][1] is None
    cli_json(path, "dlq", "discard", "--id", str(rows[0][0]), "--delete-file")
    assert quarantined.read_bytes() == BROKEN


def test_a_real_replay_that_fails_again_keeps_its_file_to_discard(setup, db, procs):
    path, config, ctx = setup
    first_dead_letter(ctx, config)
    procs(path, "consume")
    again = cli_json(path, "dlq", "replay", "--all", check_exit=1)
    assert again["failed_again"] == 1
    rows = query(db, "SELECT id, replay_count, file_path FROM ops.dead_letters ORDER BY id")
    assert [(count, file_path) for _, count, file_path in rows] == [
        (0, "_quarantine/daily_activity/a.csv"), (1, "_quarantine/daily_activity/a.csv")]
    listed = cli_json(path, "dlq", "list")["dead_letters"]
    assert [d["id"] for d in listed] == [rows[1][0]]
    cli_json(path, "dlq", "discard", "--id", str(rows[1][0]), "--delete-file")
    assert not (config.landing_dir / "_quarantine" / "daily_activity" / "a.csv").exists()
    assert json.loads(json.dumps(listed[0]["event"]))["trigger"] == "replay"


def test_the_migration_takes_foreign_quarantined_files_from_old_dead_letters(db):
    """Rows written before sql/006 named whatever their event named."""
    from importlib.resources import files
    rows = [  # (event_id, event path, file_path, replayed)
        ("11111111-1111-4111-8111-111111111111", "s/a.csv", "_quarantine/s/a.csv", True),   # moved for it
        ("11111111-1111-4111-8111-111111111111", "_quarantine/s/a.csv", "_quarantine/s/a.csv", False),  # its replay
        ("22222222-2222-4222-8222-222222222222", "_quarantine/s/a.csv", "_quarantine/s/a.csv", False),  # crafted
        ("33333333-3333-4333-8333-333333333333", "s/b.csv", "s/b.csv", False),  # never moved: stays
    ]
    with db.cursor() as cur:
        for n, (event_id, event_path, file_path, replayed) in enumerate(rows):
            cur.execute("INSERT INTO ops.dead_letters (event_id, reason, error, event, file_path, replay_count,"
                        " replayed_at) VALUES (%s, 'parse_error', 'x', %s, %s, %s, CASE WHEN %s THEN now() END)",
                        (event_id, json.dumps({"path": event_path}), file_path, 1 if n == 1 else 0, replayed))
        cur.execute(files("ingestd.sql").joinpath("006_dead_letter_files.sql").read_text())
    db.commit()
    assert [r[0] for r in query(db, "SELECT file_path FROM ops.dead_letters ORDER BY id")] == [
        "_quarantine/s/a.csv", "_quarantine/s/a.csv", None, "s/b.csv"]


def test_the_recorder_moves_only_the_file_its_message_describes(setup, db):
    """A message in the dead queue naming a waiting file with another size
    or mtime (made up, or the file replaced since) leaves the file where it is."""
    path, config, ctx = setup
    waiting = drop_file(config.landing_dir, "daily_activity/waiting.csv", b"Id,ActivityDate\n1,4/12/2016\n")
    st = os.lstat(waiting)
    made_up = FileEvent(source="daily_activity", path="daily_activity/waiting.csv", size=st.st_size,
                        mtime_ns=st.st_mtime_ns + 1)
    topology = Topology(config.prefix, config.delivery_limit)
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        channel.basic_publish(topology.dead_exchange, "file.daily_activity", made_up.to_json(),
                              pika.BasicProperties(message_id=made_up.event_id, delivery_mode=2))
    finally:
        conn.close()
    run_recorder(config)
    assert waiting.exists()
    assert query(db, "SELECT file_path FROM ops.dead_letters WHERE event_id = %s", (made_up.event_id,)) == [
        ("daily_activity/waiting.csv",)]


def post_dead(config, body: bytes, message_id: str | None, headers=None) -> None:
    """A message posted straight to the dead exchange, as anyone with publish rights could."""
    topology = Topology(config.prefix, config.delivery_limit)
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        channel.basic_publish(topology.dead_exchange, "file.daily_activity", body,
                              pika.BasicProperties(message_id=message_id, delivery_mode=2, headers=headers))
    finally:
        conn.close()


def test_a_file_ingestd_never_quarantined_is_not_replayed(setup, db):
    """A dead letter for a file that was missing: a file of that name appearing later (perhaps still
    being written) is the watcher's to load, never the replay's."""
    path, config, ctx = setup
    event = FileEvent(source="daily_activity", path="daily_activity/export3.csv", size=10, mtime_ns=1)
    assert ingest_message(ctx, event.to_json()).reason == "unreadable_file"
    later = drop_file(config.landing_dir, "daily_activity/export3.csv", b"Id,ActivityDate\n1,4/1")  # half written
    dead_id = query(db, "SELECT id FROM ops.dead_letters")[0][0]
    out = cli(path, "dlq", "replay", "--id", str(dead_id), "--wait", "0", check_exit=1)
    assert "ingestd did not quarantine its file" in out.stderr
    assert later.exists() and query(db, "SELECT replayed_at FROM ops.dead_letters") == [(None,)]


def test_a_message_posted_to_the_dead_queue_moves_no_file(setup, db):
    path, config, ctx = setup
    victim = drop_file(config.landing_dir, "daily_activity/victim.csv", b"Id,ActivityDate\n1,4/12/2016\n")
    st = os.lstat(victim)
    forged = FileEvent(source="daily_activity", path="daily_activity/victim.csv", size=st.st_size,
                       mtime_ns=st.st_mtime_ns)  # the very identity: only x-death can tell
    post_dead(config, forged.to_json(), forged.event_id)
    run_recorder(config)
    assert victim.exists()
    assert query(db, "SELECT error FROM ops.dead_letters")[0][0].startswith(
        "a message reached the dead-letter queue without a consumer failing on it")


def test_odd_dead_messages_neither_break_dlq_nor_stay_in_the_queue(setup, db):
    """200 KB of '[', a body naming a file but no source, a kind no routing key can hold: each is
    recorded; replay refuses what it cannot replay, one line each; discard clears the queue."""
    path, config, ctx = setup
    post_dead(config, b"[" * 200_000, "22222222-2222-4222-8222-222222222222")
    post_dead(config, b'{"kind": "file", "path": "daily_activity/held.csv"}', "33333333-3333-4333-8333-333333333333")
    post_dead(config, json.dumps({"kind": "k" * 300, "source": "daily_activity"}).encode(),
              "44444444-4444-4444-8444-444444444444")
    run_recorder(config)
    assert cli_json(path, "dlq", "list")["waiting"] == 3
    replay = cli(path, "dlq", "replay", "--all", "--wait", "0", check_exit=None)
    assert "Traceback" not in replay.stderr and replay.returncode in (0, 1), replay.stderr
    discard = cli(path, "dlq", "discard", "--all", check_exit=None)
    assert "Traceback" not in discard.stderr, discard.stderr
    listed = cli_json(path, "dlq", "list")
    assert (listed["waiting"], listed["queue_messages"]) == (0, 0), listed
