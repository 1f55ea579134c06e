"""The op configuration whose fused grid graph rendered 1024x1024 points fastest, from cuda_ops_check.py
results (one file per --tile), among those whose colours passed; prints nothing where none has that row.

    python benchmarks/cuda_ops_best.py results/cuda-ops-check-paper-*-h200.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def best_tile(reports: list[dict]) -> str | None:
    """The `tile` of the report with the lowest fused_ms on the one-latent 1024x1024 grid row fused as the
    renderer fuses (ops "fused"; files without `ops` have only those rows), among rows whose colours are
    within bounds."""
    timed = [(row["fused_ms"], report["tile"]) for report in reports for row in report.get("render", [])
             if row["graph"] == "grid" and row["points"] == 1024 * 1024 and row["latents"] == 1 and row["ok"]
             and row.get("ops", "fused") == "fused"]
    return min(timed)[1] if timed else None


def main() -> None:
    reports = []
    for name in sys.argv[1:]:
        try:
            reports.append(json.loads(Path(name).read_text()))
        except (OSError, ValueError):  # a step that failed left no file, or half of one
            continue
    print(best_tile(reports) or "")


if __name__ == "__main__":
    main()
