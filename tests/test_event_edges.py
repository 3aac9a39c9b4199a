"""Events at the edges of the event schema: one outcome each, never a crash.

A message on ingest.events is untrusted input. Whatever a body holds within
(or just outside) the event schema, handling it ends in exactly one run with
a final status and, when it failed, exactly one dead letter; it never raises
and never logs a traceback (which would have the worker redeliver it until
the broker's delivery limit). Values the database or the loader cannot take
(a size beyond bigint, a replay count beyond int, a fetch time that is not
an instant) are ``bad_event`` on the first delivery, naming the field.
"""
import hashlib
import json
import logging
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import load_config
from ingestd.daemon.events import parse_event

from .conftest import REPO, SOURCES_TOML, drop_file, query

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
API_SOURCE = """
[[sources]]
name = "fx"
kind = "api"
provider = "http_json"
url = "http://127.0.0.1:9/never-polled"
records_path = "observations"
partition = "month"
partition_by = "source_timestamp"

[[sources]]
name = "old_files"
format = "csv"
partition = "month"
partition_by = "source_timestamp"
"""
CSV = b"Id,ActivityDate\r\n1,4/12/2016\r\n"
BODY = '{"observations": [{"d": "2024-01-02", "v": "1.25"}]}'

INTEGERS = [-(2**63) - 1, -(2**63), -1, 0, 1, 599, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 10**30,
            1.0, 2.5, 1e300, -0.0, True, False]
TEXTS = ["", "x", "\x00", "a\x00b", "\ud800", "\udcff", "é", "../../etc/passwd", "/abs", "_quarantine/fx/a",
         "old_files/f.csv", "fx", "_unknown", "x" * 5000, "2024-01-01T00:00:00", "2024-01-01T00:00:00+00:00",
         "2024-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "garbage", "0001-01-01T00:00:00+00:00",
         "9999-12-31T23:59:59+14:00", "1969-07-20T20:17:40-05:00", "2024-01-01", "NaN"]
EDGES = st.one_of(st.sampled_from(INTEGERS), st.sampled_from(TEXTS), st.none(), st.just([]), st.just({}),
                  st.dictionaries(st.sampled_from(TEXTS), st.sampled_from(INTEGERS + TEXTS), max_size=3),
                  st.integers(), st.text(max_size=40))
MISSING = object()


def base_file_event(config) -> dict:
    """A valid event of daily_activity/f.csv, dropped again if a run before
    archived or quarantined it."""
    path = config.landing_dir / "old_files" / "f.csv"
    if not path.exists():
        drop_file(config.landing_dir, "old_files/f.csv", CSV)
    st_ = os.lstat(path)
    return {"version": 1, "event_id": str(uuid.uuid4()), "kind": "file", "source": "old_files",
            "created_at": "2024-01-01T00:00:00+00:00", "trigger": "file", "replay_count": 0,
            "path": "old_files/f.csv", "size": st_.st_size, "mtime_ns": st_.st_mtime_ns}


def base_payload_event() -> dict:
    return {"version": 1, "event_id": str(uuid.uuid4()), "kind": "payload", "source": "fx",
            "created_at": "2024-01-01T00:00:00+00:00", "trigger": "api", "replay_count": 0,
            "endpoint": "http://127.0.0.1:9/never-polled", "status_code": 200,
            "fetched_at": "2024-01-02T03:04:05+00:00", "body_sha256": hashlib.sha256(BODY.encode()).hexdigest(),
            "body_size": len(BODY), "body": BODY, "context": {"series": "X"}}


@st.composite
def edited(draw, base: dict) -> dict:
    """``base`` with some fields replaced by edge values or left out, and
    perhaps a field it does not know."""
    doc = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)):
        value = draw(st.one_of(EDGES, st.just(MISSING)))
        if value is MISSING:
            del doc[name]
        else:
            doc[name] = value
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["extra", "body_path", "size", "context"]))] = draw(EDGES)
    return doc


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.seen.append(record.getMessage())


@pytest.fixture
def setup(write_config):
    path = write_config(sources=SOURCES_TOML.format(schemas=REPO / "schemas") + API_SOURCE)
    config = load_config(path)
    drop_file(config.landing_dir, "old_files/f.csv", CSV)
    ctx = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), "t")
    tracebacks = Tracebacks()
    logging.getLogger("ingestd").addHandler(tracebacks)
    yield config, ctx, tracebacks
    logging.getLogger("ingestd").removeHandler(tracebacks)
    ctx.close()


def one_outcome(db, ctx, doc: dict, tracebacks: Tracebacks):
    body = json.dumps(doc).encode()
    outcome = ingest_message(ctx, body)
    assert outcome.status in ("success", "skipped", "failure"), outcome
    runs = query(db, "SELECT status FROM ops.pipeline_runs WHERE run_id = %s", (str(outcome.run_id),))
    assert runs == [(outcome.status,)], (doc, outcome)
    dead = query(db, "SELECT reason FROM ops.dead_letters WHERE run_id = %s", (str(outcome.run_id),))
    assert dead == ([(outcome.reason,)] if outcome.status == "failure" else []), (doc, outcome, dead)
    assert tracebacks.seen == [], (doc, tracebacks.seen)
    return outcome


def edge_values(base: dict) -> list[tuple[str, object]]:
    """Every (field, value) of one edit: each field of ``base`` (and one it
    does not know) with each edge value, or left out."""
    values: list[object] = [*INTEGERS, *TEXTS, None, [], {}, {"k": "\x00"}, MISSING]
    return [(name, value) for name in [*sorted(base), "extra"] for value in values]


def sweep(db, ctx, tracebacks, make_base) -> int:
    problems = []
    for name, value in edge_values(make_base()):
        doc = make_base()
        if value is MISSING:
            doc.pop(name, None)
        else:
            doc[name] = value
        try:
            one_outcome(db, ctx, doc, tracebacks)
        except Exception as exc:  # noqa: BLE001 - collected, then reported together
            problems.append(f"{name}={value!r:.60}: {type(exc).__name__}: {str(exc)[:300]}")
            tracebacks.seen.clear()
            ctx.drop_connection()
    assert problems == [], "\n".join(problems)
    return len(edge_values(make_base()))


def test_every_single_edge_of_a_file_event_ends_in_one_outcome(setup, db):
    config, ctx, tracebacks = setup
    assert sweep(db, ctx, tracebacks, lambda: base_file_event(config)) > 400


def test_every_single_edge_of_a_payload_event_ends_in_one_outcome(setup, db):
    config, ctx, tracebacks = setup
    assert sweep(db, ctx, tracebacks, base_payload_event) > 600


SETTINGS = settings(max_examples=max(30, EXAMPLES // 2), deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_file_events_at_the_schemas_edges_end_in_one_outcome(setup, db, data):
    config, ctx, tracebacks = setup
    one_outcome(db, ctx, data.draw(edited(base_file_event(config))), tracebacks)


@SETTINGS
@given(data=st.data())
def test_payload_events_at_the_schemas_edges_end_in_one_outcome(setup, db, data):
    config, ctx, tracebacks = setup
    one_outcome(db, ctx, data.draw(edited(base_payload_event())), tracebacks)


@pytest.mark.parametrize("field, value", [
    ("size", 2**63), ("replay_count", 2**31), ("mtime_ns", 2**63),
])
def test_numbers_the_tables_cannot_hold_are_bad_events_naming_the_field(setup, db, field, value):
    config, ctx, tracebacks = setup
    outcome = one_outcome(db, ctx, dict(base_file_event(config), **{field: value}), tracebacks)
    assert outcome.reason == "bad_event" and f"/{field}" in outcome.message


@pytest.mark.parametrize("value", ["2024-01-02T03:04:05", "yesterday", "2024-02-30T00:00:00Z", "2024-01-02",
                                   "0001-01-01T00:30:00+01:00", "9999-12-31T20:00:00-14:00",
                                   "9999-12-31T23:00:00+00:00"])
def test_a_fetch_time_that_is_not_an_instant_is_a_bad_event(setup, db, value):
    config, ctx, tracebacks = setup
    outcome = one_outcome(db, ctx, dict(base_payload_event(), fetched_at=value), tracebacks)
    assert outcome.reason == "bad_event" and "fetched_at" in outcome.message


def test_a_file_from_before_1970_loads(setup, db):
    config, ctx, tracebacks = setup
    path = config.landing_dir / "old_files" / "f.csv"
    os.utime(path, ns=(-86_400 * 10**9 * 366, -86_400 * 10**9 * 366))  # 1968-12-31: bronze by month of it
    outcome = one_outcome(db, ctx, base_file_event(config), tracebacks)
    assert outcome.status == "success", outcome
    assert query(db, "SELECT source_timestamp::date::text FROM bronze.old_files_p1968_12") == [("1968-12-31",)]


def test_integral_numbers_written_as_floats_are_the_integers(setup):
    config, ctx, tracebacks = setup
    doc = dict(base_file_event(config))
    doc["size"], doc["replay_count"] = float(doc["size"]), 1.0
    event = parse_event(json.dumps(doc).encode())
    assert (event.size, event.replay_count) == (doc["size"], 1)
    assert type(event.size) is int and type(event.replay_count) is int


def deep(levels: int) -> dict:
    node: dict = {}
    for _ in range(levels):
        node = {"a": node}
    return node


@pytest.mark.parametrize("context", [{"s": "\ud800"}, {"n": 2**64}, deep(300), {"long": "x" * 2000}],
                         ids=["lone surrogate", "beyond 64 bits", "300 levels", "2 KB"])
def test_a_context_bronze_cannot_store_or_that_would_multiply_is_a_bad_event(setup, db, context):
    config, ctx, tracebacks = setup
    outcome = one_outcome(db, ctx, dict(base_payload_event(), context=context), tracebacks)
    assert outcome.reason == "bad_event" and "/context" in outcome.message, outcome


def test_many_tiny_records_cannot_multiply_the_context_into_bronze(setup, db):
    config, ctx, tracebacks = setup
    body = '{"observations": [' + ",".join(["{}"] * 40_000) + "]}"
    doc = dict(base_payload_event(), body=body, body_size=len(body),
               body_sha256=hashlib.sha256(body.encode()).hexdigest(), context={"c": "x" * 1000})
    outcome = one_outcome(db, ctx, doc, tracebacks)
    assert outcome.reason == "too_large" and "context" in outcome.message, outcome
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest WHERE source = 'fx'") == [(0,)]


@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"version": NaN}', b'{"version": 1, "x": Infinity}'],
                         ids=["200 KB of [", "NaN", "Infinity"])
def test_bodies_json_cannot_hold_are_bad_events_at_once(setup, db, body):
    config, ctx, tracebacks = setup
    outcome = ingest_message(ctx, body)
    assert outcome.reason == "bad_event", outcome
    assert query(db, "SELECT count(*) FROM ops.dead_letters WHERE run_id = %s", (str(outcome.run_id),)) == [(1,)]
    assert tracebacks.seen == []


def test_a_lone_surrogate_in_an_event_is_a_bad_event_once_sources_validate_patterns(setup, db):
    """A consumer that validates a source's patterns matches them as ECMA-262 (regress, UTF-8 only),
    the event schema's too: a lone surrogate where a pattern applies must still be one outcome."""
    from ingestd.consumers.validation import RecordValidator
    config, ctx, tracebacks = setup
    RecordValidator({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}, "any")
    for field in ("event_id", "body_sha256"):
        outcome = one_outcome(db, ctx, dict(base_payload_event(), **{field: "\ud800"}), tracebacks)
        assert outcome.reason == "bad_event" and f"/{field}" in outcome.message, outcome
    assert RecordValidator({"type": "string", "pattern": "^a.b$"}, "any").errors("a\udcffb") is None
