"""Getting started: ``ingestd init`` writes a starting point, ``ingestd config
show`` prints the configuration in force and where each value came from,
``ingestd check`` says what is missing, ``ingestd validate`` and
``ingestd infer-schema`` try files and schemas without loading anything."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .commands import Command
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    NotPermittedError,
    PermanentError,
    TransientError,
)
from .logs import REDACTED, is_secret_name, redact_url

if TYPE_CHECKING:
    from .config import Config, SourceConfig


def cmd_init(config: None, args) -> int:
    """``ingestd init``; a place that cannot be written is bad usage (exit 2), said in one line."""
    try:
        return _init(args)
    except BrokenPipeError:
        raise
    except (ConfigError, OSError) as exc:
        print(f"ingestd init: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _init(args) -> int:
    """Write ingestd.toml (commented), the example schemas, the sample files
    and the landing folders into a directory; never overwrite without
    --force, never write through a symbolic link (dangling or not) or into a
    hard-linked file's other names, and write nothing unless every place is
    fit."""
    import tomllib

    target = Path(args.dir)
    examples = files("ingestd").joinpath("examples")
    config_path = target / "ingestd.toml"
    text = examples.joinpath("ingestd.toml").read_text(encoding="utf-8")
    text = text.replace("# ingestd configuration: copy to ingestd.toml (or pass --config) and adapt.",
                        "# ingestd configuration, written by `ingestd init`: adapt, then `ingestd check`.")
    doc = tomllib.loads(text)
    landing = Path(doc.get("landing", {}).get("dir", "data_lake"))
    folders = [Path("schemas"), Path("examples"),
               *(landing / s["name"] for s in doc.get("sources", []) if s.get("kind", "file") == "file")]
    schemas = [e for e in examples.joinpath("schemas").iterdir() if e.name.endswith(".json")]
    from . import samples
    written_files = [Path("ingestd.toml"), *(Path("schemas", e.name) for e in schemas),
                     *(Path("examples", name) for name in samples.FITBIT)]
    problem = _init_problem(target, written_files, folders, args.force)
    if problem:
        from .table import printable
        print(printable(f"ingestd init: {problem}"), file=sys.stderr)
        return EXIT_USAGE
    target.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        (target / folder).mkdir(parents=True, exist_ok=True)
    _write_inside(config_path, text.encode("utf-8"), replace=True)
    written = [e.name for e in schemas if _write_inside(target / "schemas" / e.name, e.read_bytes(), args.force)]
    # Sample files of the example sources, made by ingestd (daemon/samples.py): the first file to drop.
    for name, make in samples.FITBIT.items():
        _write_inside(target / "examples" / name, make(), args.force)
    from .config import load_config
    config = load_config(config_path, environ={})
    _say_initialised(target, config, len(written), len(schemas) - len(written))
    return EXIT_OK


def _init_problem(target: Path, written: list[Path], folders: list[Path], force: bool) -> str | None:
    """Why init may not write ``written`` and make ``folders`` under
    ``target``, checked before anything is written: a symbolic link on the
    way, a file where a folder goes (or a folder where a file goes), an
    ingestd.toml to keep; None when all is fit."""
    link = _first_link(target, [*written, *folders])
    if link is not None:
        return (f"{link} is a symbolic link (to {os.readlink(link)}); init writes only inside {target}, never "
                "through a link: remove it, or init another folder")
    for folder in [Path("."), *folders]:
        here = target
        for part in folder.parts:
            here = here / part
            if here.exists() and not here.is_dir():
                return f"{here} is a file where init makes a folder: move it, or init another folder"
    for path in written:
        if (target / path).is_dir():
            return f"{target / path} is a folder where init writes a file: move it, or init another folder"
    if (target / "ingestd.toml").exists() and not force:
        return f"{target / 'ingestd.toml'} exists; keep it, or pass --force to overwrite"
    return None


def _first_link(target: Path, relative: list[Path]) -> Path | None:
    """The first symbolic link at, or on the way to, one of the ``relative``
    paths under ``target`` (``target`` itself may be one: the user named it)."""
    for path in relative:
        here = target
        for part in path.parts:
            here = here / part
            if here.is_symlink():
                return here
            if not here.exists():
                break
    return None


def _write_inside(path: Path, data: bytes, replace: bool) -> bool:
    """Write ``path`` as a new file (never through a link: O_NOFOLLOW and
    O_EXCL, in case one appeared since the check); an existing one is kept
    unless ``replace``, and then replaced by renaming a new file over its
    name, so that another name of its inode (a hard link) keeps its bytes.
    True when written."""
    if not replace:
        try:
            _write_new(path, data)
        except FileExistsError:
            return False
        return True
    temporary = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        _write_new(temporary, data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return True


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _say_initialised(target: Path, config: Config, written: int, kept: int) -> None:
    file_sources = sorted(s.name for s in config.sources.values() if s.kind == "file")
    print(f"wrote {target / 'ingestd.toml'}; schemas in {target / 'schemas'}/ ({written} written"
          + (f", {kept} kept" if kept else "") + f"); {config.landing_dir}/ with a folder per file source "
          f"({', '.join(file_sources)})")
    print(f"sample files of the example sources in {target / 'examples'}/ (made up by ingestd, shaped like the "
          "Fitbit exports)")
    option = "" if target.resolve() == Path.cwd().resolve() else f" -c {target / 'ingestd.toml'}"
    print("next: set database.url and broker.url in ingestd.toml (or INGESTD_DATABASE_URL / INGESTD_AMQP_URL),")
    print(f"      then: ingestd{option} check && ingestd{option} run, and drop a file: "
          f"cp {target / 'examples' / 'dailyActivity_merged.csv'} {config.landing_dir / 'daily_activity'}/")


def cmd_config_show(config: Config, args) -> int:
    """Every setting in force, its value (secrets redacted) and its origin."""
    import json

    rows = effective_settings(config)
    if getattr(args, "json", False):
        print(json.dumps({"config_file": str(config.path), "settings": [
            {"key": k, "value": v, "origin": o} for k, v, o in rows]}, indent=2, default=str))
        return EXIT_OK
    from .table import format_table
    print(f"config file: {config.path}")
    print(format_table(["KEY", "VALUE", "FROM"], [
        (k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else v, o) for k, v, o in rows], shrink=[1]))
    return EXIT_OK


def effective_settings(config: Config) -> list[tuple[str, Any, str]]:
    """(key, value, origin) of every setting, sources last; every value
    passes through ``shown`` (no secret)."""
    origins = config.origins
    return [(key, shown(value), origins.get(key, "default")) for key, value in _flat_settings(config)]


def shown(value: Any) -> Any:
    """``value`` as ``config show`` prints it, without secrets: in text,
    what ``logs.redact_url`` hides (the password of a URL or connection
    string, an http(s) URL's user part, the values of secret query
    parameters); in tables (``params``), the values of secret names
    (``logs.is_secret_name``); lists and tables item by item."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) else shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown(v) for v in value]
    if not isinstance(value, str):
        return value
    return redact_url(value)


def _flat_settings(config: Config):
    """(TOML key, value) of every setting, as ``config.py`` reads them."""
    from .config import Config, PollerConfig, settings_of

    yield "landing.dir", config.landing_dir
    for key, field in settings_of(Config):
        yield key, getattr(config, field.name)
    for key, field in settings_of(PollerConfig):
        value = getattr(config.poller, field.name)
        yield key, dict(value) if field.name == "min_request_interval" else value  # a table in the file
    for source in config.sources.values():
        for key, value in _source_settings(source):
            yield f"sources.{source.name}.{key}", value


def _source_settings(source: SourceConfig):
    """(key, value in force) of every key a source of its kind (and provider)
    may set, None where unset and without a default; each value as it could
    be written in the file (durations in seconds, retention in months)."""
    from .config import ApiSource, FileSource

    yield "kind", source.kind
    if isinstance(source, FileSource):
        # Its format's options (records/formats.py); records_path, which API sources have too, comes below.
        yield "format", source.format
        yield from ((key, value) for key, value in source.options.items() if key != "records_path")
    # records_path: an API source's, or a file source's whose format takes it.
    takes_path = not isinstance(source, FileSource) or "records_path" in source.options
    yield from (("schema", source.schema_path), ("max_invalid_ratio", source.max_invalid_ratio),
                ("format_keyword", source.format_keyword),
                *((("records_path", source.records_path),) if takes_path else ()),
                ("expect_every", source.expect_every_seconds), ("partition", source.partition or "none"),
                ("partition_by", source.partition_by),
                ("retention", f"{source.retention_months} months" if source.retention_months else None),
                ("objectives", dict(source.objectives)))
    if isinstance(source, ApiSource):
        from .providers import provider_for

        provider = provider_for(source)
        in_force = {"base_url": provider.base_url(), "lookback_days": provider.lookback_days()}
        yield from (("provider", source.provider), ("interval", source.interval_seconds))
        for key in sorted(provider.options):
            yield key, source.options.get(key, in_force.get(key))


def cmd_check(config, args) -> int:
    from .broker import Topology, TopologyMismatch, open_connection
    from .db import connect, pending_migrations

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
    # Which servers, and who chose them: an INGESTD_DATABASE_URL exported for another project
    # would otherwise be followed (and its database created by `run`) without a word.
    chosen_by = {"database": config.origin("database.url"), "broker": config.origin("broker.url")}
    for ok, what, message in results:
        said_by = f" (url from {chosen_by[what]})" if what in chosen_by else ""
        print(f"{'ok  ' if ok else 'FAIL'} {what:<9} {message}{said_by}")
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


def cmd_infer_schema(config: None, args) -> int:
    import itertools
    import json

    from ingestd.consumers.infer import infer_schema
    from ingestd.records.formats import FORMATS, format_of, read_records

    path = Path(args.file)
    fmt = args.format or format_of(path.name)
    if fmt is None:
        print(f"ingestd infer-schema: cannot tell the format of {path.name}; pass --format", file=sys.stderr)
        return EXIT_USAGE
    options = {key: getattr(args, key) for key in _INFER_OPTIONS if getattr(args, key) is not None}
    problem = _option_refused(FORMATS[fmt], options)
    if problem:
        from .table import printable
        print(printable(f"ingestd infer-schema: {problem}"), file=sys.stderr)
        return EXIT_USAGE
    try:
        records = read_records(path, fmt, None, options)
        values = [value for value, _ in itertools.islice(records, max(1, args.sample))]
    except PermanentError as exc:
        print(f"ingestd infer-schema: {path}: {exc.reason}: {exc.failure.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"ingestd infer-schema: {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(infer_schema(values, args.title or path.name), indent=2, ensure_ascii=False))
    return EXIT_OK


# The options of infer-schema that are options of a format (records/formats.py), by key.
_INFER_OPTIONS = {"delimiter": "--delimiter", "skip_lines": "--skip-lines", "records_path": "--records-path"}


def _option_refused(fmt, options: dict[str, Any]) -> str | None:
    """Why an option given cannot be applied to a file of format ``fmt``
    (one it does not take, a value its source key would refuse), or None."""
    import jsonschema

    for key, value in options.items():
        if key not in fmt.options:
            takes = ", ".join(_INFER_OPTIONS[k] for k in fmt.options if k in _INFER_OPTIONS) or "none"
            return f"{_INFER_OPTIONS[key]} is no option of format {fmt.name!r} (its options: {takes})"
        error = next(jsonschema.Draft202012Validator(dict(fmt.options[key])).iter_errors(value), None)
        if error is not None:
            expected = fmt.options[key].get("x-expected")
            return f"{_INFER_OPTIONS[key]} {str(value)[:20]!r}: " + (f"give {expected}" if expected else error.message)
    return None


class _FormatNames(Sequence[str]):
    """The names of the registered file formats (``ingestd.records.formats.FORMATS``),
    read when argparse looks at them (a help page, a value to check): the
    registry, and the readers and pyarrow behind it, are imported then, not
    for every ``ingestd --help`` and completion script."""

    def _names(self) -> list[str]:
        from ingestd.records.formats import FORMATS

        return list(FORMATS)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def _validate_arguments(parser) -> None:
    parser.add_argument("--source", required=True, metavar="NAME", help="a file source of the config")
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to read (anywhere)")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def _infer_schema_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE", help="a sample file (csv, json, jsonl, parquet; .gz too)")
    fmt = parser.add_argument("--format", help="the file's format (default: from its suffix)")
    fmt.choices = _FormatNames()  # set after: add_argument would read them to check the metavar
    parser.add_argument("--records-path", metavar="PATH", help="JSON: the dotted path of the records array")
    parser.add_argument("--delimiter", metavar="CHAR", help="CSV delimiter (default ,)")
    parser.add_argument("--skip-lines", type=int, metavar="N", help="CSV: lines before the header (default 0)")
    parser.add_argument("--sample", type=int, default=100_000, metavar="N",
                        help="read at most N records (default 100,000)")
    parser.add_argument("--title", help="the schema's title (default: the file's name)")


def _init_arguments(parser) -> None:
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to write (default: here)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing ingestd.toml and schemas")


def _config_show_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


COMMANDS = [
    Command("check", help="check config, database, broker and landing folder",
            description="Check the configuration and connectivity; say what is wrong and how to fix it.",
            handler=cmd_check),
    Command("validate", help="read and validate files without loading them: what would happen",
            description="Read FILEs as files of source NAME (its format, schema and limits) and say what "
                        "a load would do: rows, invalid records with pointer and keyword, and the reason "
                        "code it would get. Nothing is loaded, moved or published; no server is needed. "
                        "Exit 0 when every file would load, 1 otherwise.",
            handler=cmd_validate, add_arguments=_validate_arguments),
    Command("infer-schema", help="propose a JSON Schema from a sample file",
            description="Read a sample file and print a JSON Schema (draft 2020-12) for its records: "
                        "types, required properties, and shapes of text (integers, decimals, dates). "
                        "Review it, save it under schemas/, and name it in the source. No config needed.",
            handler=cmd_infer_schema, add_arguments=_infer_schema_arguments, needs_config=False),
    Command("init", help="write a starting config, the example schemas and the landing folders",
            description="Write DIR/ingestd.toml (commented), DIR/schemas/ and DIR/data_lake/<source>/ "
                        "for each file source of the example. Nothing is overwritten without --force.",
            handler=cmd_init, add_arguments=_init_arguments, needs_config=False),
    Command("config", help="the configuration in force", description="The configuration in force."),
    Command("config show", help="every setting, its value and where it came from",
            description="Every setting in force, its value (secrets redacted) and where it came from: "
                        "the file, the environment, or the default.",
            handler=cmd_config_show, add_arguments=_config_show_arguments),
]
