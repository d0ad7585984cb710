"""What-if predictions against actually run counterfactuals of RAG and MIXED
pipelines on real engines.

RAG: questions -> embed (all-MiniLM-L6-v2 in the workers) -> retrieve (the demo
corpus indexed with it) -> prompt -> generate (vLLM CPU serving the tiny local Llama,
over HTTP) -> sink. MIXED: the same with a CPU-bound ``rerank`` stage (a fixed
amount of CPU work per item, ``--rerank-ms`` of its thread's CPU time:
``cpu_work.cpu_time``, or loop iterations taking that on an idle CPU with
``--work loops``) between retrieve and prompt, so that worker CPU and the engine
both bound the pipeline. Each runs on a LocalCluster of 2 single-thread
worker processes (1 for ``workers=1``), with every item traced.

``generate`` declares its engine (``Contract.engine``: the server's URL), so the
model runs its calls on that engine, batched together, instead of on the worker's
CPU (``sage_core.diagnosis.sim``). The counterfactuals change the replicas of the
engine stage and of the CPU stage, packet size, queue capacity and worker count;
each is predicted from the pooled baseline runs and then run ``--repeats`` times
beside a baseline run (``diagnosis_compare``).

The baseline always calls the engine with full batches of 8, so how the engine's
time grows with the items it holds at once (two generate replicas send it 16) is
not in the baseline's record, nor how much a call of fewer items still costs (a
short input queue makes them): two calibration runs with ``generate`` at
``batch_size=2`` and ``16`` (not counterfactuals) supply service samples at those
sizes (``extend_service``, ``sage whatif --calibrate-with``), and every prediction
uses them. By default the engine runs pinned to the last CPU and the pipeline (client,
workers, MiniLM) to the others (``--no-pin-engine``: all share every CPU; the
engine's speed then depends on the CPU load the plan puts beside it, which the
model does not see); predictions cap the workers at the pipeline's CPUs.

    python bench/diagnosis_rag.py --out bench/results/diagnosis_rag.json
    python bench/diagnosis_rag.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cloudpickle
import cpu_work
from common import (
    OtherLoad,
    add_smoke_flag,
    machine_info,
    pyplot,
    smoke_path,
    start_vllm,
    write_report,
)
from diagnosis_cases import knob
from diagnosis_compare import (
    PIPELINE_KEYS,
    SUMMARY_KEYS,
    add_keep_flag,
    beside_key,
    compare,
    errors,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(cpu_work)  # work() ships to the workers
_perf = time.perf_counter
#: items per generate call in the calibration runs (the baseline calls with 8).
#: With one item a packet and queues of 8 packets, the run at 16 calls with 8: it
#: measures 8 again. Giving it room to call with 16 (and adding 32) measured one
#: replica's call of 16 at 138 ms, where two replicas' concurrent calls of 8 took
#: 91-106 ms each; the engine model, one curve for both, then predicted generate
#: parallelism 2 at x1.06 against x1.26 measured (ARCHITECTURE, section 7)
CALIBRATION_BATCHES = (2, 16)


@dataclass(frozen=True)
class RagCfg:
    """One RAG or MIXED pipeline with its runtime settings."""

    kind: str
    n: int
    rerank_s: float = 0.0
    par: dict[str, int] = field(default_factory=dict)
    buffer: int = 1
    cap: int = 8
    workers: int = 2
    #: items per generate call
    gen_batch: int = 8


def questions(n: int) -> Any:
    """``n`` questions of the demo set, numbered so none repeats exactly."""
    from sage_plugins.demo.corpus import questions_path

    base = [json.loads(x) for x in questions_path().read_text().splitlines()]
    for i in range(n):
        yield {"query": f"{base[i % len(base)]['query']} (case {i})", "i": i}


def hold_embedder(dask_worker: Any) -> None:
    """Keep one reference to the worker's shared MiniLM (the embed stage's default
    backend): the model is then loaded once per process, not once per job."""
    from sage_plugins.backends.sentence_tf import SentenceTransformersBackend

    dask_worker.sage_bench_embedder = SentenceTransformersBackend()


class Bench:
    """The engine, the collection and the clusters the runs share."""

    def __init__(
        self,
        llm: dict[str, Any],
        root: str,
        tokenizer: str,
        tokens: int,
        work: Any = cpu_work.cpu_time,
    ):
        self.llm, self.root, self.tokenizer, self.tokens = llm, root, tokenizer, tokens
        self.work = work  # the CPU stage's per-item work (``cpu_work.WORK``)
        self.clusters: dict[int, Any] = {}

    def client(self, n: int) -> Any:
        if n not in self.clusters:
            from dask_peers import local_cluster

            self.clusters[n] = client = local_cluster(n)[1]
            # every worker keeps the embedder loaded, as a serving deployment
            # would, so no run pays for loading it
            client.run(hold_embedder)
            self.run(RagCfg("rag", 8, workers=n))  # warm-up: workers import the code
        return self.clusters[n]

    def build(self, env: Any, c: RagCfg) -> None:
        s = env.from_source(questions, n=c.n, name="questions")
        s = s.map(
            "embed",
            field="query",
            batch_size=8,
            max_wait_ms=5,
            parallelism=c.par.get("embed", 1),
        )
        s = s.map("retrieve", collection="bench", root=self.root, top_k=4)
        if c.kind == "mixed":
            s = s.map(
                self.work(c.rerank_s),
                name="rerank",
                parallelism=c.par.get("rerank", 1),
            )
        s = s.map("prompt", max_prompt_tokens=320, tokenizer=self.tokenizer)
        s = s.map(
            "generate",
            backend_config=self.llm,
            max_tokens=self.tokens,
            params={"ignore_eos": True},
            batch_size=c.gen_batch,
            parallelism=c.par.get("generate", 1),
        )
        s.sink(lambda item: None, name="sink")

    def run(self, c: RagCfg) -> dict[str, Any]:
        """Run ``c`` on Dask; its job record (as ``sage run`` writes it)."""
        from sage_core.api.dask_environment import DaskEnvironment
        from sage_core.observe.records import load_record

        env = DaskEnvironment(
            f"bench-diag-{c.kind}",
            client=self.client(c.workers),
            chaining=False,
            buffer_size=c.buffer,
            queue_capacity=c.cap,
            trace_every=1,
        )
        self.build(env, c)
        job = env.submit()
        job.wait(1800)
        return load_record(job.job_id)

    def close(self) -> None:
        for client in self.clusters.values():
            cluster = client.cluster
            client.close()
            cluster.close()


def cases(kind: str, n: int, rerank_s: float, smoke: bool) -> list[Any]:
    """(label, predict() keywords, config) per counterfactual; the baseline first."""
    from sage_core.diagnosis.whatif import Change

    base = RagCfg(kind, n, rerank_s=rerank_s if kind == "mixed" else 0.0)

    def par(**ps: int) -> tuple[str, dict[str, Any], RagCfg]:
        label = " ".join(f"{op}.parallelism={v}" for op, v in ps.items())
        changes = [Change(op, "parallelism", v) for op, v in ps.items()]
        return label, {"changes": changes}, replace(base, par=dict(ps))

    out = [("baseline", {}, base), par(generate=2)]
    if smoke:  # one counterfactual per kind: the smoke run checks the path, not fit
        return out
    if kind == "mixed":
        out += [par(rerank=2), par(rerank=2, generate=2)]
    else:
        out += [par(generate=4)]
    out += [knob(base, "buffer_size", 4), knob(base, "queue_capacity", 2)]
    out += [("workers=1", {"workers": 1}, replace(base, workers=1))]
    return out


def plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, key, unit in zip(
        axes, ("throughput", "p99_ms"), ("items/s", "ms"), strict=True
    ):
        meas_key = "p99_ms_pooled" if key == "p99_ms" else key

        def meas_of(r: dict[str, Any], key: str = key) -> float:
            got = r["measured"]
            return got[key]["median"] if key == "throughput" else got["p99_ms_pooled"]

        for kind, marker in (("rag", "o"), ("mixed", "s")):
            rows = [r for r in result["whatif"] if r["runtime"] == kind]
            meas = [meas_of(r) for r in rows]
            pred = [r["predicted"][key] for r in rows]
            ax.plot(meas, pred, marker, label=kind)
            for r, x, y in zip(rows, meas, pred, strict=True):
                ax.annotate(r["case"], (x, y), fontsize=6)
        top = max(max(r["predicted"][key], meas_of(r)) for r in result["whatif"])
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        e = result["summary"][meas_key]
        b = result["summary"][beside_key(meas_key)]
        ax.set_title(
            f"{key}{' (pooled over repeats)' if key == 'p99_ms' else ''}: |error| "
            f"median {e['error_median']:.0%}, worst {e['error_worst']:.0%}\n"
            f"predicted from the baselines beside: median {b['error_median']:.0%}, "
            f"worst {b['error_worst']:.0%}",
            fontsize=9,
        )
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.legend()
    fig.suptitle(
        "what-if predicted vs measured: RAG and MIXED on MiniLM + vLLM CPU "
        "(tiny model), 2-core box"
    )
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("bench/results/diagnosis_rag.json"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--items", type=int, default=240, help="questions per run")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rerank-ms", type=float, default=12.0)
    p.add_argument("--llm-url", default=None, help="a running server (else started)")
    p.add_argument("--model", default="tiny")
    p.add_argument(
        "--no-pin-engine",
        dest="pin_engine",
        action="store_false",
        help="engine and pipeline share every CPU (default: the engine gets the last)",
    )
    cpu_work.add_work_flag(p)
    add_keep_flag(p)
    add_smoke_flag(p)
    args = p.parse_args()
    if args.smoke:
        args.items, args.repeats, args.max_tokens = 40, 1, 4
    out = smoke_path(args.out) if args.smoke else args.out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SAGE_HOME", tempfile.mkdtemp(prefix="sage-bench-diag-"))
    from rag_runs import index

    from sage_core.common.settings import cache_dir
    from sage_plugins.engines.tiny_model import make_tiny_model

    model = make_tiny_model(cache_dir() / "models" / "tiny")
    server, pinned = None, None
    if args.llm_url is None:
        server, pinned = start_vllm(model, args.model, pin=args.pin_engine)
        args.llm_url = server.api_url
    cores = len(pinned["pipeline"]) if pinned else os.cpu_count()
    llm = {"base_url": args.llm_url, "model": args.model}
    t0 = _perf()
    rows: list[Any] = []
    other = OtherLoad()
    try:
        with tempfile.TemporaryDirectory() as root, other:
            index(root)
            bench = Bench(
                llm, root, str(model), args.max_tokens, cpu_work.WORK[args.work]
            )
            try:
                for kind in ("rag", "mixed"):
                    todo = cases(kind, args.items, args.rerank_ms / 1e3, args.smoke)
                    calib = tuple(
                        replace(todo[0][2], gen_batch=b) for b in CALIBRATION_BATCHES
                    )
                    rows += compare(
                        todo,
                        bench.run,
                        args.repeats,
                        kind,
                        cores,
                        calib,
                        keep=args.keep_records,
                    )
            finally:
                bench.close()
    finally:
        if server is not None:
            server.stop()
    result = {
        "machine": machine_info(),
        "smoke": args.smoke,
        "repeats": args.repeats,
        "items_per_run": args.items,
        "work": args.work,
        "max_tokens": args.max_tokens,
        "rerank_ms": args.rerank_ms,
        "calibration": [f"generate batch_size={b}" for b in CALIBRATION_BATCHES],
        "cpus_pinned": pinned or "not pinned: engine and pipeline share every CPU",
        "host_cores": cores,
        # CPU share of processes outside the benchmark (engine, workers, client)
        "other_cpu_share": other.share,
        "whatif": rows,
        "summary": {key: errors(rows, key) for key in SUMMARY_KEYS},
        "per_pipeline": {
            kind: {
                key: errors([r for r in rows if r["runtime"] == kind], key)
                for key in PIPELINE_KEYS
            }
            for kind in ("rag", "mixed")
        },
        "seconds": _perf() - t0,
    }
    write_report(out, result, lambda png: plot(result, png))
    print(json.dumps(result["summary"]), f"in {result['seconds']:.0f} s")
    other.warn("the pipelines")


if __name__ == "__main__":
    main()
