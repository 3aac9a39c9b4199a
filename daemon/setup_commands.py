"""Getting started: ``ingestd init`` writes a starting point, ``ingestd config
show`` prints the configuration in force and where each value came from."""
from __future__ import annotations

import dataclasses
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from .config import Config, SourceConfig
from .logs import redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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


_SECTION_OF = {
    "landing_dir": "landing.dir", "settle_seconds": "landing.settle_seconds", "after_load": "landing.after_load",
    "polling": "landing.polling", "poll_interval_seconds": "landing.poll_interval_seconds",
    "rescan_seconds": "landing.rescan_seconds", "max_file_bytes": "landing.max_file_bytes",
    "max_record_bytes": "landing.max_record_bytes", "database_url": "database.url",
    "connect_timeout_seconds": "database.connect_timeout_seconds", "amqp_url": "broker.url",
    "prefix": "broker.prefix", "delivery_limit": "broker.delivery_limit", "prefetch": "broker.prefetch",
    "heartbeat_seconds": "broker.heartbeat_seconds", "workers": "consumer.workers",
    "stop_timeout_seconds": "consumer.stop_timeout_seconds", "log_level": "log.level",
    "replay_limit": "dlq.replay_limit", "health_host": "health.host", "health_port": "health.port",
}


def _flat_settings(config: Config):
    for field in dataclasses.fields(Config):
        key = _SECTION_OF.get(field.name)
        if key:
            yield key, getattr(config, field.name)
    for field in dataclasses.fields(type(config.poller)):
        yield f"poller.{field.name}", getattr(config.poller, field.name)
    for source in config.sources.values():
        for field in dataclasses.fields(SourceConfig):
            if field.name in ("name", "schema"):
                continue
            value = getattr(source, field.name)
            if value in (None, (), "") and field.name != "format":
                continue
            yield f"sources.{source.name}.{field.name}", value

