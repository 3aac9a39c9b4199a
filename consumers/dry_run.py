"""What a load would do, without loading: ``ingestd validate``.

The same steps as a consumer's load, on a file given by hand, stopping
before the database: the size limits, the format's reader, what jsonb could
not store, the schema, the invalid ratio. The verdict is the reason code a
load would get (``None``: it would load) and the first invalid records.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestd.daemon.config import Config, FileSource, SourceConfig
from ingestd.daemon.errors import PermanentError
from ingestd.records.formats import read_records
from ingestd.records.reading import check_file_size

from .bronze import LoadStats, check_invalid_ratio, encode_record
from .validation import RecordValidator

MAX_EXAMPLES = 5


@dataclass
class FileVerdict:
    """What loading ``path`` would do."""

    path: str
    reason: str | None = None  # None: it would load
    message: str = ""
    rows: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    invalid_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return "would load" if self.reason is None else f"would be dead-lettered: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "outcome": "success" if self.reason is None else "failure",
                "reason": self.reason, "message": self.message, "rows": self.rows, "rows_valid": self.rows_valid,
                "rows_invalid": self.rows_invalid, "invalid_examples": self.invalid_examples}


def judge_file(config: Config, source: SourceConfig, path: Path,
               validator: RecordValidator | None = None) -> FileVerdict:
    """Read and validate ``path`` as a file of ``source``; never raises for the data."""
    verdict = FileVerdict(str(path))
    validator = validator or RecordValidator(source.schema, source.name, source.format_keyword)
    stats = LoadStats()
    try:
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise PermanentError("unreadable_file", f"cannot stat the file: {exc.strerror}") from None
        check_file_size(path, size, config.max_file_bytes, str(path))
        options = source.options if isinstance(source, FileSource) else None
        records = read_records(path, source.format, config.max_file_bytes, options,
                               max_record_bytes=config.max_record_bytes, exact_numbers=source.schema is not None)
        for number, (value, text) in enumerate(records, 1):
            if text is None:
                encode_record(value, number)  # what jsonb could not store (U+0000)
            stats.rows_total += 1
            errors = validator.errors(value)
            if errors is None:
                stats.rows_valid += 1
            else:
                stats.rows_invalid += 1
                if len(stats.first_errors) < MAX_EXAMPLES:
                    stats.first_errors.append({"record": number, "errors": errors[:3]})
        check_invalid_ratio(stats, source.max_invalid_ratio)
    except PermanentError as exc:
        verdict.reason, verdict.message = exc.reason, exc.failure.message
    except OSError as exc:
        verdict.reason, verdict.message = "unreadable_file", f"cannot read the file: {exc.strerror or exc}"
    verdict.rows, verdict.rows_valid, verdict.rows_invalid = stats.rows_total, stats.rows_valid, stats.rows_invalid
    verdict.invalid_examples = stats.first_errors
    if verdict.reason is None and stats.rows_invalid:
        verdict.message = (f"{stats.rows_invalid} invalid record(s) would load with validation_status = 'invalid' "
                           f"(ratio {stats.rows_invalid / stats.rows_total:.3f} <= {source.max_invalid_ratio})")
    return verdict
