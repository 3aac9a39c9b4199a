"""Quality on every run: what a run's records say beyond valid or not (consumers/quality.py),
recorded in ops.pipeline_runs.quality, drift in ops.undeclared_fields, and the metrics the
alert rules read (deploy/monitoring/alerts.yml)."""
from __future__ import annotations

import json
import subprocess

import pytest
from prometheus_client import generate_latest

from ingestd.consumers.quality import MAX_FIELDS, MAX_NAME, RunQuality

from .conftest import drop_file, ingestd_cmd, query

SCHEMA = {"type": "object", "required": ["id", "name"],
          "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "note": {"type": "string"}},
          "patternProperties": {"^x_": {}}}


def test_missing_required_failures_and_drift_are_counted():
    quality = RunQuality(SCHEMA)
    records = [({"id": 1, "name": "a", "x_extra": 1}, None),
               ({"id": 2, "name": "b", "colour": "red"}, None),
               ({"id": "3"}, [{"pointer": "/id", "keyword": "type"}, {"pointer": "/", "keyword": "required"}]),
               ({"name": "d", "colour": "blue", "size": 2}, [{"pointer": "/", "keyword": "required"}])]
    for record, errors in records:
        quality.observe(record, errors)
    summary = quality.summary(len(records))
    assert summary["missing_required"] == {"id": 0.25, "name": 0.25}
    assert summary["top_failures"][0] == {"keyword": "required", "pointer": "/", "count": 2}
    assert summary["undeclared_fields"] == ["colour", "size"]  # x_extra is declared by its pattern
    assert summary["never_seen"] == ["note"]


def test_a_file_of_endless_new_field_names_keeps_the_counts_bounded():
    quality = RunQuality(SCHEMA)
    for n in range(10_000):
        quality.observe({"id": n, "name": "x", f"{n}{'k' * 5000}": 1}, None)
        quality.observe({"id": n}, [{"pointer": f"/arr/{n}" + "/y" * 1000, "keyword": "type"}])
    summary = quality.summary(20_000)
    assert len(summary["undeclared_fields"]) == MAX_FIELDS and summary["undeclared_more"] is True
    assert all(len(name) <= MAX_NAME for name in summary["undeclared_fields"])
    assert len(quality.failures) <= 1000 and all(len(p) <= MAX_NAME for _, p in quality.failures)


def test_a_schema_without_properties_says_no_drift():
    quality = RunQuality({"type": "object"})
    quality.observe({"anything": 1}, None)
    assert "undeclared_fields" not in quality.summary(1) and "never_seen" not in quality.summary(1)


@pytest.mark.integration
def test_a_run_records_its_quality_and_new_undeclared_fields_once(write_config, tmp_path, db):
    from ingestd.consumers.ingest import IngestContext, ingest_message
    from ingestd.daemon.broker import Publisher, Topology
    from ingestd.daemon.config import load_config
    from ingestd.daemon.db import migrate
    from ingestd.daemon.metrics import REGISTRY

    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    config = load_config(write_config(sources=f"""
[[sources]]
name = "q"
format = "jsonl"
schema = "{tmp_path / 's.json'}"
max_invalid_ratio = 0.9
objectives = {{ invalid_record_ratio = 0.05 }}
"""))
    assert config.sources["q"].objectives == {"run_error_ratio": 0.01, "invalid_record_ratio": 0.05,
                                              "latency_p95_seconds": 2.0}
    migrate(config.database_url)
    from ingestd.daemon.events import FileEvent
    publisher = Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit))
    ctx = IngestContext(config, publisher, "test-worker")

    def load(name: str, lines: list[dict]):
        target = drop_file(config.landing_dir, f"q/{name}", "".join(json.dumps(r) + "\n" for r in lines).encode())
        event = FileEvent(source="q", path=f"q/{name}", size=target.stat().st_size,
                          mtime_ns=target.stat().st_mtime_ns, trigger="file")
        return ingest_message(ctx, event.to_json())

    def counted(name: str, labels: str) -> float:
        for line in generate_latest(REGISTRY).decode().splitlines():
            if line.startswith(f"{name}{{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    try:
        first = load("a.jsonl", [{"id": 1, "name": "a", "colour": "red"}, {"id": 2}])
        second = load("b.jsonl", [{"id": 3, "name": "c", "colour": "blue", "size": 1}])
    finally:
        ctx.close()
    assert (first.status, first.new_fields, second.new_fields) == ("success", ["colour"], ["size"])
    stored = dict(query(db, "SELECT file_path, quality FROM ops.pipeline_runs WHERE source = 'q'"))
    assert stored["q/a.jsonl"]["missing_required"] == {"name": 0.5}
    assert stored["q/a.jsonl"]["undeclared_fields"] == ["colour"] and stored["q/a.jsonl"]["never_seen"] == ["note"]
    assert stored["q/b.jsonl"]["undeclared_fields"] == ["colour", "size"]
    assert sorted(query(db, "SELECT field FROM ops.undeclared_fields WHERE source = 'q'")) == [("colour",),
                                                                                               ("size",)]
    assert counted("ingestd_undeclared_fields_new_total", 'source="q"') >= 2
    assert counted("ingestd_records_checked_total", 'source="q",validity="invalid"') >= 1

    # What the operator reads: the runs list, one run whole, the status screen.
    cli = ["--config", str(config.path)]
    listing = subprocess.run(ingestd_cmd(*cli, "runs", "--source", "q"), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "2/1/1" in listing.stdout and "1/1/0" in listing.stdout and str(first.run_id) not in listing.stdout
    detail = subprocess.run(ingestd_cmd(*cli, "runs", "--id", str(first.run_id)), capture_output=True, text=True,
                            timeout=60)
    assert detail.returncode == 0, detail.stderr
    lines = detail.stdout.splitlines()
    assert any(line.startswith("missing required:") and "name 50.0 %" in line for line in lines), detail.stdout
    assert any(line.startswith("undeclared fields:") and line.endswith("colour") for line in lines), detail.stdout
    assert any(line.startswith("never seen:") and line.endswith("note") for line in lines), detail.stdout
    assert any("required at /" in line for line in lines), detail.stdout  # the top failure and where
    assert subprocess.run(ingestd_cmd(*cli, "runs", "--id", "not-a-uuid"), capture_output=True,
                          timeout=60).returncode == 2
    assert subprocess.run(ingestd_cmd(*cli, "runs", "--id", "00000000-0000-0000-0000-000000000000"),
                          capture_output=True, timeout=60).returncode == 1

    status = subprocess.run(ingestd_cmd(*cli, "status", "--json"), capture_output=True, text=True, timeout=120)
    doc = json.loads(status.stdout)
    figures = doc["quality"]["q"]
    assert figures["last_hour"] == figures["last_day"] == {"checked": 3, "invalid": 1}
    assert (figures["undeclared_fields"], figures["undeclared_new_today"]) == (2, 2)
    assert sorted(figures["undeclared_new_today_names"]) == ["colour", "size"]
    # 1 invalid of 3 is above the source's objective of 5 %: attention, exit 1; drift is a note.
    assert status.returncode == 1
    assert any(p.startswith("source q: 1 of the 3 records checked in the last hour were invalid")
               for p in doc["problems"]), doc["problems"]
    assert any(n.startswith("source q: 2 field(s)") for n in doc["notes"]), doc["notes"]
    screen = subprocess.run(ingestd_cmd(*cli, "status"), capture_output=True, text=True, timeout=120).stdout
    assert "VALID, LAST HOUR" in screen and "66.6 % of 3" in screen and "2 (2 new today)" in screen, screen
