"""Load and check the TOML configuration.

The file is checked against ``config.schema.json`` (shipped in the package);
an unknown key or a bad value is refused with a message that names the key.
Environment variables override the connection settings so that secrets can
live in an environment file rather than in the TOML.
"""
from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "ingestd.toml"
ENV_CONFIG = "INGESTD_CONFIG"
ENV_OVERRIDES = {
    "INGESTD_HEALTH_PORT": ("health", "port"),
    "INGESTD_HEALTH_HOST": ("health", "host"),
    "INGESTD_DATABASE_URL": ("database", "url"),
    "INGESTD_AMQP_URL": ("broker", "url"),
    "INGESTD_LANDING_DIR": ("landing", "dir"),
}


@dataclass(frozen=True)
class SourceConfig:
    name: str
    format: str = "json"
    schema_path: Path | None = None
    max_invalid_ratio: float = 0.1
    # The JSON Schema "format" keyword: "assert" (checked) or "annotate".
    format_keyword: str = "assert"
    records_path: str | None = None
    delimiter: str = ","
    skip_lines: int = 0
    # The JSON Schema document itself, read once at start.
    schema: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    kind: str = "file"
    # API sources (kind = "api"); see daemon/providers.py.
    provider: str | None = None
    series: tuple[str, ...] = ()
    group: str | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    url: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    headers_env: tuple[tuple[str, str], ...] = ()
    interval_seconds: float = 3600.0
    lookback_days: int = 0
    start_date: str | None = None
    record_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class PollerConfig:
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    retry_base_seconds: float = 1.0
    inline_payload_bytes: int = 256 * 1024
    # Seconds between two requests to the same provider (FRED allows 120 a minute).
    min_request_interval: tuple[tuple[str, float], ...] = (("fred", 0.5), ("valet", 0.2), ("http_json", 0.0))

    def interval_for(self, provider: str) -> float:
        return dict(self.min_request_interval).get(provider, 0.0)


@dataclass(frozen=True)
class Config:
    path: Path | None
    landing_dir: Path
    settle_seconds: float = 0.5
    after_load: str = "archive"
    polling: bool = False
    poll_interval_seconds: float = 1.0
    rescan_seconds: float = 60.0
    max_file_bytes: int | None = None
    # One record (a JSON record, a JSON Lines line, a CSV row): a consumer
    # holds it whole while it is parsed and validated, which may take up to
    # about 32 times its size in memory (nested JSON of tiny values).
    max_record_bytes: int = 16 * 1024 * 1024
    database_url: str = "postgresql://localhost/ingest"
    connect_timeout_seconds: int = 10
    amqp_url: str = "amqp://guest:guest@localhost:5672/%2F"
    prefix: str = ""
    delivery_limit: int = 5
    prefetch: int = 2
    heartbeat_seconds: int = 30
    workers: int = 1
    stop_timeout_seconds: float = 60.0
    log_level: str = "INFO"
    replay_limit: int = 5
    health_host: str = "127.0.0.1"
    health_port: int = 9464  # 0: no health and metrics server
    poller: PollerConfig = field(default_factory=PollerConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # Where each setting came from ("file", "environment (INGESTD_...)");
    # absent keys are defaults. Keys as in the file: "landing.dir",
    # "sources.<name>.<field>".
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> SourceConfig | None:
        return self.sources.get(name)

    @property
    def api_sources(self) -> list[SourceConfig]:
        return [s for s in self.sources.values() if s.kind == "api"]


def _config_schema() -> dict[str, Any]:
    return json.loads(files("ingestd.daemon").joinpath("config.schema.json").read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def describe_config_error(error: jsonschema.ValidationError) -> str:
    """A one-line message naming the offending key."""
    where = _key_path(error)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        keys = ", ".join(repr(k) + _did_you_mean(k, known) for k in extra)
        return f"{where}: unknown key {keys}" if where != "(top level)" else f"unknown key {keys}"
    if error.validator == "not" and isinstance(error.validator_value, dict) and "required" in error.validator_value:
        keys = ", ".join(repr(k) for k in error.validator_value["required"])
        return f"{where}: key {keys} is not allowed here (it belongs to file sources)"
    return f"{where}: {error.message}"


def _did_you_mean(key: str, known: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_config_document(doc: Mapping[str, Any]) -> list[str]:
    """Every problem of a parsed config document, as messages naming the key."""
    validator = jsonschema.Draft202012Validator(_config_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    messages = [describe_config_error(e) for e in errors]
    names = [s.get("name") for s in doc.get("sources", []) if isinstance(s, dict)]
    for name in sorted({n for n in names if names.count(n) > 1 and n}):
        messages.append(f"sources: name {name!r} is configured twice")
    return messages


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and resolve the configuration.

    ``path`` falls back to ``$INGESTD_CONFIG``, then ``./ingestd.toml``.
    Raises ``ConfigError`` with every problem found.
    """
    env = os.environ if environ is None else environ
    cfg_path = Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)
    try:
        doc = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {cfg_path} not found: pass --config PATH, set {ENV_CONFIG}, "
            f"or copy ingestd.example.toml to {DEFAULT_CONFIG_PATH}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read: {exc}") from None
    return build_config(doc, base_dir=cfg_path.parent, path=cfg_path, environ=env)


def build_config(
    doc: Mapping[str, Any],
    base_dir: Path,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Turn a parsed document into a ``Config`` (schema check, env overrides, schemas read)."""
    env = os.environ if environ is None else environ
    problems = check_config_document(doc)
    if problems:
        where = f"{path}: " if path else ""
        raise ConfigError(where + "; ".join(problems))
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in doc.items() if isinstance(v, dict)}
    origins: dict[tuple[str, str], str] = {}
    where_from = {f"{section}.{key}": "file" for section, values in sections.items() for key in values}
    for raw in doc.get("sources", []):
        for key in raw:
            where_from[f"sources.{raw.get('name')}.{_SOURCE_FIELD.get(key, key)}"] = "file"
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sections.setdefault(section, {})[key] = env[var]
            origins[(section, key)] = var
            where_from[f"{section}.{key}"] = f"environment ({var})"
    problems = []
    for (section, key), check in (("database", "url"), check_database_url), (("broker", "url"), check_broker_url):
        value = sections.get(section, {}).get(key)
        problem = check(value) if isinstance(value, str) else None
        if problem:
            origin = f" (from {origins[(section, key)]})" if (section, key) in origins else ""
            problems.append(f"{section}.{key}{origin}: {problem}")
    if problems:
        raise ConfigError((f"{path}: " if path else "") + "; ".join(problems))

    landing = sections.get("landing", {})
    database = sections.get("database", {})
    broker = sections.get("broker", {})
    consumer = sections.get("consumer", {})
    log = sections.get("log", {})
    dlq = sections.get("dlq", {})
    poller = sections.get("poller", {})
    health = sections.get("health", {})

    landing_dir = Path(landing.get("dir", "data_lake"))
    if not landing_dir.is_absolute():
        landing_dir = base_dir / landing_dir
    sources = {}
    for raw in doc.get("sources", []):
        sources[raw["name"]] = _build_source(raw, base_dir)

    defaults = Config(path=None, landing_dir=Path("."))
    return Config(
        path=path,
        landing_dir=landing_dir.resolve(),
        settle_seconds=float(landing.get("settle_seconds", defaults.settle_seconds)),
        after_load=landing.get("after_load", defaults.after_load),
        polling=bool(landing.get("polling", defaults.polling)),
        poll_interval_seconds=float(landing.get("poll_interval_seconds", defaults.poll_interval_seconds)),
        rescan_seconds=float(landing.get("rescan_seconds", defaults.rescan_seconds)),
        max_file_bytes=landing.get("max_file_bytes"),
        max_record_bytes=int(landing.get("max_record_bytes", defaults.max_record_bytes)),
        database_url=database.get("url", defaults.database_url),
        connect_timeout_seconds=int(database.get("connect_timeout_seconds", defaults.connect_timeout_seconds)),
        amqp_url=broker.get("url", defaults.amqp_url),
        prefix=broker.get("prefix", defaults.prefix),
        delivery_limit=int(broker.get("delivery_limit", defaults.delivery_limit)),
        prefetch=int(broker.get("prefetch", defaults.prefetch)),
        heartbeat_seconds=int(broker.get("heartbeat_seconds", defaults.heartbeat_seconds)),
        workers=int(consumer.get("workers", defaults.workers)),
        stop_timeout_seconds=float(consumer.get("stop_timeout_seconds", defaults.stop_timeout_seconds)),
        log_level=str(log.get("level", defaults.log_level)).upper(),
        replay_limit=int(dlq.get("replay_limit", defaults.replay_limit)),
        poller=_build_poller(poller),
        health_host=str(health.get("host", defaults.health_host)),
        health_port=int(health.get("port", defaults.health_port)),
        sources=sources,
        origins=where_from,
    )


def check_database_url(url: str) -> str | None:
    """Why ``url`` is not a PostgreSQL connection string, or None. The
    message never repeats the value (it may hold a password)."""
    import psycopg2.extensions

    example = "postgresql://user:password@host:5432/dbname, or key=value pairs such as 'host=db dbname=ingest'"
    if "://" in url:
        scheme = url.split("://", 1)[0]
        if scheme not in ("postgresql", "postgres"):
            return f"scheme {scheme[:20]!r} is not postgresql:// (expected {example})"
    elif "=" not in url:
        return f"not a PostgreSQL URL or connection string (expected {example})"
    try:
        psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return f"not a valid PostgreSQL connection string (expected {example})"
    return None


def check_broker_url(url: str) -> str | None:
    """Why ``url`` is not an AMQP URL, or None (never repeating the value)."""
    from urllib.parse import urlsplit

    example = "amqp://user:password@host:5672/vhost"
    if not url.startswith(("amqp://", "amqps://")):
        return f"not an AMQP URL: it must start with amqp:// or amqps:// (expected {example})"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return f"not a valid AMQP URL (expected {example})"
    if not parts.hostname:
        return f"no host in the AMQP URL (expected {example})"
    return None


# Keys of a [[sources]] table whose SourceConfig field has another name.
_SOURCE_FIELD = {"schema": "schema_path", "interval": "interval_seconds"}


def _build_poller(raw: Mapping[str, Any]) -> PollerConfig:
    base = PollerConfig()
    intervals = dict(base.min_request_interval) | {k: float(v) for k, v in raw.get("min_request_interval", {}).items()}
    return PollerConfig(
        timeout_seconds=float(raw.get("timeout_seconds", base.timeout_seconds)),
        max_attempts=int(raw.get("max_attempts", base.max_attempts)),
        max_retry_seconds=float(raw.get("max_retry_seconds", base.max_retry_seconds)),
        retry_base_seconds=float(raw.get("retry_base_seconds", base.retry_base_seconds)),
        inline_payload_bytes=int(raw.get("inline_payload_bytes", base.inline_payload_bytes)),
        min_request_interval=tuple(sorted(intervals.items())),
    )


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number or ``90s``, ``15m``, ``1h``, ``1d``."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(value[:-1]) * units[value[-1]]


# Where each provider keeps its records, unless the source says otherwise.
DEFAULT_RECORDS_PATH = {"fred": "observations", "valet": "observations"}


def _build_source(raw: Mapping[str, Any], base_dir: Path) -> SourceConfig:
    name = raw["name"]
    schema_doc = None
    schema_path = None
    if raw.get("schema"):
        schema_path = Path(raw["schema"])
        if not schema_path.is_absolute():
            schema_path = (base_dir / schema_path).resolve()
        try:
            schema_doc = json.loads(schema_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"sources[{name}].schema: file {schema_path} not found") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"sources[{name}].schema: {schema_path} is not readable JSON: {exc}") from None
        from ingestd.consumers.validation import check_patterns, format_checker, validator_class

        problems = check_patterns(schema_doc)
        if problems:
            raise ConfigError(f"sources[{name}].schema: {schema_path}: patterns are ECMA-262 regular expressions; "
                              + "; ".join(problems))
        try:
            # Against its draft's metaschema, "regex" formats being ECMA-262 too.
            validator_cls = validator_class(schema_doc)
            validator_cls.check_schema(schema_doc, format_checker=format_checker(validator_cls))
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"sources[{name}].schema: {schema_path} is not a valid JSON Schema: "
                              f"{exc.message}") from None
    kind = raw.get("kind", "file")
    provider = raw.get("provider")
    return SourceConfig(
        name=name,
        format=raw.get("format", "json"),
        schema_path=schema_path,
        max_invalid_ratio=float(raw.get("max_invalid_ratio", 0.1)),
        format_keyword=raw.get("format_keyword", "assert"),
        records_path=raw.get("records_path", DEFAULT_RECORDS_PATH.get(provider or "")),
        delimiter=raw.get("delimiter", ","),
        skip_lines=int(raw.get("skip_lines", 0)),
        schema=schema_doc,
        kind=kind,
        provider=provider,
        series=tuple(raw.get("series", ())),
        group=raw.get("group"),
        api_key_env=raw.get("api_key_env"),
        base_url=raw.get("base_url"),
        url=raw.get("url"),
        params=tuple(sorted((k, str(v)) for k, v in raw.get("params", {}).items())),
        headers_env=tuple(sorted(raw.get("headers_env", {}).items())),
        interval_seconds=parse_duration(raw.get("interval", 3600)),
        lookback_days=int(raw.get("lookback_days", 0)),
        start_date=raw.get("start_date"),
        record_key=tuple(raw.get("record_key", ())),
    )


# Settings a running daemon picks up when the config file changes; the rest
# (connections, landing folder, worker count) need a restart.
HOT_FIELDS = ("sources", "after_load", "max_file_bytes", "max_record_bytes", "replay_limit", "settle_seconds",
              "poller")


class LiveConfig:
    """The configuration of a running daemon, re-read when its file changes.

    Adding or fixing a source (the usual step before ``ingestd dlq replay``)
    then works without a restart: the file's mtime is checked before each
    event (one stat), so the next event after a save sees the change. A file that no longer loads is reported
    and the last good configuration stays in force.
    """

    def __init__(self, config: Config, check_every: float = 0.0, environ: Mapping[str, str] | None = None) -> None:
        import threading
        import time

        self._config = config
        self._check_every = check_every
        self._environ = environ
        self._clock = time.monotonic
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._mtime = self._stat()

    def _stat(self) -> int | None:
        try:
            return self._config.path.stat().st_mtime_ns if self._config.path else None
        except OSError:
            return None

    def get(self) -> Config:
        if self._config.path is None or self._clock() < self._next_check:
            return self._config
        with self._lock:
            self._next_check = self._clock() + self._check_every
            mtime = self._stat()
            if mtime is None or mtime == self._mtime:
                return self._config
            self._mtime = mtime
            self._reload()
        return self._config

    def _reload(self) -> None:
        import dataclasses
        import logging

        log = logging.getLogger(__name__)
        try:
            fresh = load_config(self._config.path, self._environ)
        except ConfigError as exc:
            log.error("config file changed but does not load; keeping the previous configuration",
                      extra={"step": "config", "status": "invalid", "error": str(exc)})
            return
        updates = {name: getattr(fresh, name) for name in HOT_FIELDS}
        candidate = dataclasses.replace(fresh, **{f.name: getattr(self._config, f.name)
                                                  for f in dataclasses.fields(Config) if f.name not in HOT_FIELDS})
        ignored = sorted(f.name for f in dataclasses.fields(Config)
                         if f.name not in HOT_FIELDS and getattr(fresh, f.name) != getattr(self._config, f.name))
        self._config = dataclasses.replace(candidate, **updates)
        log.info("configuration reloaded", extra={"step": "config", "status": "reloaded",
                                                  "sources": sorted(self._config.sources)})
        if ignored:
            log.warning("config changes that need a restart were not applied",
                        extra={"step": "config", "status": "restart_needed", "settings": ignored})
