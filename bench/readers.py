"""The readers alone, without a daemon or a server: microseconds a row of
each format's reader, with values for validation (a source with a schema)
and without (text only), on Fitbit-shaped rows.

    python -m bench.readers                 # 200,000 rows, best of 3
    python -m bench.readers --rows 50000 --profile parquet

Prints figures; asserts nothing. ``--profile FORMAT`` adds where the time
goes (cProfile, the functions that take most of it).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestd.records.formats import read_records

from .__main__ import csv_to_jsonl, generate_csv


def _files(folder: Path, rows: int) -> dict[str, Path]:
    csv_path = folder / "rows.csv"
    generate_csv(csv_path, rows=rows)
    jsonl_path = folder / "rows.jsonl"
    csv_to_jsonl(csv_path, jsonl_path)
    parquet_path = folder / "rows.parquet"
    pq.write_table(pacsv.read_csv(csv_path), parquet_path)
    return {"csv": csv_path, "jsonl": jsonl_path, "parquet": parquet_path}


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
    parser.add_argument("--profile", choices=["csv", "jsonl", "parquet"], help="profile this format's reader")
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
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            sum(1 for _ in read_records(files[args.profile], args.profile, None))
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
