"""Prometheus metrics of one ingestd process, and of its consumer processes.

Labels are source names (configured ones; anything else is ``_unknown``)
and reason codes: never file names, so the number of series stays bounded.

The consumer processes of ``ingestd run`` (daemon/children.py) write their
metrics to files (prometheus_client's multiprocess mode, switched on by
``PROMETHEUS_MULTIPROC_DIR`` in their environment); ``collect_with_children``
adds them to the parent's own. Each gauge says how the values of several
processes combine (``multiprocess_mode``): the largest (a timestamp, a
threshold), or the most recent (a sample of a queue); without a mode a gauge
would gain a ``pid`` label.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

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
QUEUE_MESSAGES = Gauge("ingestd_queue_messages", "Messages waiting in a queue", ["queue"], registry=REGISTRY,
                       multiprocess_mode="mostrecent")
QUEUE_CONSUMERS = Gauge("ingestd_queue_consumers", "Consumers of a queue", ["queue"], registry=REGISTRY,
                        multiprocess_mode="mostrecent")
LAST_SUCCESS = Gauge("ingestd_last_success_timestamp_seconds", "Unix time of the last successful run",
                     ["source"], registry=REGISTRY, multiprocess_mode="max")
POLL_ATTEMPTS = Counter("ingestd_poll_attempts_total", "HTTP requests made by the poller", ["source"],
                        registry=REGISTRY)
POLL_FAILURES = Counter("ingestd_poll_failures_total", "Polls that ended in api_error", ["source"],
                        registry=REGISTRY)
POLL_RATE_LIMITED = Counter("ingestd_poll_rate_limited_total", "API answers of HTTP 429 (too many requests)",
                            ["source"], registry=REGISTRY)
EXPECTED_INTERVAL = Gauge("ingestd_source_expected_interval_seconds",
                          "How often a source should load: an API source's interval, else its expect_every",
                          ["source"], registry=REGISTRY, multiprocess_mode="max")
PARTITION_MAINTENANCE = Counter("ingestd_partition_maintenance_total",
                                "Rounds of bronze partition maintenance, by result: ok, failed, or skipped "
                                "(another process was at it)", ["result"], registry=REGISTRY)
PARTITIONS_DROPPED = Counter("ingestd_partitions_dropped_total", "Bronze partitions dropped by retention",
                             ["source"], registry=REGISTRY)
RECORDS_CHECKED = Counter("ingestd_records_checked_total",
                          "Records validated in runs that ended (loaded, or refused for too many invalid ones), "
                          "by validity", ["source", "validity"], registry=REGISTRY)
# histogram_quantile never answers more than the largest finite bucket: it lies above the
# largest latency objective the config takes (86400 s), or that alert could never fire.
LATENCY = Histogram("ingestd_end_to_end_latency_seconds",
                    "From an event's creation (the file settled in the landing folder, the API answered) to "
                    "its rows committed, for successful loads", ["source"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400,
                             2 * 86400), registry=REGISTRY)
UNDECLARED_NEW = Counter("ingestd_undeclared_fields_new_total",
                         "Fields the source's schema does not declare, held by its records for the first time",
                         ["source"], registry=REGISTRY)
DEAD_LETTERS_WAITING = Gauge("ingestd_dead_letters_waiting",
                             "Dead letters neither replayed nor discarded, from the ops tables", ["source", "reason"],
                             registry=REGISTRY, multiprocess_mode="mostrecent")
OBJECTIVE = Gauge("ingestd_objective", "The thresholds the alert rules compare with, from the configuration: "
                  "run_error_ratio, invalid_record_ratio, latency_p95_seconds", ["source", "objective"],
                  registry=REGISTRY, multiprocess_mode="mostrecent")
RUN_STATUSES = ("success", "failure", "skipped")
_waiting_pairs: set[tuple[str, str]] = set()
# Of the watcher's process only, labelled by the folder, so that no other process exports a 0.
LANDING_FREE = Gauge("ingestd_landing_free_bytes", "Bytes free for the daemon's user on the landing folder's "
                     "file system", ["folder"], registry=REGISTRY, multiprocess_mode="max")
LANDING_SIZE = Gauge("ingestd_landing_size_bytes", "Size of the landing folder's file system", ["folder"],
                     registry=REGISTRY, multiprocess_mode="max")


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


def start_source_series(sources: Iterable, reasons: Iterable[str]) -> None:
    """Every series a source's alerts read, at 0 (and its objectives), before anything happens:
    a counter whose series appears already at 1 shows Prometheus no increase, so the first failure
    after a start would go unseen."""
    reasons = list(reasons)
    for source in sources:
        name = source.name
        for status in RUN_STATUSES:
            RUNS.labels(name, status)
        for reason in reasons:
            DEAD_LETTERS.labels(name, reason)
            DEAD_LETTERS_WAITING.labels(name, reason)
        for validity in ("valid", "invalid"):
            RECORDS_CHECKED.labels(name, validity)
            ROWS.labels(name, validity)
        LATENCY.labels(name)
        UNDECLARED_NEW.labels(name)
        for objective, value in source.objectives.items():
            OBJECTIVE.labels(name, objective).set(value)


def set_dead_letters_waiting(counts: Mapping[tuple[str, str], int]) -> None:
    """The waiting dead letters per (source, reason); pairs no longer waiting go to 0."""
    for labels in _waiting_pairs - set(counts):
        DEAD_LETTERS_WAITING.labels(*labels).set(0)
    for (source, reason), count in counts.items():
        DEAD_LETTERS_WAITING.labels(source, reason).set(count)
        _waiting_pairs.add((source, reason))


def seconds_since(created_at: str | None) -> float | None:
    """Seconds from an event's ``created_at`` to now; None when it does not
    read as an instant with its offset, or lies in the future (another
    host's clock)."""
    if not created_at:
        return None
    try:
        then = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if then.tzinfo is None:
        return None
    elapsed = datetime.now(then.tzinfo).timestamp() - then.timestamp()
    return elapsed if elapsed >= 0 else None


def source_label(name: str | None, known: object) -> str:
    """A label value for a source: its name if configured, else ``_unknown``."""
    return name if name and name in known else "_unknown"  # type: ignore[operator]


class _WithChildren:
    """This process's metrics and those its consumer processes wrote to ``directory``, one
    family each: counters and histograms add up (those of exited processes too), gauges give
    their largest value."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        families = {family.name: family for family in REGISTRY.collect()}
        for theirs in MultiProcessCollector(None, path=str(self.directory)).collect():
            ours = families.get(theirs.name)
            families[theirs.name] = theirs if ours is None else _merged(ours, theirs)
        return list(families.values())


def _merged(ours: Metric, theirs: Metric) -> Metric:
    add = ours.type != "gauge"
    samples: dict[tuple, Sample] = {}
    for sample in (*ours.samples, *theirs.samples):
        key = (sample.name, tuple(sorted(sample.labels.items())))
        before = samples.get(key)
        if before is None:
            samples[key] = sample
        else:
            value = before.value + sample.value if add else max(before.value, sample.value)
            samples[key] = before._replace(value=value)
    family = Metric(ours.name, ours.documentation, ours.type, ours.unit)
    family.samples = list(samples.values())
    return family


def registry_with_children(directory: Path | None) -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, with the metrics of its consumer
    processes when they write them to ``directory``."""
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WithChildren(directory))
    return registry
