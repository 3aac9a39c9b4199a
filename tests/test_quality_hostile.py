"""Hostile input on the quality surfaces: field names a file's author chooses, objectives an
operator writes, quality documents an older (or hand-edited) row holds, and what the alert rules
and the operator's views make of them. Nothing here may fail a load, change a stored row, or
grow without bound."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.daemon.config import OBJECTIVES, build_config
from ingestd.daemon.errors import ConfigError

from .conftest import query

RATIO_KEYS = ("run_error_ratio", "invalid_record_ratio")


def objectives_doc(where: str, key: str, value: float) -> dict:
    table = {key: value}
    source = {"name": "q", "format": "jsonl"}
    if where == "source":
        return {"sources": [{**source, "objectives": table}]}
    return {"objectives": table, "sources": [source]}


def acceptable(key: str, value: float) -> bool:
    if not math.isfinite(value):
        return False
    return 0 <= value <= 1 if key in RATIO_KEYS else 0 < value <= 86400


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(["global", "source"]), key=st.sampled_from(OBJECTIVES),
       value=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, -math.nan, 0.0, 1.0]))
def test_an_objective_is_a_finite_number_in_its_range_or_the_config_is_refused(where, key, value):
    """NaN compares false with everything: an objective of NaN would silence its alert (and the
    status screen's verdict) for good, while the configuration looks set."""
    doc = objectives_doc(where, key, value)
    if acceptable(key, value):
        config = build_config(doc, base_dir=Path("/tmp"), environ={})
        assert config.sources["q"].objectives[key] == value
    else:
        with pytest.raises(ConfigError) as refused:
            build_config(doc, base_dir=Path("/tmp"), environ={})
        assert key in str(refused.value)


MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"


def promtool_or_skip() -> str:
    import os
    import shutil

    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)"
        if os.environ.get("INGESTD_TEST_LIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_the_largest_latency_objective_can_fire(tmp_path):
    """histogram_quantile never says more than the largest finite bucket: an objective at or above
    it (the config takes up to 86400 s) would be an alert that cannot fire. With the real buckets
    of ingestd_end_to_end_latency_seconds, loads of 3 days against the largest objective fire."""
    import json
    import shutil
    import subprocess

    from ingestd.daemon.config import config_schema
    from ingestd.daemon.metrics import LATENCY

    schema = config_schema()["properties"]["objectives"]["properties"]["latency_p95_seconds"]
    largest = schema["maximum"]
    bounds = [b for b in LATENCY._upper_bounds if math.isfinite(b)]
    assert max(bounds) > largest
    labels = 'source="slow", instance="consumer-1:9464", job="ingestd"'
    series = [{"series": 'ingestd_objective{source="slow", objective="latency_p95_seconds", '
                         'instance="consumer-1:9464", job="ingestd"}', "values": f"{largest}x30"}]
    # One load a minute, each 3 days after its event was made: in no finite bucket.
    series += [{"series": f'ingestd_end_to_end_latency_seconds_bucket{{{labels}, le="{b:g}"}}', "values": "0x30"}
               for b in bounds]
    series.append({"series": f'ingestd_end_to_end_latency_seconds_bucket{{{labels}, le="+Inf"}}',
                   "values": "0+1x30"})
    rule = next(rule for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
                for rule in group["rules"] if rule["alert"] == "IngestdLatencyHigh")
    annotations = {key: text.replace("{{ $labels.source }}", "slow") for key, text in rule["annotations"].items()}
    annotations["summary"] = "slow: 95% of loads within 2d 0h 0m 0s, above its objective"
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "15m", "alertname": "IngestdLatencyHigh", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "source": "slow"}, "exp_annotations": annotations}]}]}]}
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "latency.test.yml").write_text(json.dumps(tests))
    result = subprocess.run([promtool_or_skip(), "test", "rules", "latency.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)
QUALITY_KEYS = ("missing_required", "top_failures", "undeclared_fields", "undeclared_more", "never_seen")
CONTROL = __import__("re").compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@settings(max_examples=400, deadline=None)
@given(quality=JSON_VALUES | st.fixed_dictionaries({}, optional={k: JSON_VALUES for k in QUALITY_KEYS}))
def test_one_run_shows_whatever_quality_document_its_row_holds(quality):
    """Rows from before ops.pipeline_runs.quality (NULL) or written by hand or by another
    version: `ingestd runs --id` shows what it can read, never a traceback nor a raw control
    character."""
    from ingestd.daemon.reports import run_detail

    run = {"run_id": "r", "status": "success", "rows_total": 3, "rows_valid": 2, "rows_invalid": 1,
           "quality": quality}
    lines = run_detail(run, 80)
    assert lines and not any(CONTROL.search(line) for line in lines)


def test_one_run_shows_a_huge_quality_document_in_bounded_space():
    from ingestd.daemon.reports import run_detail

    names = [f"field_{n}_" + "x" * 1_000 for n in range(10_000)]
    quality = {"missing_required": {name: 0.5 for name in names}, "undeclared_fields": names, "never_seen": names,
               "top_failures": [{"keyword": "type", "pointer": "/" + name, "count": 1} for name in names]}
    run = {"run_id": "r", "status": "success", "rows_total": 3, "rows_valid": 2, "rows_invalid": 1,
           "quality": quality}
    shown = "\n".join(run_detail(run, 100))
    assert len(shown) < 200_000 and "and 9900 more" in shown


# Field names as a file's author may write them: any code point, lone surrogates and U+0000
# included (a reader that takes them passes them on), empty, long.
FIELD_NAMES = st.text(st.characters(codec=None, categories=None), max_size=300) | st.sampled_from(
    ["", "\x00", "\ud800", "\x1b[2J", "'); DROP TABLE ops.pipeline_runs; --", "%s", "%(x)s", "id", "x_1", "a" * 5000])
RECORDS = st.lists(st.dictionaries(FIELD_NAMES, st.integers(), max_size=12) | st.integers() | st.text(max_size=5)
                   | st.lists(st.integers(), max_size=3), max_size=30)
ERRORS = st.none() | st.lists(st.fixed_dictionaries({"pointer": st.text(max_size=300), "keyword": st.text(max_size=20)}),
                              max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(records=RECORDS, errors=st.lists(ERRORS, min_size=30, max_size=30))
def test_whatever_field_names_a_file_holds_its_quality_is_stored(database_url, records, errors):
    """The summary of any records is bounded, storable as jsonb, and recorded with the load (run,
    manifest, undeclared fields) in the same statement, with no SQL made of a name."""
    import hashlib
    import json
    import uuid

    import psycopg2

    from ingestd.consumers.quality import MAX_FIELDS, MAX_NAME, RunQuality
    from ingestd.daemon.ledger import Ledger, ManifestEntry

    quality = RunQuality(SCHEMA_OPEN)
    for record, found in zip(records, errors, strict=False):
        quality.observe(record, found)
    summary = quality.summary(len(records))
    assert len(summary["undeclared_fields"]) <= MAX_FIELDS and len(summary["top_failures"]) <= 5
    assert all(len(name) <= MAX_NAME for name in summary["undeclared_fields"])
    conn = psycopg2.connect(database_url)
    try:
        ledger = Ledger(conn)
        run_id = uuid.uuid4()
        ledger.start_run(run_id, None, "q", "file", "test", "q/a.jsonl", 1)
        checksum = hashlib.sha256(run_id.bytes).hexdigest()
        entry = ManifestEntry("q", "q/a.jsonl", checksum, 1, len(records), run_id, None)
        new = ledger.record_loads([(entry, len(records), 0, None, summary)])
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT status, quality FROM ops.pipeline_runs WHERE run_id = %s", (run_id,))
            status, stored = cur.fetchone()
            cur.execute("SELECT count(*) FROM ops.raw_ingest_manifest WHERE run_id = %s", (run_id,))
            assert cur.fetchone()[0] == 1
        assert status == "success" and set(stored) == set(summary)
        assert len(stored["undeclared_fields"]) == len(summary["undeclared_fields"])
        assert len(new.get(run_id, [])) <= len(summary["undeclared_fields"])
        assert len(json.dumps(stored)) < 200_000
    finally:
        conn.close()


SCHEMA_OPEN = {"type": "object", "required": ["id", "name"], "properties": {"id": {}, "name": {}, "\x00": {}},
               "patternProperties": {"^x_": {}}}


def test_a_wide_schema_keeps_each_runs_quality_bounded():
    """A schema of thousands of fields (a generated one, a wide CSV's) against records that hold
    none of them: what one run stores stays within the same bounds as a file's own names."""
    from ingestd.consumers.quality import MAX_FIELDS, RunQuality
    from ingestd.daemon.reports import run_detail

    names = [f"column_{n:05d}" for n in range(20_000)]
    quality = RunQuality({"type": "object", "required": names, "properties": {name: {} for name in names}})
    for n in range(10):
        quality.observe({"other": n}, [{"pointer": "/", "keyword": "required"}])
    summary = quality.summary(10)
    assert len(summary["never_seen"]) == MAX_FIELDS and summary["never_seen_more"] is True
    assert len(summary["missing_required"]) == MAX_FIELDS and summary["missing_required_more"] is True
    shown = run_detail({"run_id": "r", "status": "success", "rows_total": 10, "rows_valid": 0, "rows_invalid": 10,
                        "quality": summary}, 100)
    assert any(line.startswith("never seen:") for line in shown) and "and more" in shown[-1]


def test_a_field_new_to_several_loads_of_one_group_is_the_first_loads(db, database_url):
    """Small files load together (consumers/group.py), recorded in one record_loads: a field that
    several of them hold for the first time is first seen in the first of them, and new to it only."""
    import hashlib
    import uuid

    import psycopg2

    from ingestd.daemon.ledger import Ledger, ManifestEntry

    conn = psycopg2.connect(database_url)
    try:
        ledger = Ledger(conn)
        loads = []
        for n in range(20):
            run_id = uuid.uuid4()
            ledger.start_run(run_id, None, "q", "file", "test", f"q/{n}.jsonl", 1)
            entry = ManifestEntry("q", f"q/{n}.jsonl", hashlib.sha256(run_id.bytes).hexdigest(), 1, 1, run_id, None)
            loads.append((entry, 1, 0, None, {"undeclared_fields": ["colour", f"only_{n}"]}))
        new = ledger.record_loads(loads)
        conn.commit()
    finally:
        conn.close()
    first = loads[0][0].run_id
    assert query(db, "SELECT first_run::text FROM ops.undeclared_fields WHERE field = 'colour'") == [(str(first),)]
    assert sorted(new[first]) == ["colour", "only_0"]
    assert all(new[entry.run_id] == [f"only_{n}"] for n, (entry, *_) in enumerate(loads) if n)
