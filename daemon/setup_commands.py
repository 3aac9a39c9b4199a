"""Getting started: ``ingestd init`` writes a starting point, ``ingestd config
show`` prints the configuration in force and where each value came from,
``ingestd check`` says what is missing, ``ingestd validate`` and
``ingestd infer-schema`` try files and schemas without loading anything."""
from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from .config import ApiSource, Config, FileSource, PollerConfig, SourceConfig, settings_of
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, NotPermittedError, PermanentError, TransientError
from .logs import redact


def cmd_init(args) -> int:
    """Write ingestd.toml (commented), the example schemas and the landing
    folders into a directory; never overwrite without --force."""
    target = Path(args.dir)
    examples = files("ingestd").joinpath("examples")
    config_path = target / "ingestd.toml"
    if config_path.exists() and not args.force:
        print(f"ingestd init: {config_path} exists; keep it, or pass --force to overwrite", file=sys.stderr)
        return EXIT_USAGE
    target.mkdir(parents=True, exist_ok=True)
    text = examples.joinpath("ingestd.toml").read_text(encoding="utf-8")
    text = text.replace("# ingestd configuration: copy to ingestd.toml (or pass --config) and adapt.",
                        "# ingestd configuration, written by `ingestd init`: adapt, then `ingestd check`.")
    config_path.write_text(text, encoding="utf-8")
    schemas = target / "schemas"
    schemas.mkdir(exist_ok=True)
    written = []
    for entry in examples.joinpath("schemas").iterdir():
        if entry.name.endswith(".json"):
            destination = schemas / entry.name
            if not destination.exists() or args.force:
                destination.write_bytes(entry.read_bytes())
                written.append(destination.name)
    from .config import load_config
    config = load_config(config_path, environ={})
    for source in config.sources.values():
        if source.kind == "file":
            (config.landing_dir / source.name).mkdir(parents=True, exist_ok=True)
    kept = sum(1 for p in schemas.glob("*.json")) - len(written)
    print(f"wrote {config_path}; schemas in {schemas}/ ({len(written)} written" + (f", {kept} kept" if kept else "")
          + f"); {config.landing_dir}/ with a folder per file source "
          f"({', '.join(sorted(s.name for s in config.sources.values() if s.kind == 'file'))})")
    option = "" if target.resolve() == Path.cwd().resolve() else f" -c {config_path}"
    print("next: set database.url and broker.url in ingestd.toml (or INGESTD_DATABASE_URL / INGESTD_AMQP_URL),")
    print(f"      then: ingestd{option} check && ingestd{option} run")
    return EXIT_OK


def cmd_config_show(config: Config, args) -> int:
    """Every setting in force, its value (secrets redacted) and its origin."""
    rows = effective_settings(config)
    if getattr(args, "json", False):
        import json
        print(json.dumps({"config_file": str(config.path), "settings": [
            {"key": k, "value": v, "origin": o} for k, v, o in rows]}, indent=2, default=str))
        return EXIT_OK
    from .table import format_table
    print(f"config file: {config.path}")
    print(format_table(["KEY", "VALUE", "FROM"], rows, shrink=[1]))
    return EXIT_OK


def effective_settings(config: Config) -> list[tuple[str, Any, str]]:
    """(key, value, origin) of every setting, sources last."""
    origins = config.origins
    out = []
    for key, value in _flat_settings(config):
        shown = redact(str(value)) if key in ("database.url", "broker.url") else value
        out.append((key, shown, origins.get(key, "default")))
    return out


def _flat_settings(config: Config):
    """(TOML key, value) of every setting, as ``config.py`` reads them."""
    yield "landing.dir", config.landing_dir
    for key, field in settings_of(Config):
        yield key, getattr(config, field.name)
    for key, field in settings_of(PollerConfig):
        yield key, getattr(config.poller, field.name)
    for source in config.sources.values():
        for key, value in _source_settings(source):
            if value not in (None, (), "") or key == "format":
                yield f"sources.{source.name}.{key}", value


def _source_settings(source: SourceConfig):
    yield "kind", source.kind
    if isinstance(source, FileSource):
        yield from (("format", source.format), ("delimiter", source.delimiter), ("skip_lines", source.skip_lines))
    yield from (("schema", source.schema_path), ("max_invalid_ratio", source.max_invalid_ratio),
                ("format_keyword", source.format_keyword), ("records_path", source.records_path))
    if isinstance(source, ApiSource):
        yield from (("provider", source.provider), ("interval", source.interval_seconds))
        yield from sorted(source.options.items())


def cmd_check(config, args) -> int:
    from .broker import Topology, TopologyMismatch, open_connection
    from .db import connect, pending_migrations
    from .logs import redact_url

    results: list[tuple[bool, str, str]] = []
    results.append((True, "config", f"{config.path} ({len(config.sources)} source(s))"))
    try:
        conn = connect(config.database_url, config.connect_timeout_seconds, "ingestd-check")
        try:
            missing = pending_migrations(conn)
            partitioning = [] if missing else _partition_results(conn, config)
        finally:
            conn.close()
        if missing:
            results.append((False, "database", f"{redact_url(config.database_url)} reachable, but "
                            f"{len(missing)} migration(s) not applied; fix: ingestd migrate"))
        else:
            results.append((True, "database", f"{redact_url(config.database_url)} reachable, schema up to date"))
            results += partitioning
    except NotPermittedError as exc:
        results.append((False, "database", f"{exc}; fix: {exc.fix}"))
    except TransientError as exc:
        if "does not exist" in str(exc):
            results.append(_missing_database(config))
        else:
            results.append((False, "database", f"{exc}; fix: start PostgreSQL or set [database] url / "
                            "INGESTD_DATABASE_URL"))
    try:
        connection = open_connection(config.amqp_url, config.heartbeat_seconds, "ingestd-check")
        try:
            Topology.for_config(config).declare(connection.channel())
            results.append((True, "broker", f"{redact_url(config.amqp_url)} reachable, topology declared"))
        except TopologyMismatch as exc:
            results.append((False, "broker", str(exc)))
        finally:
            if connection.is_open:
                connection.close()
    except NotPermittedError as exc:
        results.append((False, "broker", f"{exc}; fix: {exc.fix}"))
    except TransientError as exc:
        results.append((False, "broker", f"{exc}; fix: start RabbitMQ or set [broker] url / INGESTD_AMQP_URL"))
    landing = config.landing_dir
    if not landing.is_dir():
        results.append((False, "landing", f"{landing} does not exist; fix: mkdir -p {landing}"))
    elif not os.access(landing, os.W_OK | os.X_OK):
        results.append((False, "landing", f"{landing} is not writable by this user (archive and quarantine "
                        "moves need it); fix: chown or chmod the folder"))
    else:
        results.append((True, "landing", f"{landing} writable"))
    results += _validation_results(config)
    for ok, what, message in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what:<9} {message}")
    return EXIT_OK if all(ok for ok, _, _ in results) else EXIT_FAILED


def _partition_results(conn, config) -> list[tuple[bool, str, str]]:
    """Each source set to partition = "month": is its table so (or not made yet)?"""
    from .partitions import read_layout

    out = []
    with conn.cursor() as cur:
        for source in config.sources.values():
            if source.partition != "month":
                continue
            layout = read_layout(cur, source.name)
            keep = f", retention {source.retention_months} months" if source.retention_months else ", no retention"
            if layout is None:
                out.append((True, "partition", f"{source.name}: made partitioned by month of {source.partition_by} "
                            f"at its first load{keep}"))
            elif not layout.partitioned:
                out.append((False, "partition", f"{source.name}: bronze.{source.name} is a plain table (loads go on "
                            f"into it; months and retention do not apply); fix: ingestd partitions migrate "
                            f"--source {source.name}"))
            elif layout.column != source.partition_by:
                out.append((False, "partition", f"{source.name}: bronze.{source.name} is partitioned by "
                            f"{layout.column}, the config says {source.partition_by}; fix: partition_by = "
                            f"\"{layout.column}\""))
            else:
                out.append((True, "partition", f"{source.name}: {len(layout.partitions)} partitions by month of "
                            f"{layout.column}{keep}"))
    conn.rollback()
    return out


def _missing_database(config) -> tuple[bool, str, str]:
    """The server answers but the database is not there yet: fine if this
    user may create it (ingestd run and migrate do), else the fix."""
    import psycopg2
    import psycopg2.extensions

    from .logs import redact_url
    dsn = psycopg2.extensions.parse_dsn(config.database_url)
    name = dsn.get("dbname", "?")
    try:
        conn = psycopg2.connect(connect_timeout=config.connect_timeout_seconds, **dict(dsn, dbname="postgres"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                row = cur.fetchone()
        finally:
            conn.close()
    except psycopg2.Error:
        row = None
    if row and row[0]:
        return (True, "database", f"{redact_url(config.database_url)}: the server answers; database {name!r} does "
                "not exist yet: ingestd run (or ingestd migrate) creates it with its tables")
    return (False, "database", f"{redact_url(config.database_url)}: database {name!r} does not exist and this user "
            f"may not create it; fix: createdb -O {dsn.get('user', '<user>')} {name} (as a superuser), or "
            "give the user CREATEDB")


def _validation_results(config) -> list[tuple[bool, str, str]]:
    """Per source with a schema: its draft, the format mode, and which path
    validates it (the compiled one, or jsonschema and why)."""
    from ingestd.consumers.validation import plan_for

    results = []
    for source in config.sources.values():
        if source.schema is not None:
            plan = plan_for(source.schema, source.format_keyword)
            results.append((True, "schema", f"{source.name}: {plan.describe()}"))
    return results


def cmd_validate(config, args) -> int:
    import json

    from ingestd.consumers.dry_run import judge_file
    from ingestd.consumers.validation import RecordValidator, plan_for

    from .table import printable
    source = config.source(args.source)
    if source is None or source.kind != "file":
        known = ", ".join(sorted(s.name for s in config.sources.values() if s.kind == "file")) or "none"
        print(f"ingestd validate: {args.source!r} is not a file source of {config.path} (file sources: {known})",
              file=sys.stderr)
        return EXIT_USAGE
    validator = RecordValidator(source.schema, source.name, source.format_keyword)
    verdicts = [judge_file(config, source, Path(f), validator) for f in args.files]
    if args.json:
        print(json.dumps({"source": source.name, "files": [v.as_json() for v in verdicts]}, indent=2))
    else:
        plan = plan_for(source.schema, source.format_keyword).describe() if source.schema else "no schema"
        print(f"source {source.name}: {source.format}, {plan}")
        for v in verdicts:
            print(printable(f"{v.path}: {v.outcome}; {v.rows} record(s), {v.rows_valid} valid, "
                            f"{v.rows_invalid} invalid" + (f"; {v.message}" if v.message else "")))
            for example in v.invalid_examples:
                for error in example["errors"]:
                    print(printable(f"  record {example['record']}: {error['pointer']} ({error['keyword']}): "
                                    f"{error['message']}"))
    return EXIT_OK if all(v.reason is None for v in verdicts) else EXIT_FAILED


def cmd_infer_schema(args) -> int:
    import itertools
    import json

    from ingestd.consumers.infer import infer_schema
    from ingestd.consumers.readers import read_records

    path = Path(args.file)
    fmt = args.format or _format_of(path.name)
    if fmt is None:
        print(f"ingestd infer-schema: cannot tell the format of {path.name}; pass --format", file=sys.stderr)
        return EXIT_USAGE
    try:
        records = read_records(path, fmt, None, args.records_path, args.delimiter, args.skip_lines)
        values = [value for value, _ in itertools.islice(records, max(1, args.sample))]
    except PermanentError as exc:
        print(f"ingestd infer-schema: {path}: {exc.reason}: {exc.failure.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"ingestd infer-schema: {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(infer_schema(values, args.title or path.name), indent=2, ensure_ascii=False))
    return EXIT_OK


def _format_of(name: str) -> str | None:
    base = name[:-3] if name.endswith(".gz") else name
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                        (".parquet", "parquet")):
        if base.endswith(suffix):
            return fmt
    return None
