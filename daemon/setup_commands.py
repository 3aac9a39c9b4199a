"""Getting started: ``ingestd init`` writes a starting point, ``ingestd config
show`` prints the configuration in force and where each value came from."""
from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from .config import ApiSource, Config, FileSource, PollerConfig, SourceConfig, settings_of
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
