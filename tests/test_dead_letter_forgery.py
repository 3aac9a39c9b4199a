"""A message in the dead-letter queue moves a file only when a consumer took its event.

Anyone who may publish to the dead exchange can post a message with an
``x-death`` header that names the events queue, and an event that describes
a file of the landing folder exactly (size and mtime). The header is the
sender's word: the recorder moves the file only when ``ops.pipeline_runs``
shows that a consumer took that very event on that file and never finished
it (what a consumer that keeps dying on an event leaves). Otherwise the
message is recorded as a dead letter, the file stays, and the dead letter
says why.
"""
import json
import os

import pika
import pytest

from ingestd.consumers.ingest import ingest_message, run_start
from ingestd.daemon.broker import Topology
from ingestd.daemon.events import FileEvent, parse_event

from .conftest import drop_file, one_row_csv, query
from .test_dlq import cli, cli_json, run_recorder

pytestmark = pytest.mark.integration

GOOD = one_row_csv(1503960366)



def described(config, relative: str, **fields) -> FileEvent:
    st = os.lstat(config.landing_dir / relative)
    return FileEvent(source=relative.split("/")[0], path=relative, size=st.st_size, mtime_ns=st.st_mtime_ns,
                     **fields)


def declare(config) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        Topology(config.prefix, config.delivery_limit).declare(conn.channel())
    finally:
        conn.close()


def post_forged(config, event: FileEvent) -> None:
    """``event`` posted straight to the dead exchange, with the ``x-death``
    header the broker would set had the events queue given up on it."""
    topology = Topology(config.prefix, config.delivery_limit)
    x_death = [{"queue": topology.events_queue, "reason": "delivery_limit", "count": config.delivery_limit,
                "exchange": topology.events_exchange, "routing-keys": [event.routing_key]}]
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        channel.basic_publish(topology.dead_exchange, event.routing_key, event.to_json(),
                              pika.BasicProperties(message_id=event.event_id, delivery_mode=2,
                                                   headers={"x-death": x_death}))
    finally:
        conn.close()


def crash_until_dead_lettered(ctx, config, event: FileEvent) -> None:
    """What a consumer that dies on ``event`` every time leaves: each
    delivery starts the event's run, as the consumer does, and the message
    goes back unanswered, until the broker dead-letters it (delivery limit)."""
    topology = Topology(config.prefix, config.delivery_limit)
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        channel.basic_publish(topology.events_exchange, event.routing_key, event.to_json(),
                              pika.BasicProperties(message_id=event.event_id, delivery_mode=2))
        deliveries = 0
        while deliveries <= config.delivery_limit:
            method, _, body = channel.basic_get(topology.events_queue)
            if method is None:
                if channel.queue_declare(topology.events_queue, passive=True).method.message_count == 0:
                    break
                continue
            deliveries += 1
            ctx.ledger().start_runs([run_start(ctx, parse_event(body))])  # then the consumer dies
            channel.basic_nack(method.delivery_tag, requeue=True)
        assert channel.queue_declare(topology.events_queue, passive=True).method.message_count == 0
    finally:
        conn.close()


def dead_letter_of(db, event_id):
    rows = query(db, "SELECT reason, file_path, detail, error FROM ops.dead_letters WHERE event_id = %s",
                 (event_id,))
    assert len(rows) == 1, rows
    return rows[0]


def test_a_forged_x_death_moves_no_file_and_the_dead_letter_says_why(setup, db):
    path, config, ctx = setup
    victim = drop_file(config.landing_dir, "daily_activity/victim.csv", GOOD)
    before = os.lstat(victim)
    forged = described(config, "daily_activity/victim.csv")  # its very size and mtime
    post_forged(config, forged)
    run_recorder(config)

    assert victim.read_bytes() == GOOD
    after = os.lstat(victim)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert not (config.landing_dir / "_quarantine").exists()
    reason, file_path, detail, _ = dead_letter_of(db, forged.event_id)
    assert reason == "delivery_limit" and file_path == "daily_activity/victim.csv"
    assert detail["x_death"][0]["queue"] == Topology(config.prefix, config.delivery_limit).events_queue
    assert "no consumer" in detail["file_left"] and "daily_activity/victim.csv" in detail["file_left"]
    assert "file_moved" not in detail
    # Recorded, and the file is the watcher's: a replay does not take it.
    shown = cli_json(path, "dlq", "show", str(query(db, "SELECT id FROM ops.dead_letters")[0][0]))
    assert shown["detail"]["file_left"] == detail["file_left"]


def test_a_forged_message_reusing_a_loaded_events_id_moves_no_file(setup, db):
    """An event id a consumer did take, but finished: a file dropped again
    under that name is not that event's to move."""
    path, config, ctx = setup
    drop_file(config.landing_dir, "daily_activity/again.csv", GOOD)
    loaded = described(config, "daily_activity/again.csv")
    assert ingest_message(ctx, loaded.to_json()).status == "success"
    again = drop_file(config.landing_dir, "daily_activity/again.csv", GOOD)
    forged = described(config, "daily_activity/again.csv", event_id=loaded.event_id)
    post_forged(config, forged)
    run_recorder(config)

    assert again.read_bytes() == GOOD
    assert not (config.landing_dir / "_quarantine").exists()
    _, file_path, detail, _ = dead_letter_of(db, loaded.event_id)
    assert file_path == "daily_activity/again.csv" and "no consumer" in detail["file_left"]


def test_a_message_a_consumer_kept_dying_on_still_quarantines_its_file(setup, db):
    path, config, ctx = setup
    drop_file(config.landing_dir, "daily_activity/poison.csv", GOOD)
    event = described(config, "daily_activity/poison.csv")
    crash_until_dead_lettered(ctx, config, event)
    run_recorder(config)

    assert not (config.landing_dir / "daily_activity" / "poison.csv").exists()
    quarantined = config.landing_dir / "_quarantine" / "daily_activity" / "poison.csv"
    assert quarantined.read_bytes() == GOOD
    reason, file_path, detail, error = dead_letter_of(db, event.event_id)
    assert reason == "delivery_limit" and file_path == "_quarantine/daily_activity/poison.csv"
    assert "file_left" not in detail and error.startswith("the broker dead-lettered the message")
    statuses = query(db, "SELECT status, error_summary FROM ops.pipeline_runs WHERE event_id = %s AND reason IS NULL",
                     (event.event_id,))
    assert statuses and all(s == "failure" and e.startswith("interrupted") for s, e in statuses)
    # Its file is the dead letter's: discard may delete it.
    dead_id = query(db, "SELECT id FROM ops.dead_letters")[0][0]
    cli_json(path, "dlq", "discard", "--id", str(dead_id), "--delete-file")
    assert not quarantined.exists()


def test_discard_keeps_a_quarantined_file_no_consumer_took(setup, db):
    """A broker dead letter recorded by an earlier version on a forged
    message holds a quarantined path: ``--delete-file`` keeps that file."""
    path, config, ctx = setup
    declare(config)
    held = drop_file(config.landing_dir, "_quarantine/daily_activity/held.csv", GOOD)
    with db.cursor() as cur:
        cur.execute("INSERT INTO ops.dead_letters (event_id, source, reason, error, event, file_path)"
                    " VALUES ('55555555-5555-4555-8555-555555555555', 'daily_activity', 'delivery_limit', 'x',"
                    " '{\"kind\": \"file\", \"source\": \"daily_activity\", \"path\": \"daily_activity/held.csv\"}',"
                    " '_quarantine/daily_activity/held.csv') RETURNING id")
        dead_id = cur.fetchone()[0]
    db.commit()
    result = cli(path, "dlq", "discard", "--id", str(dead_id), "--delete-file", "--json")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    out = json.loads(result.stdout)
    assert held.read_bytes() == GOOD
    assert query(db, "SELECT discarded_at IS NOT NULL FROM ops.dead_letters WHERE id = %s", (dead_id,)) == [(True,)]
    assert any("no consumer" in problem for problem in out.get("problems", [])), out
