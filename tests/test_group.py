"""Small files in groups (consumers/group.py) and pipelined publishing
(broker.Publisher.publish_many): the same outcomes as one file at a time,
fewer transactions, against the real PostgreSQL (and RabbitMQ where a
broker is the point)."""
import hashlib
import json
import signal
import threading
import time

import pika
import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.consumers import group
from ingestd.consumers.ingest import ingest_message
from ingestd.daemon.broker import Message, Publisher, Topology
from ingestd.daemon.events import FileEvent
from ingestd.daemon.ledger import INTERRUPTED

from .conftest import FITBIT, drop_file, query
from .test_e2e import wait_for
from .test_ingest import event_for

pytestmark = pytest.mark.integration

HEADER, *ROWS = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")
ROWS = [row for row in ROWS if row]


def small_csv(n: int) -> bytes:
    """Two real Fitbit rows, with ids of file ``n``'s own."""
    rows = (b"%d,%s" % (7 * 10**9 + 2 * n + i, ROWS[i].split(b",", 1)[1]) for i in range(2))
    return HEADER + b"\r\n" + b"\r\n".join(rows) + b"\r\n"


@pytest.fixture
def contexts(config, ingest_contexts):
    return lambda name="group-test": ingest_contexts(config, name)


def primed(ctx, config, *sources, n=10**6):
    """Load one file of each source on the single way first: a group takes
    only sources whose bronze table its worker has seen."""
    for source in sources:
        name = f"{source}/prime-{n}.{'csv' if source == 'daily_activity' else 'jsonl'}"
        drop_file(config.landing_dir, name, small_csv(n) if source == "daily_activity" else b'{"a": 1}\n')
        assert ingest_message(ctx, event_for(config, name).to_json()).status == "success"


def run_group(ctx, bodies):
    """ingest_group, then the single way for what it left, as a worker does."""
    outcomes = {}

    def done(index, outcome):
        assert index not in outcomes, "an event ended twice"
        outcomes[index] = outcome
    group.ingest_group(ctx, bodies, done)
    grouped = set(outcomes)
    for index, body in enumerate(bodies):
        if index not in outcomes:
            outcomes[index] = ingest_message(ctx, body)
    return grouped, outcomes


def test_a_group_ends_every_event_as_alone_and_commits_its_loads_together(contexts, config, db):
    ctx = contexts()
    primed(ctx, config, "daily_activity", "events_jsonl")
    landing = config.landing_dir
    bodies, expect = [], []

    def add(body, status, says=""):
        bodies.append(body)
        expect.append((status, says))

    for n in range(5):
        drop_file(landing, f"daily_activity/good-{n}.csv", small_csv(n))
        add(event_for(config, f"daily_activity/good-{n}.csv").to_json(), "success")
    # The same event twice in one group (a redelivery beside its original).
    add(bodies[1], "skipped", "event already loaded")
    drop_file(landing, "daily_activity/copy-of-0.csv", small_csv(0))
    add(event_for(config, "daily_activity/copy-of-0.csv").to_json(), "skipped", "same bytes already loaded")
    drop_file(landing, "events_jsonl/broken.jsonl", b'{"a": 1}\n{"a": \n')
    add(event_for(config, "events_jsonl/broken.jsonl").to_json(), "failure", "parse_error")
    drop_file(landing, "daily_activity/changed.csv", small_csv(20))
    moved_on = event_for(config, "daily_activity/changed.csv")
    add(FileEvent(moved_on.source, moved_on.path, moved_on.size, moved_on.mtime_ns - 1).to_json(), "skipped",
        "the file changed after the event was published")
    add(FileEvent("daily_activity", "daily_activity/never-there.csv", 10, 1).to_json(), "failure",
        "unreadable_file")
    add(b"not an event", "failure", "bad_event")
    drop_file(landing, "daily_activity/large.csv", HEADER + b"\r\n" + b"\r\n".join(ROWS * 3) + b"\r\n")
    assert (landing / "daily_activity/large.csv").stat().st_size > group.MAX_FILE_BYTES
    add(event_for(config, "daily_activity/large.csv").to_json(), "success")

    grouped, outcomes = run_group(ctx, bodies)

    assert grouped == set(range(len(bodies))) - {len(bodies) - 2, len(bodies) - 1}  # not an event; too large
    for index, (status, says) in enumerate(expect):
        outcome = outcomes[index]
        assert outcome.status == status, (index, outcome)
        assert says in (outcome.reason or "") + outcome.message, (index, outcome)
    # Each event one run, none left running; the loads of the group in one
    # transaction (now(), the default of ingested_at, is its start).
    assert query(db, "SELECT count(*), count(*) FILTER (WHERE status = 'running') FROM ops.pipeline_runs") == [
        (len(bodies) + 2, 0)]
    good = query(db, "SELECT count(*), count(DISTINCT ingested_at) FROM ops.raw_ingest_manifest"
                     " WHERE source_filename LIKE 'daily_activity/good-%%'")
    assert good == [(5, 1)]
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(2 + 5 * 2 + 3 * len(ROWS),)]
    assert query(db, "SELECT count(*) FROM bronze.events_jsonl") == [(1,)]
    # Archived: both primes, the good ones, the copy and the large one; the
    # changed file waits for its newer event.
    assert len(list((landing / "_archive").rglob("*.*"))) == 9
    assert [p.name for p in (landing / "daily_activity").iterdir()] == ["changed.csv"]
    assert len(list((landing / "_quarantine").rglob("broken.jsonl*"))) == 1
    reasons = sorted(r for (r,) in query(db, "SELECT reason FROM ops.dead_letters"))
    assert reasons == ["bad_event", "parse_error", "unreadable_file"]


def test_groups_of_two_workers_never_wait_on_each_other_and_load_shared_bytes_once(contexts, config, db):
    first, second = contexts("worker-a"), contexts("worker-b")
    primed(first, config, "daily_activity")
    primed(second, config, "daily_activity", n=10**6 + 1)
    landing = config.landing_dir
    work = {}
    for name, offset in (("a", 0), ("b", 100)):
        names = [f"daily_activity/{name}-{n}.csv" for n in range(12)]
        for n, relative in enumerate(names):
            # Files 0-5 of each worker are the same bytes as the other's.
            drop_file(landing, relative, small_csv(n if n < 6 else offset + n))
        work[name] = [event_for(config, relative).to_json() for relative in names]
    results, barrier = {}, threading.Barrier(2)

    def worker(name, ctx):
        ctx.conn()
        barrier.wait()
        results[name] = run_group(ctx, work[name])[1]

    threads = [threading.Thread(target=worker, args=("a", first)), threading.Thread(target=worker, args=("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "two groups waited on each other"
    statuses = sorted(o.status for outcomes in results.values() for o in outcomes.values())
    assert statuses == ["skipped"] * 6 + ["success"] * 18
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == [(2 + 18,)]
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(2 * 2 + 18 * 2,)]
    assert query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'") == [(0,)]


def test_a_group_cut_before_its_commit_loads_nothing_and_its_events_load_alone_after(contexts, config, db):
    ctx = contexts()
    primed(ctx, config, "daily_activity")
    names = [f"daily_activity/cut-{n}.csv" for n in range(4)]
    for n, relative in enumerate(names):
        drop_file(config.landing_dir, relative, small_csv(n))
    bodies = [event_for(config, relative).to_json() for relative in names]

    def lost():
        raise psycopg2.OperationalError("server closed the connection unexpectedly")
    ctx.before_commit = lost
    ended = []
    with pytest.raises(psycopg2.OperationalError):
        group.ingest_group(ctx, bodies, lambda index, outcome: ended.append(index))
    assert ended == []
    ctx.before_commit = None
    ctx.drop_connection()
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest") == [(1,)]
    # What the worker does next: each event alone, as a redelivery would.
    assert [ingest_message(ctx, body).status for body in bodies] == ["success"] * 4
    runs = query(db, "SELECT status, error_summary FROM ops.pipeline_runs WHERE file_path LIKE '%%cut-%%'"
                     " ORDER BY status")
    assert [status for status, _ in runs] == ["failure"] * 4 + ["success"] * 4
    assert all(summary.startswith(INTERRUPTED) for status, summary in runs if status == "failure")
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(2 + 4 * 2,)]


def test_publish_many_confirms_each_message_and_names_the_one_returned(config):
    topology = Topology(config.prefix, config.delivery_limit)
    publisher = Publisher(config.amqp_url, topology, role="publish-many-test")
    unbound = f"{config.prefix}test.unbound"
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(unbound, exchange_type="fanout", auto_delete=False)
    try:
        messages = [Message(topology.events_exchange, f"file.m{n}", json.dumps({"n": n}).encode(), f"id-{n}")
                    for n in range(300)]
        messages.insert(150, Message(unbound, "nowhere", b"{}", "id-lost"))
        verdicts = publisher.publish_many(messages)
        assert [i for i, v in enumerate(verdicts) if v is not None] == [150]
        assert "id-lost" in verdicts[150] and "unroutable" in verdicts[150]
        # The same publisher goes on: a single publish waits for its confirm.
        publisher.publish(topology.events_exchange, "file.last", b'{"n": 300}', "id-300")
        got = []
        while True:
            method, properties, body = channel.basic_get(topology.events_queue, auto_ack=True)
            if method is None:
                break
            got.append(properties.message_id)
        assert got == [f"id-{n}" for n in range(301)]
    finally:
        publisher.close()
        channel.exchange_delete(unbound)
        connection.close()


def test_a_nacked_publish_is_named_and_the_next_try_runs_on_a_fresh_channel(config):
    """A queue that refuses (here: full, reject-publish) nacks; the publisher
    names the message, drops the channel that saw the nack, and a later try
    goes through once the queue takes messages again."""
    topology = Topology(config.prefix, config.delivery_limit)
    publisher = Publisher(config.amqp_url, topology, role="nack-test")
    full = f"{config.prefix}test.full"
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    channel = connection.channel()
    try:
        assert publisher.connect() is None
        channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        channel.queue_bind(full, topology.events_exchange, "file.refused.#")
        verdicts = publisher.publish_many([
            Message(topology.events_exchange, "file.kept", b"{}", "id-kept"),
            Message(topology.events_exchange, "file.refused.one", b"{}", "id-refused"),
        ])
        assert verdicts[0] is None
        assert verdicts[1] is not None and "id-refused" in verdicts[1] and "nack" in verdicts[1]
        assert not publisher.connected
        channel.queue_delete(full)
        publisher.publish(topology.events_exchange, "file.refused.one", b"{}", "id-refused")
        assert publisher.connected
        got = []
        while (delivery := channel.basic_get(topology.events_queue, auto_ack=True))[0] is not None:
            got.append(delivery[1].message_id)
        # A nack says that not every queue took the message: the events queue
        # did, so the retry makes a second copy (at-least-once; the consumer
        # loads a file once by its checksum).
        assert got == ["id-kept", "id-refused", "id-refused"]
    finally:
        publisher.close()
        channel.queue_delete(full)
        connection.close()


def test_a_burst_under_ingestd_run_loads_in_groups_each_file_once(procs, db, tmp_path, write_config, prefix,
                                                                  amqp_url):
    landing = tmp_path / "data_lake"
    proc = procs(write_config(), "run", "--workers", "2")
    drop_file(landing, "daily_activity/first.csv", small_csv(10**5))
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] == 1)
    staging = tmp_path / "staging"
    staging.mkdir()
    count = 400
    for n in range(count):
        (staging / f"burst-{n}.csv").write_bytes(small_csv(n))
    for n in range(count):
        (staging / f"burst-{n}.csv").rename(landing / "daily_activity" / f"burst-{n}.csv")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] == count + 1, timeout=120)
    time.sleep(0.5)
    assert query(db, "SELECT status, count(*) FROM ops.pipeline_runs GROUP BY status") == [("success", count + 1)]
    digests = {hashlib.sha256(small_csv(n)).hexdigest() for n in range(count)}
    assert {c for (c,) in query(db, "SELECT checksum FROM ops.raw_ingest_manifest")} >= digests
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(2 * (count + 1),)]
    transactions = query(db, "SELECT count(DISTINCT ingested_at) FROM ops.raw_ingest_manifest")[0][0]
    assert transactions < count / 2, f"{count} files in {transactions} transactions: not grouped"
    assert not list((landing / "daily_activity").glob("burst-*.csv"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    # Every event was acked (groups ack many at once): none came back to the queue.
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        queue = connection.channel().queue_declare(Topology(prefix).events_queue, passive=True)
        assert queue.method.message_count == 0
    finally:
        connection.close()


def test_a_group_of_mostly_broken_files_ends_each_as_alone(contexts, config, db):
    """More failing loads than a group retries: every event still ends as it
    would alone, the good one loaded once."""
    ctx = contexts()
    primed(ctx, config, "events_jsonl")
    names = [f"events_jsonl/broken-{n}.jsonl" for n in range(group.MAX_ATTEMPTS + 2)] + ["events_jsonl/fine.jsonl"]
    for relative in names[:-1]:
        drop_file(config.landing_dir, relative, b'{"a": 1}\n{"a": ' + relative.encode() + b"\n")
    drop_file(config.landing_dir, names[-1], b'{"fine": true}\n')
    grouped, outcomes = run_group(ctx, [event_for(config, relative).to_json() for relative in names])
    assert grouped == set(range(len(names)))
    assert [(o.status, o.reason) for o in outcomes.values()][:-1] == [("failure", "parse_error")] * (len(names) - 1)
    assert outcomes[len(names) - 1].status == "success"
    assert query(db, "SELECT count(*) FROM bronze.events_jsonl") == [(2,)]
    assert query(db, "SELECT count(*) FROM ops.dead_letters WHERE reason = 'parse_error'") == [(len(names) - 1,)]
    assert query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'") == [(0,)]


def test_files_of_one_source_in_a_group_keep_each_its_own_lineage(contexts, config, db):
    """One COPY takes a group's files of a source: every row still names its
    own file, hash, run and record number."""
    ctx = contexts()
    primed(ctx, config, "daily_activity", "events_jsonl")
    names = [f"daily_activity/lineage-{n}.csv" for n in range(4)] + ["events_jsonl/lineage.jsonl"]
    contents = {}
    for n, relative in enumerate(names[:4]):
        contents[relative] = small_csv(100 + n)
        drop_file(config.landing_dir, relative, contents[relative])
    contents[names[4]] = b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    drop_file(config.landing_dir, names[4], contents[names[4]])
    grouped, outcomes = run_group(ctx, [event_for(config, relative).to_json() for relative in names])
    assert grouped == set(range(len(names)))
    assert all(o.status == "success" for o in outcomes.values())
    for index, relative in enumerate(names):
        table = "bronze.daily_activity" if relative.startswith("daily") else "bronze.events_jsonl"
        rows = query(db, f"SELECT record_number, file_hash, pipeline_run_id::text, raw_data FROM {table}"
                         " WHERE file_path = %s ORDER BY record_number", (relative,))
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and rows
        assert {r[1] for r in rows} == {hashlib.sha256(contents[relative]).hexdigest()}
        assert {r[2] for r in rows} == {str(outcomes[index].run_id)}
        if relative.startswith("daily"):
            ids = [int(r[3]["Id"]) for r in rows]
            assert ids == [7 * 10**9 + 2 * (100 + index) + i for i in range(2)]
        else:
            assert [r[3] for r in rows] == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_row_the_database_refuses_in_a_group_dead_letters_its_file_alone(contexts, config, db):
    """A row refused by the database inside one COPY of several files names
    no file: the group loads again a file at a time, the one file is a
    load_error, the others load once."""
    ctx = contexts()
    primed(ctx, config, "daily_activity")
    refused = 7 * 10**9 + 2 * 202
    with db.cursor() as cur:
        cur.execute("CREATE FUNCTION bronze.refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.raw_data->>'Id' = '{refused}' THEN "
                    "RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = '22023'; END IF; "
                    "RETURN NEW; END $$")
        cur.execute("CREATE TRIGGER refuse_one BEFORE INSERT ON bronze.daily_activity "
                    "FOR EACH ROW EXECUTE FUNCTION bronze.refuse_one()")
    db.commit()
    names = [f"daily_activity/refuse-{n}.csv" for n in range(200, 205)]
    for n, relative in zip(range(200, 205), names, strict=True):
        drop_file(config.landing_dir, relative, small_csv(n))
    grouped, outcomes = run_group(ctx, [event_for(config, relative).to_json() for relative in names])
    assert grouped == set(range(len(names)))
    assert [(outcomes[i].status, outcomes[i].reason) for i in range(len(names))] == [
        ("success", None), ("success", None), ("failure", "load_error"), ("success", None), ("success", None)]
    assert "refused by a test trigger" in outcomes[2].message
    loaded = query(db, "SELECT file_path, count(*) FROM bronze.daily_activity WHERE file_path LIKE "
                       "'daily_activity/refuse-%%' GROUP BY 1 ORDER BY 1")
    assert loaded == [(relative, 2) for i, relative in enumerate(names) if i != 2]
    # The other four stayed in the group: one transaction (now() is its start).
    assert query(db, "SELECT count(DISTINCT ingested_at) FROM bronze.daily_activity WHERE file_path LIKE "
                     "'daily_activity/refuse-%%'") == [(1,)]
    assert query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running'") == [(0,)]


@settings(max_examples=200, deadline=None, database=None)
@given(settled=st.sets(st.integers(0, 40)))
def test_the_acks_of_a_group_answer_each_settled_delivery_once_and_no_other(settled):
    """A multiple ack covers only deliveries the group settled: every one
    before it in the batch is settled; the others are acked one by one."""
    from ingestd.consumers.worker import ack_plan

    through, singles = ack_plan(settled)
    covered = set(range(through + 1)) if through is not None else set()
    assert covered <= settled
    assert covered.isdisjoint(singles) and len(singles) == len(set(singles))
    assert covered | set(singles) == settled
