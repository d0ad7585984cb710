"""Memory recall benchmark: does turn N get the fact of turn 1 back from long-term
memory after it has left the short-term window?

The labelled set is made locally (``sage_plugins.memory.dialogues``): each dialogue
states a fact in turn 1, continues with small talk and other facts of the same user,
and asks about the fact in other words in its last turn. Users have several
dialogues, so their memory holds other facts too. For each dialogue we record every
turn but the last (short-term window: 3 turns), then ask ``Memory.context`` with the
last turn: recall@k is the share of dialogues whose turn-1 item is among the k
recalled long-term items. Embedders measured in the same run: the packaged MiniLM
(``sentence-transformers``) and the offline ``hash`` embedder (lexical peer).
Also: context assembly latency (p50/p99 ms) and turns written per second.

    python bench/memory_bench.py --out bench/results/memory.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# one intra-op thread for MiniLM: on a small shared box torch's default thread pool
# oversubscribes the cores (a single-text call took 0.6 s instead of 0.03 s)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import (
    add_smoke_flag,
    machine_info,
    percentile,
    pyplot,
    smoke_path,
    write_report,
)

from sage_plugins.memory import Memory
from sage_plugins.memory.dialogues import make_dialogues

EMBEDDERS = ["sentence-transformers", "hash"]
KS = (1, 3, 5)


def run(embedder: str, dialogues: list[Any], root: Path) -> dict[str, Any]:
    mem = Memory(f"bench-{embedder}", embedder=embedder, recent_turns=3, root=root)
    hits = dict.fromkeys(KS, 0)
    lat: list[float] = []
    written, write_s = 0, 0.0
    misses = []
    for d in dialogues:
        t0 = time.perf_counter()
        first = mem.add_turn(d.session, d.turns[0], user=d.user)
        for turn in d.turns[1:-1]:
            mem.add_turn(d.session, turn, user=d.user)
        write_s += time.perf_counter() - t0
        written += len(d.turns) - 1
        assert all(t["id"] != first for t in mem.recent(d.session))
        t0 = time.perf_counter()
        ctx = mem.context(
            d.session, d.turns[-1], user=d.user, budget_tokens=4096, top_k=max(KS)
        )
        lat.append(time.perf_counter() - t0)
        ids = [h["id"] for h in ctx["recalled"]]
        for k in KS:
            hits[k] += first in ids[:k]
        if first not in ids[: max(KS)] and len(misses) < 5:
            misses.append({"fact": d.turns[0], "question": d.turns[-1]})
    mem.close()
    n = len(dialogues)
    return {
        **{f"recall@{k}": hits[k] / n for k in KS},
        "context_p50_ms": percentile(lat, 0.5) * 1e3,
        "context_p99_ms": percentile(lat, 0.99) * 1e3,
        "turns_written_per_s": written / write_s,
        "long_term_items": written,
        "misses_shown": misses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    parser.add_argument("--dialogues", type=int, default=400)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument(
        "--embedders", default=",".join(EMBEDDERS), help="comma-separated backends"
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.dialogues, args.users = 40, 8
        args.out = smoke_path(args.out)
    dialogues = make_dialogues(args.dialogues, users=args.users, seed=0)
    before = machine_info()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for embedder in args.embedders.split(","):
            results[embedder] = run(embedder, dialogues, Path(tmp))
            r = results[embedder]
            print(
                f"{embedder:22s} recall@1 {r['recall@1']:.3f} recall@5 "
                f"{r['recall@5']:.3f}  context p50 {r['context_p50_ms']:.1f} ms  "
                f"{r['turns_written_per_s']:.0f} turns/s written"
            )
    report = {
        "benchmark": "memory",
        "config": {
            "dialogues": args.dialogues,
            "users": args.users,
            "recent_turns": 3,
            "omp_num_threads": os.environ["OMP_NUM_THREADS"],
            "smoke": args.smoke,
        },
        "machine_before": before,
        "machine_after": machine_info(),
        "results": results,
    }
    write_report(args.out, report, lambda png: _plot(results, png))


def _plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(results)
    for j, (name, r) in enumerate(results.items()):
        ax.bar(
            [i + j * width for i in range(len(KS))],
            [r[f"recall@{k}"] for k in KS],
            width,
            label=name,
            color=f"C{j}",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(KS))], [f"@{k}" for k in KS])
    ax.set_ylabel("recall of the turn-1 fact")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
