"""Bronze partitioned by month (daemon/partitions.py): months made ahead and
on demand, never a failed load, no race between workers; retention drops
what it should and nothing else; a plain table migrated while loads go on;
``ingestd partitions``. Against the real PostgreSQL."""
import json
import os
import threading
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from ingestd.consumers.ingest import ingest_message
from ingestd.daemon import partition_migration, partitions
from ingestd.daemon.cli import main
from ingestd.daemon.config import load_config
from ingestd.daemon.partitions import add_months, month_start

from .conftest import FITBIT, FITBIT_FILES, REPO, drop_file, one_row_csv, query
from .live import free_port
from .test_e2e import finished_runs, wait_for
from .test_group import run_group, small_csv
from .test_ingest import event_for

pytestmark = pytest.mark.integration


def partitioned_sources(by: dict[str, str], retention: dict[str, str] | None = None) -> str:
    """The four Fitbit sources, each partitioned by month of the column ``by`` names."""
    out = ""
    for name, column in by.items():
        out += (f'\n[[sources]]\nname = "{name}"\nformat = "csv"\nschema = "{REPO}/schemas/{name}.json"\n'
                f'partition = "month"\npartition_by = "{column}"\n')
        if retention and name in retention:
            out += f'retention = "{retention[name]}"\n'
    return out


@pytest.fixture
def contexts(ingest_contexts):
    return lambda config, name="partition-test": ingest_contexts(config, name)


def set_mtime(path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def ingest(ctx, relative):
    return ingest_message(ctx, event_for(ctx.config, relative).to_json())


def execute(db, statement):
    with db.cursor() as cur:
        cur.execute(statement)


def transactions(db, names):
    """How many transactions committed the manifest rows of these files."""
    return query(db, "SELECT count(DISTINCT xmin::text) FROM ops.raw_ingest_manifest WHERE source_filename LIKE %s",
                 (names,))[0][0]


def partition_rows(db, table):
    """{partition name: rows} of a partitioned bronze table."""
    return dict(query(db, f"SELECT tableoid::regclass::text, count(*) FROM bronze.{table} GROUP BY 1"))


def month_names(db, table):
    return sorted(r[0] for r in query(
        db, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass", (f"bronze.{table}",)))


def test_partitioned_sources_load_the_real_fitbit_files(write_config, contexts, db):
    config = load_config(write_config(sources=partitioned_sources({
        "daily_activity": "ingested_at", "sleep_day": "source_timestamp",
        "hourly_steps": "ingested_at", "heart_rate": "source_timestamp"})))
    ctx = contexts(config)
    old = datetime(2024, 3, 15, 12, tzinfo=UTC)
    for source, (name, rows) in FITBIT_FILES.items():
        path = drop_file(config.landing_dir, f"{source}/{name}", FITBIT / name)
        if source == "sleep_day":
            set_mtime(path, old)  # its rows belong to March 2024 by source_timestamp
        outcome = ingest(ctx, f"{source}/{name}")
        assert (outcome.status, outcome.rows) == ("success", rows), outcome.message
        assert query(db, f"SELECT count(*) FROM bronze.{source}") == [(rows,)]
        assert query(db, "SELECT c.relkind::text, pg_get_partkeydef(c.oid) FROM pg_class c"
                         " WHERE c.oid = %s::regclass", (f"bronze.{source}",)) == [
            ("p", f"RANGE ({config.sources[source].partition_by})")]
    now = month_start(datetime.now(UTC))
    this = partitions.partition_name("daily_activity", now)
    assert partition_rows(db, "daily_activity") == {f"bronze.{this}": 940}
    assert month_names(db, "daily_activity") == [partitions.partition_name("daily_activity", add_months(now, n))
                                                 for n in range(partitions.AHEAD_MONTHS + 1)]
    assert partition_rows(db, "sleep_day") == {"bronze.sleep_day_p2024_03": 413}
    assert "sleep_day_p2024_03" in month_names(db, "sleep_day")
    # The primary key holds the partition column; ids stay unique through the identity.
    assert query(db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'bronze.sleep_day'::regclass"
                     " AND contype = 'p'") == [("PRIMARY KEY (id, source_timestamp)",)]
    assert query(db, "SELECT count(DISTINCT id) FROM bronze.hourly_steps") == [(22099,)]
    made = query(db, "SELECT partition, by_whom FROM ops.partition_log WHERE action = 'created'"
                     " AND source = 'sleep_day' AND range_from = '2024-03-01 00:00+00'")
    assert made == [("sleep_day_p2024_03", "partition-test")]
    # The values are what the file says, partitioned or not.
    first = query(db, "SELECT raw_data FROM bronze.daily_activity WHERE record_number = 1")[0][0]
    assert first["Id"] == "1503960366" and first["TotalDistance"] == "8.5"


def thirty_months_of_files(config, now):
    """30 files of real Fitbit rows, file n dated n months before ``now``
    (its mtime, hence source_timestamp); {month: rows}."""
    expect = {}
    for n in range(30):
        when = add_months(now, -n)
        relative = f"daily_activity/month-{n:02d}.csv"
        set_mtime(drop_file(config.landing_dir, relative, small_csv(500 + n)), when)
        expect[month_start(when)] = 2
    return expect


def test_months_over_30_months_are_made_on_demand_and_retention_drops_only_the_expired(write_config, contexts, db,
                                                                                         capsys):
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "24 months"}))
    config = load_config(path)
    ctx = contexts(config)
    now = datetime.now(UTC)
    expect = thirty_months_of_files(config, now)
    for n in range(30):
        assert ingest(ctx, f"daily_activity/month-{n:02d}.csv").status == "success"
    by_month = {partitions.partition_name("daily_activity", m): rows for m, rows in expect.items()}
    assert partition_rows(db, "daily_activity") == {f"bronze.{name}": rows for name, rows in by_month.items()}
    cutoff = add_months(now, -24)
    expired = sorted(name for name, month in ((partitions.partition_name("daily_activity", m), m) for m in expect)
                     if add_months(month, 1) <= cutoff)
    assert len(expired) in (5, 6)  # 30 months, 24 kept whole, the cut month's partition kept too

    # The dry run says what would go and changes nothing.
    assert main(["-c", str(path), "partitions", "maintain", "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert sorted(s["partition"] for s in planned if s["action"] == "drop") == expired
    assert all(s["rows"] == 2 and not s["done"] for s in planned if s["action"] == "drop")
    assert len(month_names(db, "daily_activity")) == 30 + partitions.AHEAD_MONTHS

    assert main(["-c", str(path), "partitions", "maintain"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in expired) and "dropped" in out
    kept = {name: rows for name, rows in by_month.items() if name not in expired}
    assert partition_rows(db, "daily_activity") == {f"bronze.{name}": rows for name, rows in kept.items()}
    assert query(db, "SELECT count(*) FROM bronze.daily_activity WHERE source_timestamp >= %s", (cutoff,)) == [
        (query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0],)]
    dropped = query(db, "SELECT partition FROM ops.partition_log WHERE action = 'dropped'")
    assert sorted(r[0] for r in dropped) == expired
    assert query(db, "SELECT DISTINCT rows FROM ops.partition_log WHERE action = 'dropped'") == [(2,)]
    assert not any(query(db, "SELECT to_regclass(%s) IS NOT NULL", (f"bronze.{name}",))[0][0] for name in expired)

    # Nothing more to drop, and the list shows when each month goes.
    assert main(["-c", str(path), "partitions", "maintain", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["-c", str(path), "partitions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(p["partition"] for p in listed) == month_names(db, "daily_activity")
    newest = partitions.partition_name("daily_activity", month_start(now))
    row = next(p for p in listed if p["partition"] == newest)
    assert row["rows"] == 2 and row["rows_exact"] and row["bytes"] > 0
    assert row["dropped_after"] == add_months(add_months(month_start(now), 1), 24).isoformat()


def test_workers_making_the_same_new_month_at_once_make_it_once(write_config, contexts, db):
    config = load_config(write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"})))
    workers = [contexts(config, f"w{n}") for n in range(4)]
    drop_file(config.landing_dir, "daily_activity/x.csv", small_csv(1))
    assert ingest(workers[0], "daily_activity/x.csv").status == "success"
    when = datetime(2019, 7, 4, tzinfo=UTC)
    for n in range(8):
        set_mtime(drop_file(config.landing_dir, f"daily_activity/july-{n}.csv", small_csv(100 + n)), when)
    for ctx in workers:
        ctx.conn()
    barrier, outcomes = threading.Barrier(4), []

    def work(ctx, names):
        barrier.wait()
        outcomes.extend(ingest(ctx, name) for name in names)

    threads = [threading.Thread(target=work, args=(ctx, [f"daily_activity/july-{n}.csv",
                                                         f"daily_activity/july-{n + 4}.csv"]))
               for n, ctx in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [o.status for o in outcomes] == ["success"] * 8, [o.message for o in outcomes]
    assert partition_rows(db, "daily_activity")["bronze.daily_activity_p2019_07"] == 16
    assert query(db, "SELECT count(*) FROM ops.partition_log WHERE partition = 'daily_activity_p2019_07'") == [(1,)]


def test_a_worker_whose_month_was_dropped_meanwhile_makes_it_again(write_config, contexts, db):
    """Its cached picture says the month exists; the COPY finds no partition;
    it looks again and loads, no dead letter."""
    config = load_config(write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"})))
    ctx = contexts(config)
    when = datetime(2020, 2, 10, tzinfo=UTC)
    for n in range(2):
        set_mtime(drop_file(config.landing_dir, f"daily_activity/feb-{n}.csv", small_csv(n)), when)
    assert ingest(ctx, "daily_activity/feb-0.csv").status == "success"
    db.autocommit = True
    execute(db, "ALTER TABLE bronze.daily_activity DETACH PARTITION bronze.daily_activity_p2020_02")
    execute(db, "DROP TABLE bronze.daily_activity_p2020_02")
    outcome = ingest(ctx, "daily_activity/feb-1.csv")
    assert outcome.status == "success", outcome.message
    assert partition_rows(db, "daily_activity") == {"bronze.daily_activity_p2020_02": 2}
    assert query(db, "SELECT count(*) FROM ops.dead_letters") == [(0,)]


def test_a_group_makes_its_months_or_hands_the_file_to_the_single_way(write_config, contexts, db):
    config = load_config(write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"})))
    ctx = contexts(config)
    drop_file(config.landing_dir, "daily_activity/prime.csv", small_csv(0))
    assert ingest(ctx, "daily_activity/prime.csv").status == "success"
    bodies = []
    for n in range(6):
        relative = f"daily_activity/g-{n}.csv"
        set_mtime(drop_file(config.landing_dir, relative, small_csv(10 + n)), datetime(2021, 1 + n, 3, tzinfo=UTC))
        bodies.append(event_for(config, relative).to_json())
    # Another session holds the source's lock: the group may not wait for it.
    other = contexts(config, "holder").conn()
    with other.cursor() as cur:
        partitions.lock_source(cur, "daily_activity")
        result = {}
        thread = threading.Thread(target=lambda: result.update(zip(("grouped", "outcomes"), run_group(ctx, bodies),
                                                                   strict=True)))
        thread.start()
        thread.join(timeout=5)
        held = thread.is_alive()  # the single way waits for the lock, as it should
    other.rollback()
    thread.join(timeout=60)
    assert held, "the single way took the lock another session held"
    assert [o.status for o in result["outcomes"].values()] == ["success"] * 6
    # One transaction each: the single way (a group commits its files together).
    assert transactions(db, "daily_activity/g-%") == 6
    assert sorted(partition_rows(db, "daily_activity")) == sorted(
        {f"bronze.daily_activity_p2021_{m:02d}" for m in range(1, 7)} | {
            f"bronze.{partitions.partition_name('daily_activity', month_start(datetime.now(UTC)))}"})
    # With the months made, the same shape of burst loads as a group.
    again = []
    for n in range(6):
        relative = f"daily_activity/h-{n}.csv"
        set_mtime(drop_file(config.landing_dir, relative, small_csv(30 + n)), datetime(2021, 1 + n, 9, tzinfo=UTC))
        again.append(event_for(config, relative).to_json())
    grouped, outcomes = run_group(ctx, again)
    assert grouped == set(range(6)) and all(o.status == "success" for o in outcomes.values())
    assert transactions(db, "daily_activity/h-%") == 1


def test_a_plain_table_keeps_loading_then_migrates_while_loads_go_on(write_config, contexts, db, capsys):
    plain = write_config()
    ctx = contexts(load_config(plain))
    name, rows = FITBIT_FILES["daily_activity"]
    drop_file(ctx.config.landing_dir, f"daily_activity/{name}", FITBIT / name)
    assert ingest(ctx, f"daily_activity/{name}").status == "success"
    # Spread the rows over four months of ingested_at, as a table a year old would be.
    db.autocommit = True
    execute(db, "UPDATE bronze.daily_activity SET ingested_at = ingested_at - (record_number % 4) * interval '1 month'")
    path = write_config(sources=partitioned_sources({"daily_activity": "ingested_at"}))
    config = load_config(path)
    # The source now says partition = "month"; its plain table keeps working.
    loader = contexts(config, "loader")
    drop_file(config.landing_dir, "daily_activity/before.csv", small_csv(1))
    assert ingest(loader, "daily_activity/before.csv").status == "success"
    assert query(db, "SELECT relkind::text FROM pg_class WHERE oid = 'bronze.daily_activity'::regclass") == [("r",)]
    assert main(["-c", str(path), "partitions"]) == 0
    assert "ingestd partitions migrate --source daily_activity" in capsys.readouterr().out
    assert main(["-c", str(path), "check"]) == 1
    assert "FAIL partition daily_activity: bronze.daily_activity is a plain table" in capsys.readouterr().out

    stop, outcomes = threading.Event(), []

    def keep_loading():
        n = 0
        while not stop.is_set() or n < 20:
            relative = f"daily_activity/during-{n}.csv"
            drop_file(config.landing_dir, relative, small_csv(1000 + n))
            outcomes.append(ingest(loader, relative))
            n += 1

    thread = threading.Thread(target=keep_loading)
    thread.start()
    try:
        code = main(["-c", str(path), "partitions", "migrate", "--source", "daily_activity", "--batch-rows", "100",
                     "--no-progress"])
    finally:
        stop.set()
        thread.join(timeout=120)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert outcomes and all(o.status == "success" for o in outcomes), [o.message for o in outcomes]
    loaded = rows + 2 + 2 * len(outcomes)
    assert query(db, "SELECT relkind::text FROM pg_class WHERE oid = 'bronze.daily_activity'::regclass") == [("p",)]
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM bronze.daily_activity") == [(loaded, loaded)]
    now = month_start(datetime.now(UTC))
    assert {p for p in partition_rows(db, "daily_activity")} == {
        f"bronze.{partitions.partition_name('daily_activity', add_months(now, -n))}" for n in range(4)}
    # Every row is where its ingested_at says, with what it held before.
    assert query(db, "SELECT count(*) FROM bronze.daily_activity WHERE record_number %% 4 = 3"
                     " AND file_path LIKE %s AND ingested_at < %s", (f"%{name}", add_months(now, -2))) == [(235,)]
    kept = '"daily_activity-unpartitioned"'
    assert f"bronze.{kept}" in out.out
    old_rows = query(db, f"SELECT count(*) FROM bronze.{kept}")[0][0]
    assert rows + 2 <= old_rows <= loaded
    assert main(["-c", str(path), "check"]) == 0
    assert "ok   partition daily_activity: 6 partitions by month of ingested_at, no retention" in \
        capsys.readouterr().out
    # New loads go on with new ids.
    drop_file(config.landing_dir, "daily_activity/after.csv", small_csv(5000))
    assert ingest(loader, "daily_activity/after.csv").status == "success"
    assert query(db, "SELECT count(DISTINCT id), count(*) FROM bronze.daily_activity") == [(loaded + 2, loaded + 2)]


def test_migrate_while_two_workers_load_small_files_keeps_every_committed_row(write_config, contexts, db, procs,
                                                                               tmp_path, capsys):
    """Each worker's session takes ids from the identity in a block of its own, so ids do not
    follow commit order: a row committed during the copy below the highest id copied must reach
    the new table all the same, or the tables must not swap."""
    ctx = contexts(load_config(write_config()))
    name, rows = FITBIT_FILES["daily_activity"]
    drop_file(ctx.config.landing_dir, f"daily_activity/{name}", FITBIT / name)
    assert ingest(ctx, f"daily_activity/{name}").status == "success"
    path = write_config(sources=partitioned_sources({"daily_activity": "ingested_at"}))
    procs(path, "run", "--workers", "2")
    landing = load_config(path).landing_dir
    stop, dropped = threading.Event(), []

    def keep_dropping():
        while not stop.is_set() or len(dropped) < 200:
            for _ in range(4):  # a few at once, so that both workers load
                drop_file(landing, f"daily_activity/small-{len(dropped)}.csv", one_row_csv(8 * 10**9 + len(dropped)))
                dropped.append(True)
            time.sleep(0.02)

    thread = threading.Thread(target=keep_dropping)
    thread.start()
    try:
        wait_for(lambda: finished_runs(db) > 40, timeout=60)
        code = main(["-c", str(path), "partitions", "migrate", "--source", "daily_activity", "--batch-rows", "20",
                     "--no-progress"])
    finally:
        stop.set()
        thread.join(timeout=120)
    out = capsys.readouterr()
    wait_for(lambda: finished_runs(db) == 1 + len(dropped), timeout=120)
    assert code == 0, out.err
    assert query(db, "SELECT status, count(*) FROM ops.pipeline_runs GROUP BY 1") == [("success", 1 + len(dropped))]
    assert query(db, "SELECT relkind::text FROM pg_class WHERE oid = 'bronze.daily_activity'::regclass") == [("p",)]
    # Every committed load's rows are in the migrated table, as many as its manifest row says, none twice.
    assert query(db, "SELECT count(*) FROM ops.raw_ingest_manifest m LEFT JOIN (SELECT pipeline_run_id, count(*) AS n"
                     " FROM bronze.daily_activity GROUP BY 1) b ON b.pipeline_run_id = m.run_id"
                     " WHERE b.n IS DISTINCT FROM m.row_count") == [(0,)]
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM bronze.daily_activity") == [
        (rows + len(dropped), rows + len(dropped))]
    assert query(db, "SELECT count(*) FROM ops.dead_letters") == [(0,)]
    assert "Traceback" not in (tmp_path / "run-0.log").read_text()


def test_a_copy_that_cannot_be_proved_whole_does_not_swap(write_config, contexts, db):
    """A row deleted from the plain table after it was copied: the counts differ under the swap's
    lock, so nothing swaps; the plain table stays, and loads go on into it."""
    ctx = contexts(load_config(write_config()))
    name, rows = FITBIT_FILES["daily_activity"]
    drop_file(ctx.config.landing_dir, f"daily_activity/{name}", FITBIT / name)
    assert ingest(ctx, f"daily_activity/{name}").status == "success"
    config = load_config(write_config(sources=partitioned_sources({"daily_activity": "ingested_at"})))
    source = config.sources["daily_activity"]

    def delete_a_copied_row(done, top):
        if done >= top:
            execute(db, "DELETE FROM bronze.daily_activity WHERE record_number = 1")

    conn = contexts(config, "migrator").conn()
    with pytest.raises(partitions.MigrationError, match="did not swap") as refused:
        partition_migration.migrate_table(conn, source, "test", batch_rows=300, progress=delete_a_copied_row)
    assert f"{rows - 1:,} rows" in str(refused.value) and f"{rows:,}" in str(refused.value)
    assert query(db, "SELECT relkind::text FROM pg_class WHERE oid = 'bronze.daily_activity'::regclass") == [("r",)]
    assert query(db, "SELECT to_regclass('bronze.\"daily_activity-unpartitioned\"') IS NULL") == [(True,)]
    assert query(db, "SELECT count(*) FROM ops.partition_log WHERE action = 'migrated'") == [(0,)]
    loader = contexts(config, "loader")
    drop_file(config.landing_dir, "daily_activity/after.csv", small_csv(1))
    assert ingest(loader, "daily_activity/after.csv").status == "success"
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(rows + 1,)]


def test_consumers_apply_retention_on_their_schedule(write_config, contexts, db, procs, tmp_path):
    port = free_port()
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "12 months"}), health_port=port)
    config = load_config(path)
    ctx = contexts(config)
    set_mtime(drop_file(config.landing_dir, "daily_activity/old.csv", small_csv(1)), datetime(2018, 5, 5, tzinfo=UTC))
    assert ingest(ctx, "daily_activity/old.csv").status == "success"
    assert "daily_activity_p2018_05" in month_names(db, "daily_activity")
    procs(path, "consume", "--workers", "1")
    # The month leaves the table at its DETACH; the round is done when its DROP commits.
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.partition_log WHERE action = 'dropped'") == [(1,)],
             timeout=60)
    assert "daily_activity_p2018_05" not in month_names(db, "daily_activity")
    assert query(db, "SELECT count(*) FROM bronze.daily_activity") == [(0,)]
    assert query(db, "SELECT partition, rows, by_whom LIKE '%%-%%' FROM ops.partition_log"
                     " WHERE action = 'dropped'") == [("daily_activity_p2018_05", 2, True)]
    logged = tmp_path / "consume-0.log"
    wait_for(lambda: "partition dropped by retention" in logged.read_text(), timeout=10)

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    # The round counts as done after its last step is logged: its counter may come a moment later.
    wait_for(lambda: 'ingestd_partition_maintenance_total{result="ok"} 1.0' in metrics(), timeout=10)
    assert 'ingestd_partitions_dropped_total{source="daily_activity"} 1.0' in metrics()


def test_partition_settings_are_checked(tmp_path, write_config):
    from ingestd.daemon.errors import ConfigError
    bad = {
        'retention = "2 years"\n': "needs partition",
        'partition = "month"\nretention = "24 weeks"\n': "retention",
        'partition = "month"\npartition_by = "file_size"\n': "partition_by",
        # Beyond a century the cutoff (now minus the retention) leaves the dates everyone holds.
        'partition = "month"\nretention = "9999 years"\n': r"sources\[s\]\.retention: .*at most 100 years",
        'partition = "month"\nretention = "1201 months"\n': r"sources\[s\]\.retention: .*at most 100 years",
    }
    for extra, says in bad.items():
        text = f'\n[[sources]]\nname = "s"\nformat = "csv"\n{extra}'
        with pytest.raises(ConfigError, match=says):
            load_config(write_config(sources=text))
    long_name = "a" * 55
    with pytest.raises(ConfigError, match="at most 54"):
        load_config(write_config(sources=f'\n[[sources]]\nname = "{long_name}"\nformat = "csv"\npartition = "month"\n'))
    clash = ('\n[[sources]]\nname = "steps"\nformat = "csv"\npartition = "month"\n'
             '\n[[sources]]\nname = "steps_p2026_11"\nformat = "csv"\n')
    with pytest.raises(ConfigError, match="partition of source 'steps'"):
        load_config(write_config(sources=clash))
    fine = load_config(write_config(sources='\n[[sources]]\nname = "s"\nformat = "csv"\npartition = "month"\n'
                                            'retention = "2 years"\n'))
    assert (fine.sources["s"].partition, fine.sources["s"].partition_by, fine.sources["s"].retention_months) == (
        "month", "ingested_at", 24)
    century = load_config(write_config(sources='\n[[sources]]\nname = "s"\nformat = "csv"\npartition = "month"\n'
                                               'retention = "100 years"\n'))
    assert century.sources["s"].retention_months == 1200


def test_month_arithmetic():
    assert add_months(datetime(2026, 3, 31, 5, tzinfo=UTC), -1) == datetime(2026, 2, 28, 5, tzinfo=UTC)
    assert add_months(datetime(2024, 1, 31, tzinfo=UTC), 1) == datetime(2024, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 1, tzinfo=UTC), -24) == datetime(2024, 11, 1, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 1, tzinfo=UTC), 1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_start(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)
    layout = partitions.Layout("ingested_at", [partitions.Partition("p", datetime(2026, 11, 1, tzinfo=UTC),
                                                                    datetime(2026, 12, 1, tzinfo=UTC))])
    assert layout.covers(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    assert not layout.covers(datetime(2026, 12, 1, tzinfo=UTC))


def test_an_interrupted_migration_resumes_where_it_stopped(write_config, contexts, db):
    plain = write_config()
    ctx = contexts(load_config(plain))
    name, rows = FITBIT_FILES["daily_activity"]
    drop_file(ctx.config.landing_dir, f"daily_activity/{name}", FITBIT / name)
    assert ingest(ctx, f"daily_activity/{name}").status == "success"
    config = load_config(write_config(sources=partitioned_sources({"daily_activity": "ingested_at"},
                                                                  {"daily_activity": "24 months"})))
    source = config.sources["daily_activity"]
    seen = []

    def stop_after_two_batches(done, top):
        seen.append(done)
        if len(seen) == 3:
            raise KeyboardInterrupt

    conn = contexts(config, "migrator").conn()
    with pytest.raises(KeyboardInterrupt):
        partition_migration.migrate_table(conn, source, "test", batch_rows=300, progress=stop_after_two_batches)
    assert query(db, 'SELECT count(*) FROM bronze."daily_activity-partitioned"') == [(600,)]
    assert query(db, "SELECT relkind::text FROM pg_class WHERE oid = 'bronze.daily_activity'::regclass") == [("r",)]
    conn.rollback()
    said = []
    report = partition_migration.migrate_table(conn, source, "test", batch_rows=300, drop_old=True, say=said.append)
    assert any("resuming" in line for line in said)
    assert (report.rows_old, report.rows_new, report.kept_as) == (rows, rows, None)
    assert query(db, "SELECT count(*), count(DISTINCT record_number) FROM bronze.daily_activity") == [(rows, rows)]
    assert query(db, "SELECT to_regclass('bronze.\"daily_activity-unpartitioned\"') IS NULL") == [(True,)]


def test_a_month_detached_but_not_dropped_is_finished_and_one_detached_by_hand_stays(write_config, contexts, db):
    """A round whose connection went between DETACH and DROP leaves the month detached; the next
    round drops it. A month someone detached by hand (to archive it) is not ingestd's to drop."""
    path = write_config(sources=partitioned_sources({"daily_activity": "source_timestamp"},
                                                    {"daily_activity": "12 months"}))
    config = load_config(path)
    ctx = contexts(config)
    for n, when in enumerate((datetime(2019, 1, 5, tzinfo=UTC), datetime(2019, 2, 5, tzinfo=UTC))):
        set_mtime(drop_file(config.landing_dir, f"daily_activity/old-{n}.csv", small_csv(n)), when)
        assert ingest(ctx, f"daily_activity/old-{n}.csv").status == "success"
    db.autocommit = True
    for name in ("daily_activity_p2019_01", "daily_activity_p2019_02"):
        execute(db, f"ALTER TABLE bronze.daily_activity DETACH PARTITION bronze.{name}")
    # What the interrupted round had recorded for January:
    execute(db, "INSERT INTO ops.partition_log (source, partition, action, range_from, range_to, by_whom)"
                " VALUES ('daily_activity', 'daily_activity_p2019_01', 'detached', '2019-01-01Z', '2019-02-01Z',"
                " 'an earlier round')")
    assert main(["-c", str(path), "partitions", "maintain"]) == 0
    assert query(db, "SELECT to_regclass('bronze.daily_activity_p2019_01') IS NULL,"
                     " to_regclass('bronze.daily_activity_p2019_02') IS NOT NULL") == [(True, True)]
    assert query(db, "SELECT action, rows FROM ops.partition_log WHERE partition = 'daily_activity_p2019_01'"
                     " ORDER BY id") == [("created", None), ("detached", None), ("dropped", 2)]
    assert query(db, "SELECT count(*) FROM bronze.daily_activity_p2019_02") == [(2,)]
