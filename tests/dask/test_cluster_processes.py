"""Real `sage scheduler` + 3 `sage worker` processes (one with --resources GPU=1):
a keyed multi-stage pipeline equal to the local runtime's, `sage run --address`,
`sage explain`, the /sage page in headless Chromium, /metrics, backpressure across
processes and a lost worker."""

from __future__ import annotations

import ast
import bisect
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from sage_core import Contract, LocalEnvironment, MapFunction, SinkFunction
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.compiler import PlacementDecision, PlacementPolicy

pytestmark = pytest.mark.slow

# the workers rebuild this module's functions from the plan: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KeyedSum(MapFunction):
    contract = Contract(state="stateful")

    def __init__(self) -> None:
        super().__init__()
        self.total: dict[int, int] = {}

    def map(self, item: int) -> tuple[int, int]:
        k = item % 11
        self.total[k] = self.total.get(k, 0) + item
        return k, item  # running totals depend on arrival order; the state does not

    def get_state(self) -> dict[int, int]:
        return dict(self.total)


def _pipeline(env: Any, n: int) -> None:
    s = env.from_collection(list(range(n)), parallelism=2)
    s = s.map(lambda x: (x * 7919) % 100_003, parallelism=2)
    s = s.filter(lambda x: x % 3 != 0, parallelism=3)
    s = s.key_by(lambda x: x % 11).map(KeyedSum, parallelism=3, name="sum")
    s.map(lambda kv: kv, contract={"gpu": 1}, name="gpu-stage").sink("collect")


def test_keyed_pipeline_across_processes_equals_local(cluster: dict[str, Any]) -> None:
    local = LocalEnvironment("multi", resources={"GPU": 1})
    _pipeline(local, 4000)
    expected = local.execute(timeout=60)
    env = DaskEnvironment(
        "multi",
        client=cluster["client"],
        policy="round-robin",
        chaining=False,
        buffer_size=32,
    )
    _pipeline(env, 4000)
    job = env.submit()
    got = job.wait(timeout=120)
    assert Counter(got.collected()) == Counter(expected.collected())
    state = {k: v for part in got.state_of("sum") for k, v in part.items()}
    assert state == {k: v for p in expected.state_of("sum") for k, v in p.items()}
    workers = cluster["client"].scheduler_info(n_workers=-1)["workers"]
    names = {a: w["name"] for a, w in workers.items()}
    hosts = {rid: names[s["worker"]] for rid, s in got.metrics["replicas"].items()}
    assert hosts["gpu-stage#0"] == "gpu-0"
    assert len(set(hosts.values())) == 3


class KeyOrder(MapFunction):
    """Counts items that reach it out of their source order, per key."""

    contract = Contract(state="stateful")

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[int, int] = {}
        self.out_of_order = 0

    def map(self, item: tuple[int, int]) -> tuple[int, int]:
        key, seq = item
        if seq <= self.last.get(key, -1):
            self.out_of_order += 1
        self.last[key] = seq
        return item

    def get_state(self) -> dict[str, int]:
        return {"out_of_order": self.out_of_order, "keys": len(self.last)}


def test_per_key_order_holds_across_processes(cluster: dict[str, Any]) -> None:
    """Small packets keep several push calls in flight per edge; they may overtake
    each other on the wire, but a key's items still arrive in source order."""
    env = DaskEnvironment(
        "order",
        client=cluster["client"],
        policy="round-robin",
        chaining=False,
        buffer_size=4,
        linger_ms=0,
    )
    items = [(i % 7, i) for i in range(6000)]
    s = env.from_collection(items).key_by(lambda kv: kv[0])
    s.map(KeyOrder, parallelism=2, name="order").sink("collect")
    got = env.submit().wait(timeout=120)
    states = got.state_of("order")
    assert sum(st["out_of_order"] for st in states) == 0, states
    assert sum(st["keys"] for st in states) == 7
    assert Counter(got.collected()) == Counter(items)
    hosts = {rid: m["worker"] for rid, m in got.metrics["replicas"].items()}
    source = next(w for rid, w in hosts.items() if rid.startswith("collection"))
    assert any(w != source for rid, w in hosts.items() if rid.startswith("order"))


def test_sage_run_address_and_explain(
    cluster: dict[str, Any], sage_cmd: list[str], tmp_path: Path, sage_home: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: cli-job\n"
        "operators:\n"
        "  - {name: nums, use: range, config: {stop: 300}, parallelism: 2}\n"
        "  - {name: out, use: collect, inputs: [nums], parallelism: 2}\n"
    )
    env = {"SAGE_HOME": str(sage_home), "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run(
        [
            *sage_cmd,
            "run",
            str(spec),
            "--address",
            cluster["address"],
            "--policy",
            "load-aware-pack",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(int(x) for x in run.stdout.split()) == list(range(300))
    job_id = run.stderr.split("job ")[-1].split()[0]
    explain = subprocess.run(
        [*sage_cmd, "explain", job_id[:-3]],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )
    assert explain.returncode == 0, explain.stderr
    assert "policy load-aware-pack" in explain.stdout
    assert "nums+out#1" in explain.stdout and "* cpu-0" in explain.stdout
    board = subprocess.run(
        [*sage_cmd, "explain", job_id, "--address", cluster["address"], "--json"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )
    assert board.returncode == 0, board.stderr
    assert {d["policy"] for d in json.loads(board.stdout)} == {"load-aware-pack"}


REPO = Path(__file__).resolve().parents[2]
README_ADDRESS = "tcp://127.0.0.1:8786"


def _readme_cluster_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Running a cluster")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_cluster_section_submits_and_collects(
    cluster: dict[str, Any], sage_cmd: list[str], tmp_path: Path, sage_home: Path
) -> None:
    """The README's commands, run as written against this cluster's address."""
    section = _readme_cluster_section()
    run_line = next(
        line for line in section.splitlines() if line.startswith("sage run ")
    )
    assert README_ADDRESS in run_line
    words = (REPO / "examples/pipelines/words.txt").read_text().split()
    expected = Counter(w.upper() for w in words)
    env = {"SAGE_HOME": str(sage_home), "PATH": str(Path(sys.executable).parent)}
    args = run_line.replace(README_ADDRESS, cluster["address"]).split()[1:]
    run = subprocess.run(
        [*sage_cmd, *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    # the print sink ran on the workers: its lines are in their output, not ours
    assert run.stdout == ""
    assert f"succeeded: {len(words)} items into sinks" in run.stderr

    def printed_on_workers() -> bool:
        lines = Counter(
            line.strip()
            for log in cluster["tmp"].glob("worker-*.log")
            for line in log.read_text(errors="replace").splitlines()
        )
        return all(lines[w] >= n for w, n in expected.items())

    deadline = time.monotonic() + 30
    while not printed_on_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert printed_on_workers(), "the print sink's lines are not in the worker logs"

    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "from sage_core import DaskEnvironment" in block
    script = tmp_path / "readme_cluster.py"
    script.write_text(block.replace(README_ADDRESS, cluster["address"]))
    ran = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,  # the README runs it from the repository root
    )
    assert ran.returncode == 0, ran.stderr
    collected = ast.literal_eval(ran.stdout.strip().splitlines()[-1])
    assert Counter(collected) == expected


class Paced(SinkFunction):
    """Slow sink recording (produced at, consumed at) of every item."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, float]] = []

    def sink(self, item: dict[str, Any]) -> None:
        time.sleep(0.002)
        self.seen.append((item["t"], time.perf_counter()))

    def result(self) -> list[tuple[float, float]]:
        return self.seen


def _fast_source(n: int) -> Iterator[dict[str, Any]]:
    payload = "p" * 10_000
    for i in range(n):
        yield {"i": i, "t": time.perf_counter(), "payload": payload}


def test_backpressure_across_processes(cluster: dict[str, Any]) -> None:
    cap, buffer, n = 4, 8, 2000
    env = DaskEnvironment(
        "bp",
        client=cluster["client"],
        policy="round-robin",
        chaining=False,
        queue_capacity=cap,
        buffer_size=buffer,
        linger_ms=0,
    )
    env.from_source(_fast_source, n=n).map(lambda d: d).sink(Paced)
    job = env.submit()
    result = job.wait(timeout=180)
    seen = result.results["Paced"][0]
    assert len(seen) == n  # nothing lost
    produced = sorted(t for t, _ in seen)
    in_flight = max(
        bisect.bisect_right(produced, c) - k
        for k, (_, c) in enumerate(sorted(seen, key=lambda s: s[1]), start=1)
    )
    # two hops, each at most `cap` packets of `buffer` items queued or on the wire,
    # plus the batches the three replicas hold: far below n
    assert in_flight <= 2 * cap * buffer + 4 * buffer, in_flight
    snaps = result.metrics["replicas"]
    assert snaps["map#0"]["blocked_s"] > 0 or snaps["_fast_source#0"]["blocked_s"] > 0
    for snap in snaps.values():
        if "queue" in snap:
            assert snap["queue"]["high_watermark"] <= snap["queue"]["capacity"]
    assert len({s["worker"] for s in snaps.values()}) == 3


def test_dashboard_page_in_chromium_and_prometheus(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    import urllib.request

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("headless Chromium is required (apt-get install chromium)")

    def slow_source(n: int) -> Iterator[int]:
        for i in range(n):
            time.sleep(0.002)
            yield i

    # live metrics every 0.5 s (5 s by default: the first would come after the reads)
    env = DaskEnvironment(
        "dash", client=cluster["client"], chaining=False, metrics_interval_s=0.5
    )
    # some 40 s of input: still running after both browser runs (cancelled below)
    env.from_source(slow_source, n=20_000).map(lambda x: x + 1, parallelism=2).sink(
        "collect"
    )
    job = env.submit()
    try:
        time.sleep(3)  # a few metric polls
        # read while the job surely runs (the browser runs may outlast it)
        metrics = (
            urllib.request.urlopen(cluster["dashboard"] + "/metrics").read().decode()
        )
        status = (
            urllib.request.urlopen(cluster["dashboard"] + "/status").read().decode()
        )
        url = cluster["dashboard"] + "/sage"
        base = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
        ]
        # each run gets its own profile directory
        dom = subprocess.run(
            [*base, f"--user-data-dir={tmp_path / 'dom'}", "--dump-dom", url],
            capture_output=True,
            check=False,
            text=True,
            timeout=180,
        ).stdout
        shot = tmp_path / "sage-dashboard.png"  # kept under the test's tmp dir
        subprocess.run(
            [
                *base,
                f"--user-data-dir={tmp_path / 'shot'}",
                f"--screenshot={shot}",
                "--window-size=1400,900",
                url,
            ],
            capture_output=True,
            check=False,
            timeout=180,
        )
    finally:
        job.cancel()
        job.wait(timeout=60)
    assert job.job_id in dom and "running" in dom
    for rid in ("slow_source#0", "map#0", "map#1", "collect#0"):
        assert f'<td class="l">{rid}</td>' in dom  # a rendered row per replica
    assert "<svg" in dom and "slow_source" in dom
    # the diagnosis panel asked /sage/api/diagnosis and shows its verdict (or why
    # there is none yet)
    assert "bottleneck: " in dom or "diagnosis: " in dom
    assert 'href="sage"' in status  # linked from the dashboard's navigation
    assert shot.exists() and shot.stat().st_size > 10_000
    sage_lines = [x for x in metrics.splitlines() if x.startswith("sage_")]
    assert f'sage_replica_queue_depth{{job="{job.job_id}"' in metrics, sage_lines
    assert "sage_item_latency_seconds_bucket" in metrics
    assert "sage_items_total" in metrics


class Pin(PlacementPolicy):
    """Test double: operator ``victim`` on the worker named ``victim``, the rest on
    the first other worker."""

    name = "pin"

    def place_one(self, demand: Any, ledger: Any) -> PlacementDecision | None:
        names = list(ledger.workers)
        other = next(n for n in names if n != "victim")
        worker = "victim" if demand.task == "victim" else other
        return PlacementDecision(demand.replica, worker, self.name, reason="pinned")


def test_lost_worker_fails_the_job_clearly(
    cluster: dict[str, Any], sage_cmd: list[str], wait_for: Callable[..., None]
) -> None:
    from sage_core.runtime.job import JobFailed
    from sage_core.runtime.master import WorkerLost

    group, client = cluster["group"], cluster["client"]
    victim = group.start(
        [
            *sage_cmd,
            "worker",
            cluster["address"],
            "--name",
            "victim",
            "--no-nanny",
            "--host",
            "127.0.0.1",
        ],
        "worker-victim",
        cwd=cluster["tmp"],
    )
    client.wait_for_workers(4, timeout=120)

    def endless() -> Iterator[int]:
        i = 0
        while True:
            i += 1
            yield i

    env = DaskEnvironment("lost", client=client, policy=Pin(), chaining=False)
    env.from_source(endless).map(lambda x: x, name="victim").sink("collect")
    job = env.submit()
    wait_for(
        lambda: job.metrics()["replicas"].get("victim#0", {}).get("items_in", 0) > 0,
        60,
        "items at the victim",
    )
    victim.kill()
    with pytest.raises(JobFailed) as info:
        job.wait(timeout=60)
    assert isinstance(info.value.cause, WorkerLost)
    assert "victim#0" in str(info.value.cause)
