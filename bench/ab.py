"""`python -m bench.ab BEFORE_DIR AFTER_DIR [--runs N] [--only NAME]`: the same scenarios
from two checkouts of the code, alternating (before, after, before, after, …) on the
database `DATABASE_URL` already holds (`python -m bench load`), so that the machine's
drift hits both alike; then the median of each side's stack p50 per scenario, and the
change.

Each checkout runs its own `bench run` with its own venv (`.venv` in the checkout, or
this one's). Results: bench/results/ab-<time>.json (and each run's own file in its
checkout's bench/results/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _run(checkout: Path, label: str, only: str | None) -> dict:
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), "-m", "bench", "run"]
    command += ["--label", label] + (["--only", only] if only else [])
    before = set((checkout / "bench" / "results").glob("*.json"))
    subprocess.run(command, cwd=checkout, check=True, env=os.environ.copy())
    (path,) = set((checkout / "bench" / "results").glob("*.json")) - before
    return json.loads(path.read_text())


def _value(result: dict) -> float:
    # Throughput rows compare requests/s; every other row its p50.
    stack = result["stack"]
    return stack["requests_per_s"] if "gunicorn" in result["name"] else stack["p50_ms"]


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """Per scenario: each side's values over its runs, their medians, and the change
    (positive: slower, or fewer requests/s for throughput rows)."""
    names = [r["name"] for r in runs["before"][0]["results"]]
    rows = []
    for name in names:
        sides = {
            side: [_value(r) for run in side_runs for r in run["results"] if r["name"] == name]
            for side, side_runs in runs.items()
        }
        if not sides["before"] or not sides["after"]:
            continue
        before, after = statistics.median(sides["before"]), statistics.median(sides["after"])
        throughput = "gunicorn" in name
        change = (before / after - 1) if throughput else (after / before - 1)
        rows.append(
            {
                "name": name,
                "unit": "req/s" if throughput else "ms p50",
                "before": sides["before"],
                "after": sides["after"],
                "before_median": round(before, 3),
                "after_median": round(after, 3),
                "slower_pct": round(100 * change, 1),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| scenario | before (median; runs) | after (median; runs) | change |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            f"{row[side + '_median']:.1f} {row['unit']} ("
            + ", ".join(f"{value:.1f}" for value in row[side])
            + ")"
            for side in ("before", "after")
        ]
        verb = "slower" if row["slower_pct"] > 0 else "faster"
        lines.append(
            f"| {row['name']} | {cells[0]} | {cells[1]} | {abs(row['slower_pct']):.1f} % {verb} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--runs", type=int, default=2, help="runs per side (default 2)")
    parser.add_argument("--only", help="only scenarios whose name holds this (or any of a|b|c)")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for index in range(args.runs):
        for side, checkout in (("before", args.before), ("after", args.after)):
            print(f"bench.ab: {side} run {index + 1} of {args.runs} ({checkout})", flush=True)
            runs[side].append(_run(checkout.resolve(), f"ab-{side}-{index + 1}", args.only))
    rows = summarize(runs)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ab-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    gits = {side: [run["git"] for run in side_runs] for side, side_runs in runs.items()}
    path.write_text(json.dumps({"git": gits, "rows": rows}, indent=2) + "\n")
    print(table(rows))
    print(f"\nbench.ab: results in {path}", flush=True)


if __name__ == "__main__":
    main()
