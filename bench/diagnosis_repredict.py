"""The what-if comparison again, over job records a diagnosis benchmark kept
(``diagnosis_bench.py`` / ``diagnosis_rag.py --keep-records DIR``): every
counterfactual predicted by the model as it is now and set against the same runs.

A benchmark run measures the box as much as the model: two runs of one pipeline on
this shared 2-core machine differ by 5-15% in throughput and more in p99. Predicting
kept records again compares two versions of the model on the same measurements, so
that what changed is the model alone.

    python bench/diagnosis_repredict.py runs/            # one summary per file
    python bench/diagnosis_repredict.py runs/ --rows     # and each counterfactual
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diagnosis_compare import PIPELINE_KEYS, SUMMARY_KEYS, errors, rows_of


def repredict(path: Path) -> list[Any]:
    """The comparison rows of one kept file (``compare(..., keep=)``)."""
    return rows_of(json.loads(path.read_text()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("records", type=Path, help="a folder of kept records (*.json)")
    p.add_argument("--rows", action="store_true", help="print every counterfactual")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args()
    files = sorted(args.records.glob("*.json"))
    if not files:
        p.error(f"no kept records (*.json) in {args.records}")
    rows = [row for f in files for row in repredict(f)]
    if args.rows:
        for r in rows:
            print(
                f"{r['runtime']:6} {r['case']:44} throughput "
                f"{r['error_throughput']:+.1%} pooled p99 "
                f"{r['error_p99_ms_pooled']:+.1%} (effect "
                f"{r['effect_error_p99_ms_pooled']:+.1%}; beside "
                f"{r['error_p99_ms_pooled_beside']:+.1%})"
            )
    summary = {key: errors(rows, key) for key in SUMMARY_KEYS}
    per = {
        kind: {
            key: errors([r for r in rows if r["runtime"] == kind], key)
            for key in PIPELINE_KEYS
        }
        for kind in sorted({r["runtime"] for r in rows})
    }
    for key, got in summary.items():
        print(f"{key:22}", "  ".join(f"{k} {v:.1%}" for k, v in got.items()))
    for kind, got in per.items():
        medians = "  ".join(f"{k} {v['error_median']:.1%}" for k, v in got.items() if v)
        print(f"{kind:8} {medians}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"summary": summary, "per_pipeline": per, "whatif": rows},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
