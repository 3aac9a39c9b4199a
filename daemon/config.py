"""Load and check the TOML configuration.

The file is checked against ``config.schema.json`` (shipped in the package);
an unknown key or a bad value is refused with a message that names the key.
Environment variables override the connection settings so that secrets can
live in an environment file rather than in the TOML. The ``[[sources]]``
tables, and their part of the schema (from the registries of file formats
and API providers), are daemon/config_sources.py's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema

from .config_errors import describe_config_error, name_the_source, without_echoes
from .config_sources import add_source_schema, build_source, check_partition_names
from .errors import ConfigError
from .providers import PROVIDERS
from .sources import ApiSource, FileSource, SourceConfig

__all__ = ["ApiSource", "Config", "FileSource", "LiveConfig", "PollerConfig", "SourceConfig", "build_config",
           "load_config"]

DEFAULT_CONFIG_PATH = "ingestd.toml"
ENV_CONFIG = "INGESTD_CONFIG"
ENV_OVERRIDES = {
    "INGESTD_HEALTH_PORT": ("health", "port"),
    "INGESTD_HEALTH_HOST": ("health", "host"),
    "INGESTD_DATABASE_URL": ("database", "url"),
    "INGESTD_AMQP_URL": ("broker", "url"),
    "INGESTD_LANDING_DIR": ("landing", "dir"),
}


def setting(default: Any, key: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A field of ``Config`` or ``PollerConfig`` read from the TOML key ``key``
    ("section.name"); ``convert`` turns the value as written into the field's.

    The dataclasses below are the one table of settings and defaults: the
    loader reads every key from it, ``ingestd config show`` lists it, and a
    test checks docs/configuration.md and ingestd.example.toml against it."""
    return field(default=default, metadata={"key": key, "convert": convert})


def _request_intervals(raw: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Seconds between two requests to one provider, by provider name: each
    provider's own ``min_request_interval``, under the ``raw`` overrides."""
    own = {name: float(provider.min_request_interval) for name, provider in PROVIDERS.items()}
    return tuple(sorted((own | {k: float(v) for k, v in raw.items()}).items()))


@dataclass(frozen=True)
class PollerConfig:
    timeout_seconds: float = setting(30.0, "poller.timeout_seconds", float)
    max_attempts: int = setting(5, "poller.max_attempts", int)
    max_retry_seconds: float = setting(120.0, "poller.max_retry_seconds", float)
    retry_base_seconds: float = setting(1.0, "poller.retry_base_seconds", float)
    inline_payload_bytes: int = setting(256 * 1024, "poller.inline_payload_bytes", int)
    # The default: the providers registered when this module is imported.
    min_request_interval: tuple[tuple[str, float], ...] = setting(
        _request_intervals({}), "poller.min_request_interval", _request_intervals)

    def interval_for(self, provider: str) -> float:
        """The interval in force for ``provider``: as configured, else its own."""
        found = dict(self.min_request_interval).get(provider)
        if found is None and provider in PROVIDERS:
            return float(PROVIDERS[provider].min_request_interval)
        return found or 0.0


@dataclass(frozen=True)
class Config:
    path: Path | None
    landing_dir: Path  # landing.dir, relative to the config file; default data_lake
    settle_seconds: float = setting(0.5, "landing.settle_seconds", float)
    after_load: str = setting("archive", "landing.after_load")
    polling: bool = setting(False, "landing.polling", bool)
    poll_interval_seconds: float = setting(1.0, "landing.poll_interval_seconds", float)
    rescan_seconds: float = setting(60.0, "landing.rescan_seconds", float)
    # A file, and a gzip file's expanded content: a bound even when unset, so
    # that a small gzip bomb (gzip expands up to ~1,000 times) cannot hold a
    # worker for long; any file ingestd is sized for is far smaller.
    max_file_bytes: int | None = setting(16 * 1024**3, "landing.max_file_bytes", int)
    # One record (a JSON record, a JSON Lines line, a CSV row): a consumer
    # holds it whole while it is parsed and validated, which may take up to
    # about 32 times its size in memory (nested JSON of tiny values).
    max_record_bytes: int = setting(16 * 1024 * 1024, "landing.max_record_bytes", int)
    database_url: str = setting("postgresql://localhost/ingest", "database.url")
    connect_timeout_seconds: int = setting(10, "database.connect_timeout_seconds", int)
    amqp_url: str = setting("amqp://guest:guest@localhost:5672/%2F", "broker.url")
    prefix: str = setting("", "broker.prefix")
    delivery_limit: int = setting(5, "broker.delivery_limit", int)
    prefetch: int = setting(16, "broker.prefetch", int)
    heartbeat_seconds: int = setting(30, "broker.heartbeat_seconds", int)
    workers: int = setting(1, "consumer.workers", int)
    stop_timeout_seconds: float = setting(60.0, "consumer.stop_timeout_seconds", float)
    log_level: str = setting("INFO", "log.level", lambda v: str(v).upper())
    replay_limit: int = setting(5, "dlq.replay_limit", int)
    health_host: str = setting("127.0.0.1", "health.host", str)
    health_port: int = setting(9464, "health.port", int)  # 0: no health and metrics server
    # What the alert rules compare with (deploy/monitoring/alerts.yml), per source unless it says otherwise.
    run_error_ratio: float = setting(0.01, "objectives.run_error_ratio", float)
    invalid_record_ratio: float = setting(0.01, "objectives.invalid_record_ratio", float)
    latency_p95_seconds: float = setting(2.0, "objectives.latency_p95_seconds", float)
    poller: PollerConfig = field(default_factory=PollerConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # Where each setting came from ("file", "environment (INGESTD_...)");
    # absent keys are defaults. Keys as in the file: "landing.dir",
    # "sources.<name>.<key>".
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> SourceConfig | None:
        return self.sources.get(name)

    def origin(self, key: str) -> str:
        """Where the setting ``key`` ("database.url") came from, said for a
        person: ``environment variable INGESTD_DATABASE_URL``, ``config file
        PATH`` or ``default``."""
        where = self.origins.get(key)
        if where is None:
            return "default"
        if where == "file":
            return f"config file {self.path}" if self.path else "config file"
        return where.replace("environment (", "environment variable ").rstrip(")")

    @property
    def api_sources(self) -> list[ApiSource]:
        return [s for s in self.sources.values() if isinstance(s, ApiSource)]


def settings_of(cls: type) -> list[tuple[str, dataclasses.Field]]:
    """(TOML key, field) of every setting of ``Config`` or ``PollerConfig``."""
    return [(f.metadata["key"], f) for f in dataclasses.fields(cls) if "key" in f.metadata]


def _read_settings(cls: type, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Field values of ``cls`` for the keys present in ``sections``."""
    values = {}
    for key, f in settings_of(cls):
        section, name = key.split(".")
        if name in sections.get(section, {}):
            raw = sections[section][name]
            values[f.name] = f.metadata["convert"](raw) if f.metadata["convert"] else raw
    return values


def config_schema() -> dict[str, Any]:
    """``config.schema.json`` with what the registries add: the names and
    option keys of the file formats (records/formats.py), the keys and rules
    of the API providers (daemon/providers/), a request interval a provider."""
    schema = json.loads(files("ingestd.daemon").joinpath("config.schema.json").read_text())
    add_source_schema(schema["properties"]["sources"]["items"])
    intervals = schema["properties"]["poller"]["properties"]["min_request_interval"]
    intervals["properties"] = {name: {"type": "number", "minimum": 0, "maximum": 3600} for name in sorted(PROVIDERS)}
    return schema


def check_config_document(doc: Mapping[str, Any]) -> list[str]:
    """Every problem of a parsed config document, as messages naming the key."""
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(without_echoes(validator.iter_errors(doc)), key=lambda e: list(map(str, e.absolute_path)))
    messages = [name_the_source(describe_config_error(e), e, doc) for e in errors] + _nan_problems(doc)
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
            where_from[f"sources.{raw.get('name')}.{key}"] = "file"
    overrides, problems = settings_from_environment(env)
    for (section, key), (var, value) in overrides.items():
        sections.setdefault(section, {})[key] = value
        origins[(section, key)] = var
        where_from[f"{section}.{key}"] = f"environment ({var})"
    broker = sections.get("broker", {})
    if isinstance(broker.get("url"), list):  # the nodes of a cluster, kept as one comma-separated value
        broker["url"] = ",".join(broker["url"])
    for (section, key), check in (("database", "url"), check_database_url), (("broker", "url"), check_broker_urls):
        value = sections.get(section, {}).get(key)
        problem = check(value) if isinstance(value, str) else None
        if problem:
            origin = f" (from {origins[(section, key)]})" if (section, key) in origins else ""
            problems.append(f"{section}.{key}{origin}: {problem}")
    if problems:
        raise ConfigError((f"{path}: " if path else "") + "; ".join(problems))

    landing_dir = Path(sections.get("landing", {}).get("dir", "data_lake"))
    if not landing_dir.is_absolute():
        landing_dir = base_dir / landing_dir
    sources = {raw["name"]: build_source(raw, base_dir) for raw in doc.get("sources", [])}
    check_partition_names(sources)
    # The intervals of the providers registered now, not only at import (the field's default).
    poller = PollerConfig(**{"min_request_interval": _request_intervals({})} | _read_settings(PollerConfig, sections))
    config = Config(path=path, landing_dir=landing_dir.resolve(), poller=poller, sources=sources, origins=where_from,
                    **_read_settings(Config, sections))
    defaults = {name: float(getattr(config, name)) for name in OBJECTIVES}
    own = {raw["name"]: raw.get("objectives", {}) for raw in doc.get("sources", [])}
    config.sources.update({name: dataclasses.replace(source, objectives={
        **defaults, **{k: float(v) for k, v in own[name].items()}}) for name, source in sources.items()})
    return config


def settings_from_environment(env: Mapping[str, str]) -> tuple[dict[tuple[str, str], tuple[str, Any]], list[str]]:
    """The settings that ``ENV_OVERRIDES`` set, ``{(section, key): (variable, value)}``,
    and the problems of those that are not valid: each checked like the same
    value in the file (config.schema.json), its message naming the variable
    and the key, and the value only when it cannot hold a password; also
    ``INGESTD_LOG_FORMAT``, which is no setting. An empty variable counts as
    unset."""
    from .logs import ENV_LOG_FORMAT

    schema = config_schema()["properties"]
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    problems = []
    for var, (section, key) in ENV_OVERRIDES.items():
        text = env.get(var)
        if not text:
            continue
        try:
            value = parse_port_variable(text) if (section, key) == ("health", "port") else text
        except ValueError as exc:
            problems.append(f"{section}.{key} (from {var}): {exc}")
            continue
        errors = list(jsonschema.Draft202012Validator(schema[section]["properties"][key]).iter_errors(value))
        if errors:
            said = "not valid" if key == "url" else errors[0].message
            if isinstance(value, int) and text.strip() != str(value):  # BASE+N
                said = f"{text.strip()} = {said}"
            problems.append(f"{section}.{key} (from {var}): {said}")
        else:
            found[(section, key)] = (var, value)
    if env.get(ENV_LOG_FORMAT) and env[ENV_LOG_FORMAT] not in ("text", "json"):
        problems.append(f"{ENV_LOG_FORMAT}: {env[ENV_LOG_FORMAT][:40]!r} is neither text nor json")
    return found, problems


# health.port from the environment also takes BASE+N, N from 1 to 99: the
# consumer template unit sets INGESTD_HEALTH_PORT=9470+%i (systemd has no
# arithmetic), so that instances 1 to 99 serve on 9471 to 9569, clear of the
# watcher's 9464 and the poller's 9465 (deploy/systemd/README.md).
_PORT_SUM = re.compile(r"([0-9]{1,5})\+([0-9]{1,5})")
INSTANCE_MAX = 99


def parse_port_variable(text: str) -> int:
    """The port of ``INGESTD_HEALTH_PORT``: a whole number, or BASE+N with N
    from 1 to ``INSTANCE_MAX``; ValueError saying why otherwise. The range of
    the result is the schema's to check."""
    value = text.strip()
    if re.fullmatch(r"[0-9]{1,5}", value):
        return int(value)
    found = _PORT_SUM.fullmatch(value)
    if not found:
        raise ValueError(f"{text[:40]!r} is not a port: write a whole number from 0 to 65535 (0: no health "
                         f"server), or BASE+N with N from 1 to {INSTANCE_MAX} (a systemd instance: 9470+%i)")
    base, instance = int(found.group(1)), int(found.group(2))
    if not 1 <= instance <= INSTANCE_MAX:
        raise ValueError(f"{value!r}: N of BASE+N is an instance number from 1 to {INSTANCE_MAX} (consumer "
                         f"instances 1 to {INSTANCE_MAX}: deploy/systemd/README.md)")
    return base + instance


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
    from .db import dsn_problem

    return dsn_problem(url)


def check_broker_urls(value: str) -> str | None:
    """Why ``value`` (one AMQP URL, or several separated by commas) is not usable, or None."""
    urls = [part.strip() for part in value.split(",")]
    for n, url in enumerate(urls, 1):
        problem = check_broker_url(url)
        if problem:
            return problem if len(urls) == 1 else f"node {n} of {len(urls)}: {problem}"
    return None


def check_broker_url(url: str) -> str | None:
    """Why ``url`` is not an AMQP URL, or None (never repeating the value)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

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
    import pika

    try:
        pika.URLParameters(url)
    except Exception as exc:  # noqa: BLE001 - whatever pika refuses (ValueError, TypeError, SyntaxError...)
        # pika's words up to the value, which they would repeat; the option by
        # name: the first one pika refuses on its own.
        said = re.split(r": |, but got| '", str(exc), maxsplit=1)[0][:80] or type(exc).__name__
        where = "the URL"
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            try:
                pika.URLParameters(f"{parts.scheme}://h/?{urlencode([(name, value)])}")
            except Exception:  # noqa: BLE001
                where = f"option {name[:40]!r}"
                break
        return f"{where} is refused by pika ({said}); see the URL parameters of pika's URLParameters"
    return None


OBJECTIVES = ("run_error_ratio", "invalid_record_ratio", "latency_p95_seconds")


def _nan_problems(value: Any, where: str = "") -> list[str]:
    """Settings that are NaN (TOML's ``nan``), anywhere in the file: the
    schema's bounds let NaN through (it compares false with everything), so
    an objective of nan would silence its alert and the status verdict, a
    ``max_invalid_ratio`` of nan would never refuse a file, while the value
    looks set."""
    if isinstance(value, float) and math.isnan(value):
        return [f"{where or 'the config'}: nan is not a number (write a number)"]
    if isinstance(value, Mapping):
        return [p for key, v in value.items() for p in _nan_problems(v, f"{where}.{key}" if where else str(key))]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _nan_problems(v, f"{where}[{n}]")]
    return []


# Settings a running daemon picks up when the config file changes; the rest
# (connections, landing folder, worker count) need a restart.
HOT_FIELDS = ("sources", "after_load", "max_file_bytes", "max_record_bytes", "replay_limit", "settle_seconds",
              "poller", *OBJECTIVES)


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
        # Called with each configuration reloaded (a new source's metrics series).
        self.on_reload: list[Callable[[Config], None]] = []

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
        # Fields outside the comparison (where each setting came from) are bookkeeping, not settings.
        ignored = sorted(f.name for f in dataclasses.fields(Config) if f.compare and f.name not in HOT_FIELDS
                         and getattr(fresh, f.name) != getattr(self._config, f.name))
        self._config = dataclasses.replace(candidate, **updates)
        log.info("configuration reloaded", extra={"step": "config", "status": "reloaded",
                                                  "sources": sorted(self._config.sources)})
        for hook in self.on_reload:
            hook(self._config)
        if ignored:
            log.warning("config changes that need a restart were not applied",
                        extra={"step": "config", "status": "restart_needed", "settings": ignored})
