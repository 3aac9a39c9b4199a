"""Pictures of a bench run: PNG files next to its text summary.

Needs matplotlib (``pip install -e ".[bench]"``); without it the figures
are still printed and saved as JSON, and the plots are skipped with a note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(figures: dict[str, Any], folder: Path) -> list[Path]:
    """One PNG per kind of figure that the run measured; the paths written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no plots: matplotlib is not installed; pip install -e \".[bench]\")", flush=True)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    machine = figures.get("machine", "")

    def save(fig, name: str, title: str) -> None:
        fig.suptitle(title, fontsize=11)
        if machine:
            fig.text(0.01, 0.01, machine, fontsize=6, color="gray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # Plotted: plain bronze tables (--partition month figures are in the summary)
    throughput = [f for f in figures.get("throughput") or [] if f.get("partition", "none") == "none"]
    if throughput:
        formats = sorted({t["format"] for t in throughput}, key=["csv", "jsonl", "parquet"].index)
        workers = sorted({t["workers"] for t in throughput})
        fig, (rates, ratios) = plt.subplots(1, 2, figsize=(10, 4))
        width = 0.8 / len(workers)
        for k, count in enumerate(workers):
            rows = {t["format"]: t for t in throughput if t["workers"] == count}
            xs = [i + k * width for i in range(len(formats))]
            rates.bar(xs, [rows[f]["rows_per_s"] if f in rows else 0 for f in formats], width,
                      label=f"{count} worker(s)")
            ratios.bar(xs, [rows[f]["ratio"] if f in rows else 0 for f in formats], width, label=f"{count} worker(s)")
        copy_rates = [t["copy_rows_per_s"] for t in throughput]
        rates.axhline(sum(copy_rates) / len(copy_rates), color="gray", linestyle="--", label="COPY (mean)")
        ratios.axhline(0.95, color="gray", linestyle=":", label="goal 0.95")
        for axis, label in ((rates, "rows/s"), (ratios, "ratio to COPY")):
            axis.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(formats))], formats)
            axis.set_ylabel(label)
            axis.legend(fontsize=8)
        save(fig, "throughput.png", "Throughput by format and workers (median of rounds)")

    bursts = [f for f in figures.get("burst") or [] if f.get("partition", "none") == "none"]
    if bursts:
        fig, axis = plt.subplots(figsize=(6, 4))
        names = {"run": "ingestd run (one process)", "roles": "watch + consume processes"}
        for shape in ("run", "roles"):
            line = sorted((b for b in bursts if b.get("shape", "run") == shape), key=lambda b: b["files"])
            if line:
                axis.plot([b["files"] for b in line], [b["files_per_s"] for b in line], marker="o",
                          label=names[shape])
        axis.axhline(1000, color="gray", linestyle=":", label="goal 1,000 files/s")
        axis.set_xscale("log")
        axis.set_xlabel("small files dropped at once")
        axis.set_ylabel("files/s, drop to committed")
        axis.legend(fontsize=8)
        save(fig, "burst.png", f"Bursts of small files ({bursts[0]['workers']} workers)")

    latency = (figures.get("latency") or {}).get("seconds") or []
    if latency:
        fig, axis = plt.subplots(figsize=(6, 4))
        ordered = sorted(latency)
        axis.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], drawstyle="steps-post")
        axis.set_xscale("log")
        axis.set_xlabel("seconds from drop to commit")
        axis.set_ylabel("fraction of files")
        axis.grid(True, which="both", alpha=0.3)
        save(fig, "latency.png", f"Latency of {len(ordered)} small files dropped one at a time (CDF)")

    growth = figures.get("growth") or []
    if growth:
        fig, axis = plt.subplots(figsize=(6, 4))
        axis.plot([g["bronze_rows"] / 1e6 for g in growth], [g["rows_per_s"] for g in growth], marker="o",
                  label="ingestd (CSV, 1 worker)")
        axis.plot([g["bronze_rows"] / 1e6 for g in growth], [g["copy_rows_per_s"] for g in growth], marker="s",
                  linestyle="--", label="COPY into an empty table")
        axis.set_xlabel("rows already in the bronze table (millions)")
        axis.set_ylabel("rows/s")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
        save(fig, "growth.png", "Throughput as the bronze table grows")
    return written
