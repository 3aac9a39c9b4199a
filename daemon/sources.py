"""A source's configuration: what every source has, then the file and the
API kinds. Built by ``config.py`` from a ``[[sources]]`` table."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceConfig:
    """What every source has: a name (its bronze table), a format, a schema."""

    name: str
    format: str = "json"
    schema_path: Path | None = None
    max_invalid_ratio: float = 0.1
    # The JSON Schema "format" keyword: "assert" (checked) or "annotate".
    format_keyword: str = "assert"
    # Where the records are in a JSON document: an API's answer, or a file
    # of format json (there also one of the source's ``options``).
    records_path: str | None = None
    # The JSON Schema document itself, read once at start.
    schema: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    kind: str = "file"
    # How often a success is expected (the freshness alert): ``expect_every``, in seconds.
    expect_every_seconds: float | None = None
    # Bronze partitioning: "month" makes bronze.<name> a table partitioned by
    # month of ``partition_by`` (daemon/partitions.py); None, one plain table.
    partition: str | None = None
    partition_by: str = "ingested_at"
    # Partitions whose every row is older than this many months are dropped.
    retention_months: int | None = None
    # The thresholds of its alerts (``[objectives]``, overridden by the
    # source's own ``objectives``), as exported in ``ingestd_objective``.
    objectives: Mapping[str, float] = field(default_factory=dict)

    @property
    def expected_interval_seconds(self) -> float | None:
        return self.expect_every_seconds


@dataclass(frozen=True)
class FileSource(SourceConfig):
    """A folder of the landing zone: ``data_lake/<name>/``, its files in
    ``format``. ``options`` are the source keys its format takes
    (records/formats.py), each one present, unset ones at their default:
    what the format's reader is given."""

    kind: str = "file"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSource(SourceConfig):
    """An API polled every ``interval_seconds``; ``options`` are the keys its
    provider reads (see ``daemon/providers/``), as written in the file."""

    kind: str = "api"
    provider: str = ""
    interval_seconds: float = 3600.0
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expected_interval_seconds(self) -> float | None:
        return self.expect_every_seconds or self.interval_seconds
