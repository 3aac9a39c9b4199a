"""``ingestd partitions`` (list), ``ingestd partitions maintain`` and
``ingestd partitions migrate``: see daemon/partitions.py,
daemon/partition_maintenance.py and daemon/partition_migration.py for what they do."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from .commands import Command, print_json, progress_bar
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .table import format_table, printable


def _sources(config, args) -> list | None:
    """The configured sources the command is about; None (said) for an unknown one."""
    name = getattr(args, "source", None)
    if name is None:
        return list(config.sources.values())
    source = config.sources.get(name)
    if source is None:
        print(printable(f"ingestd: no source {name!r} in the config (sources: {', '.join(sorted(config.sources))})"),
              file=sys.stderr)
        return None
    return [source]


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _day(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d")


def _rows(rows: int | None, exact: bool) -> str:
    return "-" if rows is None else f"{rows:,}" if exact else f"~{rows:,}"


def cmd_list(config, args) -> int:
    from . import partitions
    from .db import connect

    sources = _sources(config, args)
    if sources is None:
        return EXIT_USAGE
    conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-partitions")
    try:
        infos = partitions.describe(conn, sources, exact=args.exact)
    finally:
        conn.close()
    if args.json:
        print_json([partitions.as_row(i) for i in infos])
        return EXIT_OK
    if not infos:
        print("no bronze table yet for " + (f"source {args.source}" if args.source else "the configured sources"))
        return EXIT_OK
    retention = {s.name: s.retention_months for s in sources}
    print(format_table(
        ["SOURCE", "PARTITION", "FROM", "TO", "ROWS", "SIZE", "DROPPED AFTER", "NOTE"],
        [[i.source, i.name, _day(i.lower), _day(i.upper), _rows(i.rows, i.exact), human_bytes(i.bytes),
          _day(i.goes_after) if retention.get(i.source) and i.goes_after else "-", i.note]
         for i in infos], shrink=[7]))
    kept = {i.source for i in infos if not i.note.startswith("plain table") and not retention.get(i.source)}
    for name in sorted(kept):
        print(f"{name}: no retention (every month is kept; set retention = \"24 months\" to drop older ones)")
    return EXIT_OK


def cmd_maintain(config, args) -> int:
    from . import partition_maintenance
    from .db import connect, migrate

    sources = _sources(config, args)
    if sources is None:
        return EXIT_USAGE
    sources = [s for s in sources if s.partition == "month"]
    if not sources:
        print("no source is partitioned (partition = \"month\" in its [[sources]] entry)")
        return EXIT_OK
    migrate(config.database_url, config.connect_timeout_seconds)
    conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-partitions")
    try:
        steps = partition_maintenance.maintain(
            conn, sources, by=f"ingestd partitions maintain ({os.uname().nodename})", dry_run=args.dry_run)
    finally:
        conn.close()
    if steps is None:
        print("ingestd: another process is maintaining the partitions now; try again in a moment", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        print_json([{"source": s.source, "partition": s.partition, "action": s.action, "from": s.lower,
                     "to": s.upper, "rows": s.rows, "rows_exact": s.exact, "bytes": s.bytes,
                     "done": s.done, "loads_expired": s.expired} for s in steps])
        return EXIT_OK
    if not steps:
        print("nothing to do: the coming months have their partitions, none is past retention")
        return EXIT_OK
    verb = {"create": "would make", "drop": "would drop"} if args.dry_run else {"create": "made", "drop": "dropped"}
    print(format_table(["SOURCE", "PARTITION", "ACTION", "FROM", "TO", "ROWS", "SIZE"],
                       [[s.source, s.partition, verb[s.action] if args.dry_run or s.done else "skipped",
                         _day(s.lower), _day(s.upper), _rows(s.rows, s.exact) if s.action == "drop" else "-",
                         human_bytes(s.bytes) if s.action == "drop" else "-"] for s in steps], shrink=[1]))
    for s in steps:
        if s.expired:
            print(f"{s.partition}: {s.expired} loads expired (all their rows are gone: the same bytes dropped "
                  "again load again)")
    if args.dry_run:
        print("dry run: nothing was changed")
    return EXIT_OK


def cmd_migrate(config, args) -> int:
    source = config.sources.get(args.source)
    if source is None:
        _sources(config, args)  # says which sources there are
        return EXIT_USAGE
    if source.partition != "month":
        print(f"ingestd: source {args.source} is not set to be partitioned: add partition = \"month\" (and "
              "partition_by, retention if wanted) to its [[sources]] entry first, so that the consumers "
              "keep its months made", file=sys.stderr)
        return EXIT_USAGE
    if args.batch_rows < 1:
        print("ingestd: --batch-rows must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    from . import partition_migration, partitions
    from .db import connect, migrate

    migrate(config.database_url, config.connect_timeout_seconds)
    conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-partitions-migrate")
    bar = progress_bar(total=0, unit="id", unit_scale=True, quiet=args.no_progress, desc=f"bronze.{source.name}")

    def progress(done: int, top: int) -> None:
        bar.total = top
        bar.n = done
        bar.refresh()

    try:
        report = partition_migration.migrate_table(
            conn, source, by=f"ingestd partitions migrate ({os.uname().nodename})", batch_rows=args.batch_rows,
            drop_old=args.drop_old, progress=progress, say=lambda text: print(f"ingestd: {text}", file=sys.stderr))
    except partitions.MigrationError as exc:
        bar.close()
        print(printable(f"ingestd partitions migrate: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    finally:
        conn.close()
    bar.close()
    _say_migrated(config, source, report)
    return EXIT_OK


def _say_migrated(config, source, report) -> None:
    """What became of the table, and which of its months retention drops next."""
    from . import partition_maintenance
    from .db import connect

    print(f"bronze.{source.name} is partitioned by month of {source.partition_by}: {report.rows_new:,} rows, every "
          f"row of the plain table ({report.rows_old:,}, checked before the swap), in {report.seconds:.1f} s; the "
          f"swap waited {report.swap_waits} time(s) for loads")
    if report.kept_as:
        print(f"the old table is kept as bronze.\"{report.kept_as}\"; once checked: "
              f"DROP TABLE bronze.\"{report.kept_as}\";")
    if source.retention_months:
        conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-partitions")
        try:
            due = [s for s in partition_maintenance.plan(conn, [source]) if s.action == "drop"]
        finally:
            conn.close()
        if due:
            print(f"retention {source.retention_months} months: {len(due)} of these months are past it and go at "
                  f"the next maintenance (within the hour): {', '.join(s.partition for s in due)}")


def _list_arguments(parser) -> None:
    parser.add_argument("--source", metavar="NAME", help="only this source")
    parser.add_argument("--exact", action="store_true", help="count the rows of every partition (slow on large ones)")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def _maintain_arguments(parser) -> None:
    # SUPPRESS: the value given before the action (partitions --source X maintain) stands.
    parser.add_argument("--source", metavar="NAME", default=argparse.SUPPRESS, help="only this source")
    parser.add_argument("--dry-run", action="store_true", help="say what would be made and dropped; change nothing")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")


def _migrate_arguments(parser) -> None:
    parser.add_argument("--source", metavar="NAME", required=True, default=argparse.SUPPRESS, help="the source")
    parser.add_argument("--batch-rows", type=int, default=50_000, metavar="N",
                        help="ids copied per transaction (default 50,000)")
    parser.add_argument("--drop-old", action="store_true", help="drop the old table once the counts match")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


COMMANDS = [
    Command("partitions", help="bronze partitions per source: rows, size, retention",
            description="List the bronze tables of the configured sources: each month's partition "
                        "with its rows, size and when retention drops it (a plain table as one line). "
                        "Rows are counted up to 64 MB a partition and estimated above (~), unless "
                        "--exact. The actions make months, apply retention and migrate a plain table.",
            handler=cmd_list, add_arguments=_list_arguments),
    Command("partitions maintain", help="make the coming months, drop partitions past retention",
            description="What consumers do every hour: make this month's and the next two months' "
                        "partitions, and detach and drop those whose rows are all older than the "
                        "source's retention. Each change is logged and recorded in "
                        "ops.partition_log. With --dry-run, only say what would be done.",
            handler=cmd_maintain, add_arguments=_maintain_arguments),
    Command("partitions migrate", help="make a source's plain bronze table partitioned, while loads go on",
            description="Copy the rows of the plain bronze.SOURCE, in batches, into a table "
                        "partitioned by month (the source's partition_by), then swap the two in one "
                        "short transaction: loads go on, and wait a moment at the swap. The old "
                        "table is kept as bronze.\"SOURCE-unpartitioned\" (unless --drop-old and "
                        "the counts match). Interrupted, it resumes where it stopped. Set "
                        "partition = \"month\" for the source first.",
            handler=cmd_migrate, add_arguments=_migrate_arguments),
]
