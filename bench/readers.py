"""The readers alone, without a daemon or a server: microseconds a row of
each format's reader, with values for validation (a source with a schema)
and without (text only), then of a worker's whole Python path (read,
validate against schemas/daily_activity.json, encode the binary COPY
stream: everything a row costs short of the server), on Fitbit-shaped
rows, values as text in every format (as ``python -m bench`` loads them).

    python -m bench.readers                 # 200,000 rows, best of 3
    python -m bench.readers --rows 50000 --profile parquet

Prints figures; asserts nothing. ``--profile FORMAT`` adds where the
worker path's time goes (cProfile, the functions that take most of it).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from ingestd.consumers.bronze import CHUNK_BYTES, CopyStream, LoadStats
from ingestd.consumers.validation import RecordValidator
from ingestd.records.formats import read_records

from .__main__ import REPO, convert, generate_csv


def _files(folder: Path, rows: int) -> dict[str, Path]:
    csv_path = folder / "rows.csv"
    generate_csv(csv_path, rows=rows)
    files = {"csv": csv_path}
    for fmt in ("jsonl", "parquet"):
        files[fmt] = folder / f"rows.{fmt}"
        convert(csv_path, fmt, files[fmt])
    return files


def _worker_pass(path: Path, fmt: str, validator: RecordValidator) -> int:
    """One file through a worker's Python: read, validate, COPY bytes."""
    records = read_records(path, fmt, None, valid_rows=validator.valid_rows)
    stats = LoadStats()
    stream = CopyStream(((n, value, text) for n, (value, text) in enumerate(records, 1)), validator, "bench",
                        {"file_path": path.name}, stats)
    while stream.read(CHUNK_BYTES):
        pass
    return stats.rows_total


def _worker_row(path: Path, fmt: str, validator: RecordValidator, repeat: int) -> float:
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = _worker_pass(path, fmt, validator)
        best = min(best, time.perf_counter() - started)
    return best / max(count, 1) * 1e6


def _per_row(path: Path, fmt: str, values: bool, repeat: int) -> tuple[int, float]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = sum(1 for _ in read_records(path, fmt, None, exact_numbers=values))
        best = min(best, time.perf_counter() - started)
    return count, best / max(count, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per file (default 200,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader, the best counts (default 3)")
    parser.add_argument("--profile", choices=["csv", "jsonl", "parquet"],
                        help="profile this format's worker path")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ingestd-bench-readers-"))
    try:
        files = _files(folder, args.rows)
        print(f"{args.rows:,} Fitbit-shaped rows, best of {args.repeat}")
        for fmt, path in files.items():
            for values in (False, True):
                count, micros = _per_row(path, fmt, values, args.repeat)
                label = "values + text" if values else "text only"
                print(f"  {fmt:<8} {label:<14} {micros:6.2f} us a row ({count:,} rows)")
        # One validator a format, kept across files as a worker keeps it (its caches warm).
        schema = json.loads((REPO / "schemas" / "daily_activity.json").read_text())
        validators = {fmt: RecordValidator(schema, "bench") for fmt in files}
        for fmt, path in files.items():
            micros = _worker_row(path, fmt, validators[fmt], args.repeat)
            print(f"  {fmt:<8} {'worker path':<14} {micros:6.2f} us a row (read, validate, COPY bytes)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            _worker_pass(files[args.profile], args.profile, validators[args.profile])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
