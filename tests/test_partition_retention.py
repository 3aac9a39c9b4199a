"""Retention of bronze partitioned by month (daemon/partitions.py): it goes
by the database server's clock, the one that stamps ``ingested_at``, never
the maintaining host's; a month it drops expires the manifest rows of the
loads whose rows were all in it, so the same bytes dropped again load anew
(saying why), while a load with rows left in bronze stays loaded. Against the
real PostgreSQL."""
import json
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from ingestd.daemon import partitions
from ingestd.daemon.cli import main
from ingestd.daemon.config import load_config
from ingestd.daemon.partitions import add_months, month_start

from .conftest import drop_file, query
from .test_group import run_group, small_csv
from .test_ingest import event_for
from .test_partitions import ingest, month_names, partition_rows, partitioned_sources, set_mtime

pytestmark = pytest.mark.integration


@pytest.fixture
def contexts(ingest_contexts):
    return lambda config, name="retention-test": ingest_contexts(config, name)


def host_clock_off_by(monkeypatch, delta: timedelta) -> None:
    """The maintaining host's clock ``delta`` away from the true time (the
    database server's clock is left as it is)."""
    real = datetime

    class HostClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + delta

    monkeypatch.setattr(partitions, "datetime", HostClock)


def run_cli(capsys, path, *args):
    assert main(["-c", str(path), *args]) == 0
    return capsys.readouterr().out


def test_retention_goes_by_the_servers_clock_not_the_hosts(write_config, contexts, db, capsys, monkeypatch):
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "12 months"}))
    config = load_config(path)
    ctx = contexts(config)
    now = datetime.now(UTC)
    this = partitions.partition_name("daily_activity", month_start(now))
    drop_file(config.landing_dir, "daily_activity/fresh.csv", small_csv(1))
    set_mtime(drop_file(config.landing_dir, "daily_activity/old.csv", small_csv(2)), datetime(2018, 5, 5, tzinfo=UTC))
    for name in ("fresh", "old"):
        assert ingest(ctx, f"daily_activity/{name}.csv").status == "success"

    # A host clock five years ahead: by it, this month is past a retention of 12 months.
    host_clock_off_by(monkeypatch, timedelta(days=5 * 366))
    planned = json.loads(run_cli(capsys, path, "partitions", "maintain", "--dry-run", "--json"))
    assert [(s["partition"], s["action"]) for s in planned] == [("daily_activity_p2018_05", "drop")]
    listed = {p["partition"]: p for p in json.loads(run_cli(capsys, path, "partitions", "--json"))}
    assert listed[this]["note"] is None
    assert listed[this]["dropped_after"] == add_months(add_months(month_start(now), 1), 12).isoformat()
    assert listed["daily_activity_p2018_05"]["note"] == "past retention: the next maintenance drops it"
    run_cli(capsys, path, "partitions", "maintain")
    assert partition_rows(db, "daily_activity") == {f"bronze.{this}": 2}
    assert query(db, "SELECT partition FROM ops.partition_log WHERE action = 'dropped'") == [
        ("daily_activity_p2018_05",)]
    # Nor does it make months ahead of the true time.
    host_month = partitions.partition_name("daily_activity", month_start(now + timedelta(days=5 * 366)))
    assert host_month not in month_names(db, "daily_activity")

    # A host clock ten years behind: by it, 2018 is not past the retention; by the server's it is.
    host_clock_off_by(monkeypatch, -timedelta(days=10 * 366))
    set_mtime(drop_file(config.landing_dir, "daily_activity/old-2.csv", small_csv(3)), datetime(2018, 6, 5, tzinfo=UTC))
    assert ingest(ctx, "daily_activity/old-2.csv").status == "success"
    planned = json.loads(run_cli(capsys, path, "partitions", "maintain", "--dry-run", "--json"))
    assert [(s["partition"], s["action"]) for s in planned] == [("daily_activity_p2018_06", "drop")]
    run_cli(capsys, path, "partitions", "maintain")
    assert "daily_activity_p2018_06" not in month_names(db, "daily_activity")
    assert partition_rows(db, "daily_activity") == {f"bronze.{this}": 2}
    host_month = partitions.partition_name("daily_activity", month_start(now - timedelta(days=10 * 366)))
    assert host_month not in month_names(db, "daily_activity")


def manifest(db, name):
    """(status, rows_expired, expired_partition, expired_at is set) of the
    manifest rows of a file name, oldest first."""
    return query(db, "SELECT status, rows_expired, expired_partition, expired_at IS NOT NULL"
                     " FROM ops.raw_ingest_manifest WHERE source_filename = %s ORDER BY id", (name,))


def test_a_file_whose_rows_retention_dropped_loads_again_saying_so(write_config, contexts, db, capsys):
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "12 months"}))
    config = load_config(path)
    ctx = contexts(config)
    drop_file(config.landing_dir, "daily_activity/prime.csv", small_csv(0))
    assert ingest(ctx, "daily_activity/prime.csv").status == "success"
    old = datetime(2018, 5, 5, tzinfo=UTC)
    for name, n in (("a.csv", 1), ("b.csv", 2)):
        set_mtime(drop_file(config.landing_dir, f"daily_activity/{name}", small_csv(n)), old)
        assert ingest(ctx, f"daily_activity/{name}").status == "success"
    first_run = query(db, "SELECT run_id FROM ops.raw_ingest_manifest WHERE source_filename = 'daily_activity/a.csv'")
    out = run_cli(capsys, path, "partitions", "maintain")
    assert "daily_activity_p2018_05" in out and "dropped" in out
    assert "2 loads expired" in out
    for name in ("a.csv", "b.csv"):
        assert manifest(db, f"daily_activity/{name}") == [("expired", 2, "daily_activity_p2018_05", True)]
    assert manifest(db, "daily_activity/prime.csv") == [("loaded", 0, None, False)]

    # The same bytes dropped again (now, so in this month) load again, and the run says why.
    drop_file(config.landing_dir, "daily_activity/a.csv", small_csv(1))
    outcome = ingest(ctx, "daily_activity/a.csv")
    assert (outcome.status, outcome.rows) == ("success", 2), outcome.message
    assert "dropped by retention with bronze.daily_activity_p2018_05" in outcome.message
    assert f"run {first_run[0][0]}" in outcome.message
    summary = query(db, "SELECT error_summary FROM ops.pipeline_runs WHERE run_id = %s", (outcome.run_id,))[0][0]
    assert summary == outcome.message
    assert manifest(db, "daily_activity/a.csv") == [("expired", 2, "daily_activity_p2018_05", True),
                                                    ("loaded", 0, None, False)]
    assert query(db, "SELECT count(*) FROM bronze.daily_activity WHERE file_path = 'daily_activity/a.csv'") == [(2,)]
    # Loaded again, it is loaded: a third drop is skipped as ever.
    drop_file(config.landing_dir, "daily_activity/a.csv", small_csv(1))
    again = ingest(ctx, "daily_activity/a.csv")
    assert again.status == "skipped" and "same bytes already loaded" in again.message

    # In a group of small files, the expired one takes the single way and says the same.
    bodies = []
    for name, n in (("b.csv", 2), ("c.csv", 3)):
        drop_file(config.landing_dir, f"daily_activity/{name}", small_csv(n))
        bodies.append(event_for(config, f"daily_activity/{name}").to_json())
    _, outcomes = run_group(ctx, bodies)
    assert [o.status for o in outcomes.values()] == ["success", "success"]
    assert "dropped by retention" in outcomes[0].message and not outcomes[1].message
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM bronze.daily_activity") == [(8, 8)]


def test_a_load_with_rows_left_in_bronze_stays_loaded(write_config, contexts, db, capsys):
    """A load's rows in two months (a table migrated after its rows were
    moved by hand, say): it expires only once its last row is dropped, so
    that no row is ever in bronze twice."""
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "12 months"}))
    config = load_config(path)
    ctx = contexts(config)
    for name, n, when in (("split-old.csv", 1, datetime(2018, 6, 5, tzinfo=UTC)),
                          ("july.csv", 3, datetime(2018, 7, 5, tzinfo=UTC)),
                          ("split-new.csv", 2, datetime(2018, 8, 5, tzinfo=UTC))):
        set_mtime(drop_file(config.landing_dir, f"daily_activity/{name}", small_csv(n)), when)
        assert ingest(ctx, f"daily_activity/{name}").status == "success"
    # split-old: its second row in July 2018 (both past retention, dropped one after the other);
    # split-new: its second row in this month (kept).
    db.autocommit = True
    with db.cursor() as cur:
        cur.execute("UPDATE bronze.daily_activity SET source_timestamp = '2018-07-05Z'"
                    " WHERE file_path = 'daily_activity/split-old.csv' AND record_number = 2")
        cur.execute("UPDATE bronze.daily_activity SET source_timestamp = now()"
                    " WHERE file_path = 'daily_activity/split-new.csv' AND record_number = 2")
    out = run_cli(capsys, path, "partitions", "maintain")
    assert all(f"daily_activity_p2018_{m:02d}" in out for m in (6, 7, 8))
    assert manifest(db, "daily_activity/split-old.csv") == [("expired", 2, "daily_activity_p2018_07", True)]
    assert manifest(db, "daily_activity/split-new.csv") == [("loaded", 1, None, False)]

    drop_file(config.landing_dir, "daily_activity/split-new.csv", small_csv(2))
    outcome = ingest(ctx, "daily_activity/split-new.csv")
    assert outcome.status == "skipped"
    assert "1 of its 2 rows since dropped by retention" in outcome.message
    assert query(db, "SELECT count(*) FROM bronze.daily_activity WHERE file_path = 'daily_activity/split-new.csv'") \
        == [(1,)]
    drop_file(config.landing_dir, "daily_activity/split-old.csv", small_csv(1))
    assert ingest(ctx, "daily_activity/split-old.csv").status == "success"


def test_the_manifest_keeps_its_rules(db):
    """What migration 007 leaves: one loaded row per (source, checksum), an
    expired row says when and with which partition, and the counts stay sane."""
    with db.cursor() as cur:
        cur.execute("INSERT INTO ops.pipeline_runs (run_id, source, trigger, status)"
                    " VALUES ('00000000-0000-4000-8000-000000000001', 's', 'file', 'success')")
    row = ("s", "f.csv", "a" * 64, 10, 2, "00000000-0000-4000-8000-000000000001")
    insert = ("INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes, row_count, run_id,"
              " status, rows_expired, expired_at, expired_partition) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    with db.cursor() as cur:
        cur.execute(insert, (*row, "expired", 2, datetime.now(UTC), "s_p2018_05"))
        cur.execute(insert, (*row, "loaded", 0, None, None))
        for bad in ((*row, "loaded", 0, None, None), (*row, "expired", 2, None, None),
                    (*row, "loaded", 3, None, None), (*row, "gone", 0, None, None),
                    (*row, "loaded", 0, datetime.now(UTC), None)):
            with pytest.raises(psycopg2.IntegrityError):
                cur.execute(insert, bad)


def test_migration_007_applies_on_a_database_with_loads(service_urls, monkeypatch):
    """ingestd migrates at start: a manifest written before 007 keeps its rows, all 'loaded'."""
    from ingestd.daemon import db as dbmod

    from .conftest import clone_database, drop_database

    server = service_urls[0]
    name, url = clone_database(server, "template0", kind="m")
    try:
        every = dbmod.migration_files()
        before = [(n, text) for n, text in every if n < "007"]
        monkeypatch.setattr(dbmod, "migration_files", lambda: before)
        dbmod.migrate(url)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO ops.pipeline_runs (run_id, source, trigger, status)"
                            " VALUES ('00000000-0000-4000-8000-000000000002', 's', 'file', 'success')")
                cur.execute("INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes,"
                            " row_count, run_id) VALUES ('s', 'f.csv', %s, 10, 2,"
                            " '00000000-0000-4000-8000-000000000002')", ("b" * 64,))
            monkeypatch.setattr(dbmod, "migration_files", lambda: every)
            assert [n for n in dbmod.migrate(url) if n >= "007"] == [n for n, _ in every if n >= "007"]
            assert query(conn, "SELECT status, rows_expired, expired_at, expired_partition"
                               " FROM ops.raw_ingest_manifest") == [("loaded", 0, None, None)]
            with pytest.raises(psycopg2.IntegrityError):
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO ops.raw_ingest_manifest (source, source_filename, checksum, size_bytes,"
                                " row_count, run_id) VALUES ('s', 'g.csv', %s, 10, 2,"
                                " '00000000-0000-4000-8000-000000000002')", ("b" * 64,))
        finally:
            conn.close()
    finally:
        drop_database(server, name)
