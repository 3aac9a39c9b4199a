"""A message that is not an event, replayed: each failure counts, so the
replay limit ends the loop, and the dead queue keeps one message a failure."""
import json
import uuid

import pika
import pytest

from ingestd.daemon.broker import Topology
from ingestd.daemon.config import load_config

from .conftest import query
from .test_dlq import cli, cli_json
from .test_e2e import wait_for

pytestmark = pytest.mark.integration


def publish_raw(config, body: bytes, message_id: str) -> None:
    topology = Topology(config.prefix, config.delivery_limit)
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = conn.channel()
        topology.declare(channel)
        channel.basic_publish(topology.events_exchange, "file.daily_activity", body,
                              pika.BasicProperties(message_id=message_id, delivery_mode=2))
    finally:
        conn.close()


OWN_ID = str(uuid.uuid4())


@pytest.mark.parametrize("body, parked_under", [
    (b'{"hello": "not an event"}', "message id"),
    (b'{"version": 1, "kind": "file", "source": "daily_activity", "event_id": "%s"}' % OWN_ID.encode(), OWN_ID),
])
def test_replays_of_a_bad_event_count_up_to_the_replay_limit(write_config, db, procs, body, parked_under):
    path = write_config(extra="[dlq]\nreplay_limit = 2")
    config = load_config(path)
    procs(path, "consume")
    message_id = str(uuid.uuid4())
    publish_raw(config, body, message_id)
    if parked_under != "message id":
        message_id = parked_under
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 1)
    for attempt in (1, 2):
        replayed = cli_json(path, "dlq", "replay", "--all", check_exit=1)
        assert (replayed["replayed"], replayed["failed_again"]) == (1, 1), replayed
        rows = query(db, "SELECT event_id::text, reason, replay_count FROM ops.dead_letters ORDER BY id")
        assert rows[-1] == (message_id, "bad_event", attempt), rows
        listed = cli_json(path, "dlq", "list")
        assert (listed["waiting"], listed["queue_messages"]) == (1, 1), listed
    refused = cli(path, "dlq", "replay", "--all", check_exit=1)  # the limit: no endless loop
    assert "replay limit reached (2 of 2)" in refused.stderr
    assert [r[0] for r in query(db, "SELECT replay_count FROM ops.dead_letters ORDER BY id")] == [0, 1, 2]
    assert json.dumps(cli_json(path, "dlq", "show", str(query(db, "SELECT max(id) FROM ops.dead_letters")[0][0]))[
        "history"]).count('"reason": "bad_event"') == 3
