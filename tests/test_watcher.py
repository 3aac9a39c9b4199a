"""The watcher against the real broker: what gets published, and when."""
import json
import threading
import time

import pika
import pytest

from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import load_config
from ingestd.daemon.watcher import Watcher

from .conftest import drop_file

pytestmark = pytest.mark.integration


def events_in_queue(config):
    conn = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    ch = conn.channel()
    Topology(config.prefix, config.delivery_limit).declare(ch)
    found = []
    while True:
        method, props, body = ch.basic_get(Topology(config.prefix).events_queue, auto_ack=True)
        if method is None:
            break
        found.append((method.routing_key, props.message_id, json.loads(body)))
    conn.close()
    return found


@pytest.fixture
def watcher_for(write_config):
    running = []

    def make(landing_extra=""):
        config = load_config(write_config(landing_extra=landing_extra))
        stop = threading.Event()
        watcher = Watcher(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), stop)
        thread = threading.Thread(target=watcher.run, daemon=True)
        running.append((stop, thread))
        return config, watcher, thread

    yield make
    for stop, thread in running:
        stop.set()
        thread.join(timeout=10)


def collect(config, n, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < n:
        got += events_in_queue(config)
        time.sleep(0.1)
    return got


def test_existing_and_new_files_are_published_once(watcher_for):
    config, watcher, thread = watcher_for()
    drop_file(config.landing_dir, "daily_activity/before.csv", b"a\n1\n")
    drop_file(config.landing_dir, "daily_activity/.hidden.csv", b"a\n1\n")
    thread.start()
    got = collect(config, 1)
    drop_file(config.landing_dir, "daily_activity/sub/after.csv", b"a\n2\n")
    got += collect(config, 1)
    time.sleep(2.5)  # past a rescan: nothing is published twice
    got += events_in_queue(config)
    paths = sorted(e[2]["path"] for e in got)
    assert paths == ["daily_activity/before.csv", "daily_activity/sub/after.csv"]
    key, message_id, event = got[0]
    assert key == "file.daily_activity" and message_id == event["event_id"] and event["version"] == 1


def test_file_held_open_by_its_writer_waits_until_closed(watcher_for):
    config, watcher, thread = watcher_for()
    thread.start()
    (config.landing_dir / "events_jsonl").mkdir(parents=True, exist_ok=True)
    with open(config.landing_dir / "events_jsonl" / "slow.jsonl", "wb") as fh:
        for i in range(4):
            fh.write(b'{"i": %d}\n' % i)
            fh.flush()
            time.sleep(0.6)  # longer than settle_seconds
        assert events_in_queue(config) == []
    got = collect(config, 1)
    assert len(got) == 1 and got[0][2]["size"] == 4 * len(b'{"i": 0}\n')


def test_polling_mode_waits_for_size_to_settle(watcher_for):
    config, watcher, thread = watcher_for('polling = true\npoll_interval_seconds = 0.2')
    thread.start()
    drop_file(config.landing_dir, "events_jsonl/p.jsonl", b'{"a": 1}\n')
    got = collect(config, 1)
    assert [e[2]["path"] for e in got] == ["events_jsonl/p.jsonl"]


def test_broker_down_files_wait_and_watcher_survives(write_config):
    config = load_config(write_config())
    stop = threading.Event()
    dead = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", Topology(config.prefix))
    watcher = Watcher(config, dead, stop)
    drop_file(config.landing_dir, "events_jsonl/w.jsonl", b'{"a": 1}\n')
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and "events_jsonl/w.jsonl" in watcher.pending
    # The broker comes back (here: the publisher is pointed at the real one).
    watcher.publisher.url = config.amqp_url
    watcher._next_publish_try = 0
    got = collect(config, 1)
    stop.set()
    thread.join(timeout=10)
    assert [e[2]["path"] for e in got] == ["events_jsonl/w.jsonl"]


def test_underscored_folders_are_not_watched_and_new_or_replaced_source_folders_are(watcher_for):
    import os
    import shutil
    import warnings

    config, watcher, thread = watcher_for()
    landing = config.landing_dir
    (landing / "_archive" / "a" / "2026" / "11" / "25").mkdir(parents=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread.start()
        time.sleep(1.0)
        # The archive grows while the watcher runs, as loads archive files.
        (landing / "_archive" / "a" / "2026" / "11" / "26" / "x").mkdir(parents=True)
        drop_file(landing, "_archive/a/2026/11/26/x/old.csv", b"a\n1\n")
        # A source folder made after start, with nested folders at once.
        drop_file(landing, "late_source/2026/11/f.jsonl", b'{"a": 1}\n')
        got = collect(config, 1)
        assert [e[2]["path"] for e in got] == ["late_source/2026/11/f.jsonl"]
        # The same folder deleted and made again: watched again.
        shutil.rmtree(landing / "late_source")
        time.sleep(0.5)
        os.makedirs(landing / "late_source")
        time.sleep(0.5)
        drop_file(landing, "late_source/g.jsonl", b'{"a": 2}\n')
        got = collect(config, 1)
        assert [e[2]["path"] for e in got] == ["late_source/g.jsonl"]
    assert not [w for w in caught if "already exists" in str(w.message)]
    assert set(watcher._watched) == {"", "late_source"} | {s for s in config.sources if (landing / s).is_dir()}
