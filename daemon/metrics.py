"""Prometheus metrics of one ingestd process.

Labels are source names (configured ones; anything else is ``_unknown``)
and reason codes: never file names, so the number of series stays bounded.
"""
from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_PUBLISHED = Counter("ingestd_events_published_total", "Events published to the broker",
                           ["source", "kind"], registry=REGISTRY)
RUNS = Counter("ingestd_runs_total", "Runs finished, by status", ["source", "status"], registry=REGISTRY)
ROWS = Counter("ingestd_rows_loaded_total", "Bronze rows committed, by validation status",
               ["source", "validation_status"], registry=REGISTRY)
DEAD_LETTERS = Counter("ingestd_dead_letters_total", "Events dead-lettered, by reason", ["source", "reason"],
                       registry=REGISTRY)
RUN_SECONDS = Histogram("ingestd_run_duration_seconds", "Time from the start of a run to its end", ["source"],
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
                        registry=REGISTRY)
BYTES_READ = Counter("ingestd_bytes_read_total", "Bytes of files and payloads loaded", ["source"],
                     registry=REGISTRY)
QUEUE_MESSAGES = Gauge("ingestd_queue_messages", "Messages waiting in a queue", ["queue"], registry=REGISTRY)
QUEUE_CONSUMERS = Gauge("ingestd_queue_consumers", "Consumers of a queue", ["queue"], registry=REGISTRY)
LAST_SUCCESS = Gauge("ingestd_last_success_timestamp_seconds", "Unix time of the last successful run",
                     ["source"], registry=REGISTRY)
POLL_ATTEMPTS = Counter("ingestd_poll_attempts_total", "HTTP requests made by the poller", ["source"],
                        registry=REGISTRY)
POLL_FAILURES = Counter("ingestd_poll_failures_total", "Polls that ended in api_error", ["source"],
                        registry=REGISTRY)
POLL_RATE_LIMITED = Counter("ingestd_poll_rate_limited_total", "API answers of HTTP 429 (too many requests)",
                            ["source"], registry=REGISTRY)
EXPECTED_INTERVAL = Gauge("ingestd_source_expected_interval_seconds",
                          "How often a source should load: an API source's interval, else its expect_every",
                          ["source"], registry=REGISTRY)
PARTITION_MAINTENANCE = Counter("ingestd_partition_maintenance_total",
                                "Rounds of bronze partition maintenance, by result: ok, failed, or skipped "
                                "(another process was at it)", ["result"], registry=REGISTRY)
PARTITIONS_DROPPED = Counter("ingestd_partitions_dropped_total", "Bronze partitions dropped by retention",
                             ["source"], registry=REGISTRY)
# Of the watcher's process only, labelled by the folder, so that no other process exports a 0.
LANDING_FREE = Gauge("ingestd_landing_free_bytes", "Bytes free for the daemon's user on the landing folder's "
                     "file system", ["folder"], registry=REGISTRY)
LANDING_SIZE = Gauge("ingestd_landing_size_bytes", "Size of the landing folder's file system", ["folder"],
                     registry=REGISTRY)


def watch_landing_disk(folder: Path) -> None:
    """Report the landing folder's file system, read at each scrape."""
    def free() -> float:
        stats = os.statvfs(folder)
        return stats.f_bavail * stats.f_frsize

    def size() -> float:
        stats = os.statvfs(folder)
        return stats.f_blocks * stats.f_frsize

    LANDING_FREE.labels(str(folder)).set_function(free)
    LANDING_SIZE.labels(str(folder)).set_function(size)


def set_source_gauges(sources, last_successes: dict[str, float] | None = None) -> None:
    """The expected interval of each source that has one; the last success of each source as the
    database knows it, so that a restarted consumer reports it before its own first load."""
    for source in sources:
        if source.expected_interval_seconds:
            EXPECTED_INTERVAL.labels(source.name).set(source.expected_interval_seconds)
    for name, when in (last_successes or {}).items():
        LAST_SUCCESS.labels(name).set(when)


def source_label(name: str | None, known: object) -> str:
    """A label value for a source: its name if configured, else ``_unknown``."""
    return name if name and name in known else "_unknown"  # type: ignore[operator]
