"""The ``[[sources]]`` tables of the configuration: their part of the config
schema, built from the two registries (file formats: records/formats.py;
API providers: daemon/providers/), and each table read into a
``FileSource`` or an ``ApiSource``, its schema file read and checked.

``config.py`` checks the whole document against the schema first, so what
is read here has its keys and types right; what the schema cannot say
(a schema file's contents, retention against partitioning, partition
names) is refused here, naming the source and the key.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from ingestd.records.formats import FORMATS

from .errors import ConfigError
from .providers import PROVIDERS, source_schema_parts
from .sources import ApiSource, FileSource, SourceConfig

# Keys of every source, whatever its kind, format or provider.
_COMMON_KEYS = {"name", "kind", "format", "schema", "max_invalid_ratio", "format_keyword", "records_path",
                "expect_every", "partition", "partition_by", "retention", "objectives"}


def add_source_schema(source: dict[str, Any]) -> None:
    """Complete the schema of a ``[[sources]]`` table (``source``, from
    config.schema.json): the formats' names and option keys, and a rule per
    format refusing the options of the others; the providers' names, keys
    and rules; and no format option on an API source."""
    properties, rules = source_schema_parts()
    formats, format_rules = _format_schema_parts()
    base = set(source["properties"])
    for key, fragment in formats.items():
        # records_path is the one key of every source that a format (json) takes too.
        shared = key == "records_path" and source["properties"][key] == fragment
        if (key in base and not shared) or properties.get(key, fragment) != fragment:
            whose = "every source" if key in base else f"provider {_providers_of(key)}"
            raise ConfigError(f"file format {_owners(key)} (records/formats.py): its option {key!r} is a key of "
                              f"{whose}; the format must name its option otherwise")
    source["properties"].update(properties)
    source["properties"].update(formats)
    source["properties"]["provider"] = {"enum": sorted(PROVIDERS)}
    source["properties"]["format"] = {"enum": sorted(FORMATS)}
    only_files = sorted(set(formats) - base - set(properties))  # records_path is an API source's key too
    only_api = sorted({*properties, "provider", "interval"} - set(formats))
    # The providers' rules hold for API sources only: a file source is told that a provider is no key of its.
    kinds_rule = {"if": {"properties": {"kind": {"const": "api"}}, "required": ["kind"]},
                  "then": {"allOf": rules + [_refused(key, f"it belongs to file sources of format {_owners(key)}")
                                             for key in only_files]},
                  "else": {"allOf": [_refused(key, 'API sources (kind = "api") take it, file sources do not')
                                     for key in only_api]}}
    source["allOf"] = source.get("allOf", []) + format_rules + [kinds_rule]


def _format_schema_parts() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The option keys of every format (JSON Schema properties, one schema
    a key: records/formats.py refuses two), and one rule per format: no
    option of another format."""
    properties: dict[str, Any] = {}
    for fmt in FORMATS.values():
        properties.update(fmt.options)
    rules = []
    for name, fmt in sorted(FORMATS.items()):
        takes = ", ".join(sorted(fmt.options)) or "no option"
        foreign = sorted(set(properties) - set(fmt.options))
        if foreign:
            rules.append({"if": {"properties": {"format": {"const": name}}, "required": ["format"]},
                          "then": {"allOf": [_refused(key, f"format {name!r} takes {takes}; {key!r} is an option "
                                                           f"of format {_owners(key)}") for key in foreign]}})
    return properties, rules


def _owners(key: str) -> str:
    return " and ".join(repr(name) for name, fmt in sorted(FORMATS.items()) if key in fmt.options)


def _providers_of(key: str) -> str:
    return " and ".join(repr(name) for name, provider in sorted(PROVIDERS.items()) if key in provider.options)


def _refused(key: str, why: str) -> dict[str, Any]:
    """A rule refusing ``key``; config_errors.describe_config_error says ``why``."""
    return {"not": {"required": [key]}, "description": why}


def build_source(raw: Mapping[str, Any], base_dir: Path) -> SourceConfig:
    """A ``[[sources]]`` table (checked against the schema) as a source."""
    name = raw["name"]
    schema_path, schema_doc = (_read_schema(name, raw["schema"], base_dir, raw.get("format_keyword", "assert"))
                               if raw.get("schema") else (None, None))
    common = {"name": name, "schema_path": schema_path, "schema": schema_doc,
              "max_invalid_ratio": float(raw.get("max_invalid_ratio", 0.1)),
              "format_keyword": raw.get("format_keyword", "assert"),
              "expect_every_seconds": _duration(name, "expect_every", raw["expect_every"])
              if "expect_every" in raw else None,
              **_partitioning(name, raw)}
    if raw.get("kind", "file") == "file":
        fmt = FORMATS[raw["format"]]
        options = fmt.settings({key: _whole(fmt.options[key], raw[key]) for key in fmt.options if key in raw})
        return FileSource(format=fmt.name, records_path=options.get("records_path"), options=options, **common)
    provider = PROVIDERS[raw["provider"]]
    options = {k: tuple(v) if isinstance(v, list) else _whole(provider.options.get(k, {}), v)
               for k, v in raw.items() if k not in _COMMON_KEYS | {"provider", "interval"}}
    return ApiSource(records_path=raw.get("records_path", provider.default_records_path), provider=provider.name,
                     interval_seconds=_duration(name, "interval", raw.get("interval", 3600)), options=options,
                     **common)


def _whole(fragment: Mapping[str, Any], value: Any) -> Any:
    """``value`` as its key's reader takes it: a whole number written as a
    float (TOML's ``2.0``, which JSON Schema counts as an integer) as an int."""
    if fragment.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A duration (interval, expect_every) from a second to ten years: shorter, a
# poll would follow a poll with no pause; far longer, no clock reaches it.
DURATION_MAX_SECONDS = 3650 * 86400.0


def _duration(name: str, key: str, value: float | int | str) -> float:
    seconds = parse_duration(value)
    if not 1 <= seconds <= DURATION_MAX_SECONDS:  # inf too; nan is refused with every setting
        said = repr(value[:40]) if isinstance(value, str) else f"{value:g}"
        raise ConfigError(f"sources[{name}].{key}: {said} is {'under' if seconds < 1 else 'over'} "
                          "the range of a duration: from 1 second (1s) to 10 years (3650d)")
    return seconds


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number or ``90s``, ``15m``, ``1h``, ``1d``."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(value[:-1]) * units[value[-1]]


def _read_schema(name: str, raw_path: str, base_dir: Path, format_mode: str = "assert") -> tuple[Path, dict[str, Any]]:
    """A source's JSON Schema, checked: readable JSON, a valid schema of its
    draft, ECMA-262 patterns, and under ``format_mode`` "assert" only formats
    that are really checked."""
    schema_path = Path(raw_path)
    if not schema_path.is_absolute():
        schema_path = (base_dir / schema_path).resolve()
    try:
        schema_doc = json.loads(schema_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sources[{name}].schema: file {schema_path} not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"sources[{name}].schema: {schema_path} is not readable JSON: {exc}") from None
    from ingestd.records.dialect import check_patterns, format_checker, unassertable_formats, validator_class

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
    problems = unassertable_formats(schema_doc, format_mode)
    if problems:
        raise ConfigError(f"sources[{name}].schema: {schema_path}: " + "; ".join(problems))
    return schema_path, schema_doc


_RETENTION = re.compile(r"^\s*([1-9][0-9]{0,3})\s*(months?|years?)\s*$")
# A partition is named <source>_pYYYY_MM (daemon/partitions.py), within
# PostgreSQL's 63 bytes.
PARTITIONED_NAME_MAX = 54


# Retention drops the months before now minus the retention: a date that
# Python's datetime (years 1 to 9999) and the month arithmetic must hold for
# as long as the daemon runs. A century keeps that far from the edge and is
# more than any data needs; to keep every month, leave retention out.
RETENTION_MAX_MONTHS = 1200


def parse_retention(value: str) -> int:
    """Months from ``24 months`` or ``2 years`` (at most ``RETENTION_MAX_MONTHS``); ValueError otherwise."""
    match = _RETENTION.match(value)
    if not match:
        raise ValueError(f"{value!r}: write a number of months or years, such as \"24 months\" or \"2 years\"")
    months = int(match.group(1)) * (12 if match.group(2).startswith("year") else 1)
    if months > RETENTION_MAX_MONTHS:
        raise ValueError(f"{value!r}: at most 100 years ({RETENTION_MAX_MONTHS} months); to keep every month, "
                         "leave retention out")
    return months


def _partitioning(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A source's partition settings, checked against each other."""
    partition = raw.get("partition", "none")
    if partition == "none":
        for key in ("partition_by", "retention"):
            if key in raw:
                raise ConfigError(f"sources[{name}].{key}: needs partition = \"month\" (retention drops whole "
                                  "months, which only a partitioned table has)")
        return {}
    if len(name) > PARTITIONED_NAME_MAX:
        raise ConfigError(f"sources[{name}].partition: a partitioned source's name has at most "
                          f"{PARTITIONED_NAME_MAX} characters (its partitions are named <name>_pYYYY_MM)")
    months = None
    if "retention" in raw:
        try:
            months = parse_retention(str(raw["retention"]))
        except ValueError as exc:
            raise ConfigError(f"sources[{name}].retention: {exc}") from None
    return {"partition": partition, "partition_by": raw.get("partition_by", "ingested_at"),
            "retention_months": months}


def check_partition_names(sources: Mapping[str, SourceConfig]) -> None:
    """No source may be named like a partition of a partitioned one."""
    for name in sources:
        found = re.match(r"^(.+)_p[0-9]{4}_[0-9]{2}$", name)
        if found and found.group(1) in sources and sources[found.group(1)].partition:
            raise ConfigError(f"sources[{name}]: this name is the name of a partition of source "
                              f"{found.group(1)!r} (partition = \"month\"); choose another")
