"""The Parquet format: one record per row (records/parquetread.py reads it).

This declaration imports nothing of pyarrow: loading a config builds the
format registry (the watcher, the poller and every command do), and pyarrow
(about 70 MB and a tenth of a second) is for the processes that read Parquet.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .reading import Format, TextRecord


def _read(path: Any, options: Mapping[str, Any], max_record_bytes: int, exact_numbers: bool,
          valid_rows: Callable[[Any], Any] | None = None) -> Iterator[TextRecord]:
    from .parquetread import read_parquet

    return read_parquet(path, max_record_bytes, exact_numbers, valid_rows)


# The footer is at the end: the reader seeks, so it is given the path. Rows
# are judged a batch at a time where the validator can (takes_verdicts).
FORMAT = Format("parquet", (".parquet",), _read, takes_path=True, takes_verdicts=True)
