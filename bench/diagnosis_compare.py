"""What-if predictions set against actually run counterfactuals: the comparison
shared by ``diagnosis_bench.py`` (COMPUTE) and ``diagnosis_rag.py`` (RAG, MIXED).

A prediction comes from ``PROFILED_RUNS`` recorded baseline runs pooled
(``pool_runs``); each counterfactual is then run k times, each time right after a
baseline run, and compared both absolutely and as an effect (its ratio to the
baseline run beside it), with its p99 taken per run (median) and over the traces of
all k runs pooled. Each counterfactual is predicted a second time from the k
baseline runs interleaved with its own runs (``_beside``): the profile then sees the
box as the runs it is checked against do, which takes the box's drift out of the
absolute error (this 2-core box is shared, and a baseline rerun lands a median 7-12%
from the profiled one in throughput).

The runs come first and the predictions after (``rows_of``), so that the records a
benchmark keeps (``--keep-records DIR``) can be predicted again by a changed model
(``diagnosis_repredict.py``): two models then meet the same runs, and their
difference is not the box's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from common import spread

#: recorded baseline runs a prediction is made from (``pool_runs``)
PROFILED_RUNS = 5


def measured(record: dict[str, Any]) -> dict[str, float]:
    from sage_core.diagnosis import job_model

    return measured_model(job_model(record))


def end_to_end_s(m: Any) -> list[float]:
    """Emission-to-sink seconds of a run's sampled traces, sorted."""
    return sorted(t["end_to_end_s"] for t in m.traces if t.get("outcome") == "sink")


def measured_model(m: Any) -> dict[str, float]:
    """Throughput and trace p99 of a run's diagnosis model."""
    from sage_core.diagnosis.sim import percentile

    e2e = end_to_end_s(m)
    return {
        "throughput": m.measured_throughput(),
        "p99_ms": 1e3 * percentile(e2e, 0.99),
        "traces": len(e2e),
    }


def pooled_p99_ms(models: list[Any]) -> float:
    """The p99 over the traces of several runs together: what a user watching the
    pipeline for that long sees, and far steadier than one short run's p99."""
    from sage_core.diagnosis.sim import percentile

    return 1e3 * percentile(sorted(x for m in models for x in end_to_end_s(m)), 0.99)


def compare(
    cases: list[tuple[str, dict[str, Any], Any]],
    run_one: Any,
    k: int,
    runtime: str,
    cores: int | None,
    calibration: tuple[Any, ...] = (),
    keep: Path | None = None,
) -> list[Any]:
    """Each counterfactual of ``cases`` (the first is the baseline) predicted from
    ``PROFILED_RUNS`` pooled baseline records, then run k times by ``run_one(cfg)``
    (a job record), each time right after a baseline run (the peer: the box is
    shared, so effects are compared as ratios to the baseline measured next to
    them). ``cores``: the CPUs the workers share (``predict``'s ``host_cores``).
    ``calibration``: configs run once each before the profiled runs, whose service
    samples fill the batch sizes the baseline did not run (``extend_service``; none
    may be one of the counterfactuals). ``keep``: a folder the records are written
    to (``<runtime>.json``), for ``diagnosis_repredict.py`` to predict them again
    with another model."""
    # calibration first: an engine's speed can shift once it has served other call
    # sizes (vLLM CPU answered calls of 8 in 85-97 ms before the calibration runs
    # and 103-130 ms after them), and the profiled runs must see the engine as the
    # counterfactuals will
    base_cfg = cases[0][2]
    kept: dict[str, Any] = {
        "runtime": runtime,
        "cores": cores,
        "calibration": [run_one(c) for c in calibration],
    }
    run_one(base_cfg)  # discarded: the profiled baseline runs are warm
    kept["profiled"] = [run_one(base_cfg) for _ in range(PROFILED_RUNS)]
    kept["cases"] = []
    for label, kw, cfg in cases[1:]:
        pairs = [(run_one(base_cfg), run_one(cfg)) for _ in range(k)]
        kept["cases"].append({"label": label, "predict": _plain(kw), "runs": pairs})
        print(f"{runtime:6} {label:28} ran", flush=True)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"{runtime}.json").write_text(json.dumps(kept, default=str))
    return rows_of(kept)


def add_keep_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--keep-records DIR``: where ``compare`` keeps the runs' job records."""
    parser.add_argument(
        "--keep-records",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the what-if runs' job records there (diagnosis_repredict.py)",
    )


def _plain(kw: dict[str, Any]) -> dict[str, Any]:
    """``predict`` keywords as JSON (changes as their ``OP.knob=N`` text)."""
    return {**kw, "changes": [str(c) for c in kw.get("changes", ())]}


def rows_of(kept: dict[str, Any]) -> list[Any]:
    """The comparison rows of recorded runs (``compare``'s ``kept``): each
    counterfactual predicted from the pooled profiled runs and from the baselines
    beside it, set against its runs."""
    from sage_core.diagnosis import extend_service, job_model, pool_runs
    from sage_core.diagnosis.whatif import Change, predict

    runtime, cores = kept["runtime"], kept["cores"]
    calibrated = [job_model(r) for r in kept["calibration"]]
    models = [job_model(r) for r in kept["profiled"]]
    model = extend_service(pool_runs(models[0], models[1:]), calibrated)
    profiled = [measured_model(m) for m in models]
    pred0 = predict(model, host_cores=cores)
    rows = []
    for case in kept["cases"]:
        kw = dict(case["predict"])
        kw["changes"] = [Change.parse(c) for c in kw.get("changes", ())]
        pred = predict(model, host_cores=cores, **kw)
        runs = [(job_model(b), job_model(cf)) for b, cf in case["runs"]]
        row = _row(runtime, case["label"], pred, pred0, runs, profiled)
        # the same counterfactual predicted from the baselines run beside it
        beside = [b for b, _ in runs]
        pooled = extend_service(pool_runs(beside[0], beside[1:]), calibrated)
        _beside(row, predict(pooled, host_cores=cores, **kw))
        rows.append(row)
    return rows


def _beside(row: dict[str, Any], pred: dict[str, Any]) -> None:
    """Add to ``row`` the prediction made from the baseline runs interleaved with
    the counterfactual's own runs (``predicted_beside``) and its errors: the
    profile and the runs it is checked against then see the box in the same state,
    so the box's drift between profiling and testing (``floor``) leaves the
    comparison, and what is left is the model's error and run-to-run noise."""
    measured = row["measured"]
    row["predicted_beside"] = {
        "throughput": pred["throughput"],
        "p99_ms": pred["p99_ms"],
    }
    for key, got in (
        ("throughput", measured["throughput"]["median"]),
        ("p99_ms_pooled", measured["p99_ms_pooled"]),
    ):
        want = pred["p99_ms" if key.startswith("p99") else key]
        row[f"error_{key}_beside"] = (want - got) / got if got else None


def _row(
    runtime: str,
    label: str,
    pred: dict[str, Any],
    pred0: dict[str, Any],
    runs: list[tuple[Any, Any]],
    profiled: list[dict[str, float]],
) -> dict[str, Any]:
    """One counterfactual's prediction set against its (baseline, run) pairs."""
    pairs = [(measured_model(b), measured_model(cf)) for b, cf in runs]
    pooled = pooled_p99_ms([cf for _, cf in runs])
    pooled_base = pooled_p99_ms([b for b, _ in runs])
    row: dict[str, Any] = {
        "runtime": runtime,
        "case": label,
        "predicted": {"throughput": pred["throughput"], "p99_ms": pred["p99_ms"]},
        "measured": {
            key: spread([cf[key] for _, cf in pairs])
            for key in ("throughput", "p99_ms", "traces")
        },
        "baseline_measured": {
            key: spread([b[key] for b, _ in pairs]) for key in ("throughput", "p99_ms")
        },
        "baseline_profiled": profiled,
        "prediction_baseline": pred["baseline"],
        "calibration": pred["calibration"],
        "validity": pred["validity"],
    }
    for key in ("throughput", "p99_ms"):
        ratio = statistics.median(cf[key] / b[key] for b, cf in pairs if b[key])
        m = row["measured"][key]["median"]
        row[f"error_{key}"], p_ratio, row[f"effect_error_{key}"] = _against(
            pred[key], pred0[key], m, ratio
        )
        row[f"effect_{key}"] = {"predicted": p_ratio, "measured": ratio}
    row["measured"]["p99_ms_pooled"] = pooled
    row["baseline_measured"]["p99_ms_pooled"] = pooled_base
    ratio = pooled / pooled_base if pooled_base else 0.0
    row["error_p99_ms_pooled"], p_ratio, row["effect_error_p99_ms_pooled"] = _against(
        pred["p99_ms"], pred0["p99_ms"], pooled, ratio
    )
    row["effect_p99_ms_pooled"] = {"predicted": p_ratio, "measured": ratio}
    # the p99 calibrated on the baseline's own p99 instead (``calibration.p99_tail``)
    tail, tail0 = (
        p["model"]["p99_ms"] * p["calibration"]["p99_tail"] for p in (pred, pred0)
    )
    row["predicted"]["p99_ms_tail"] = tail
    row["error_p99_ms_tail"], _, row["effect_error_p99_ms_tail"] = _against(
        tail, tail0, pooled, ratio
    )
    print(
        f"{runtime:6} {label:28} thr x{row['effect_throughput']['predicted']:.2f}"
        f" pred, x{row['effect_throughput']['measured']:.2f} meas "
        f"({row['effect_error_throughput']:+.0%}); abs {pred['throughput']:6.1f} vs "
        f"{row['measured']['throughput']['median']:6.1f}; p99 "
        f"{pred['p99_ms']:.0f} vs {pooled:.0f} ms pooled",
        flush=True,
    )
    return row


def _against(
    pred: float, pred0: float, measured: float, ratio: float
) -> tuple[float | None, float, float | None]:
    """A prediction ``pred`` (``pred0`` for the baseline) against the ``measured``
    figure and the measured effect ``ratio`` (to the baseline beside it): the
    relative error, the predicted effect and the effect's relative error."""
    p_ratio = pred / pred0 if pred0 else 0.0
    error = (pred - measured) / measured if measured else None
    return error, p_ratio, (p_ratio - ratio) / ratio if ratio else None


#: what a summary reports: throughput, the p99 (against the repeats' own p99s and
#: against their traces pooled), the pooled p99 predicted with the alternative
#: calibration (``p99_ms_tail``), and throughput and pooled p99 predicted from the
#: baselines run beside the counterfactual (``_beside``)
SUMMARY_KEYS = (
    "throughput",
    "p99_ms",
    "p99_ms_pooled",
    "p99_ms_tail",
    "throughput_beside",
    "p99_ms_pooled_beside",
)


def beside_key(key: str) -> str:
    """The summary key of ``key`` predicted from the baselines beside (``_beside``):
    its p99 is the pooled one."""
    return ("p99_ms_pooled" if key.startswith("p99") else key) + "_beside"


#: what a per-pipeline summary reports
PIPELINE_KEYS = (
    "throughput",
    "p99_ms_pooled",
    "throughput_beside",
    "p99_ms_pooled_beside",
)


def floor(row: dict[str, Any], key: str) -> float | None:
    """How far the baseline measured beside a counterfactual is from the baseline
    its prediction started from (the pooled profiled runs): the error of predicting
    "no change" for the unchanged pipeline, i.e. how well this box reproduces one
    figure between the profiling and the counterfactual runs. ``p99_ms`` compares
    the pooled p99s (a single run's is not kept for the profile)."""
    if key.endswith("_beside"):
        return None  # predicted from the baselines beside: no drift to measure
    start = row.get("prediction_baseline") or {}
    beside = row.get("baseline_measured") or {}
    if key == "throughput":
        a, b = start.get("measured_throughput"), beside.get("throughput", {})
        b = b.get("median") if isinstance(b, dict) else None
    elif key.startswith("p99_ms_"):
        a, b = start.get("measured_p99_ms"), beside.get("p99_ms_pooled")
    else:
        return None
    return a / b - 1 if a and b else None


def errors(rows: list[Any], key: str) -> dict[str, float]:
    """Median and worst |error| of absolute predictions and of effects (ratios to
    the baseline measured alongside), and the median ``floor``: absolute errors
    below it are within what re-measuring the baseline itself gives."""
    out: dict[str, float] = {}
    for kind in ("error", "effect_error"):
        errs = [abs(e) for r in rows if (e := r.get(f"{kind}_{key}")) is not None]
        if errs:
            out[f"{kind}_median"] = statistics.median(errs)
            out[f"{kind}_worst"] = max(errs)
    floors = [abs(f) for r in rows if (f := floor(r, key)) is not None]
    if floors and key != "p99_ms":
        out["floor_median"] = statistics.median(floors)
    return out


def resummarize(path: Any) -> dict[str, Any]:
    """A results file's ``summary`` (and ``per_pipeline``) recomputed from its rows."""
    import json

    result = json.loads(path.read_text())
    rows = result["whatif"]
    result["summary"] = {key: errors(rows, key) for key in SUMMARY_KEYS}
    if "per_pipeline" in result:
        result["per_pipeline"] = {
            kind: {
                key: errors([r for r in rows if r["runtime"] == kind], key)
                for key in PIPELINE_KEYS
            }
            for kind in result["per_pipeline"]
        }
    path.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    import sys
    from pathlib import Path

    for arg in sys.argv[1:]:
        print(arg, resummarize(Path(arg))["summary"])
