"""Helpers every benchmark shares: run metadata, medians with spread, smoke mode.

Every benchmark writes ``machine_info()`` (load average before and after, CPUs) and, for
each figure, ``spread(values)`` (median, min, max, relative spread, repeats) to its JSON,
and plots the median with min-max error bars (``errorbar_args``). ``--smoke`` runs a
benchmark at tiny sizes in seconds, so CI can check every session still runs; smoke
figures mean nothing and go to a separate file (``smoke_path``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self


def machine_info() -> dict[str, Any]:
    """Python, platform, CPUs (total and usable by this process), 1/5/15-min load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "load_avg": list(os.getloadavg()),
    }


def _ticks(fields: Sequence[str]) -> int:
    return sum(int(x) for x in fields)


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every process under it, those
    that ended included: a process's ``cutime``/``cstime`` hold the CPU of the
    children it reaped (a benchmark's clusters come and go while it measures)."""
    procs: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu s)
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        procs[int(name)] = (int(rest[1]), _ticks(rest[11:15]) / tick)
    mine, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent and p not in mine]
        mine.update(kids)
        todo.extend(kids)
    return sum(procs[p][1] for p in mine if p in procs)


#: CPU share of other processes above which a run's figures are flagged
BUSY = 0.05


class OtherLoad:
    """How much CPU processes outside this one's tree used while it measured:
    a benchmark of real engines on a busy machine measures their contention,
    not them (vLLM CPU ran 2-3x slower with another job on the box). ``share``
    is their CPU seconds over the machine's CPU seconds in the window (Linux;
    None elsewhere)."""

    def __init__(self) -> None:
        self.share: float | None = None
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _now() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            cpu = f.readline().split()[1:]
        tick = os.sysconf("SC_CLK_TCK")
        busy = (_ticks(cpu[:3]) + _ticks(cpu[5:8])) / tick  # user nice system irq..
        return time.monotonic(), busy, _tree_cpu_s(os.getpid())

    def start(self) -> Self:
        try:
            self._start = self._now()
        except OSError:
            self._start = None
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the window: ``share`` is set (None without ``/proc``)."""
        if self._start is None:
            return
        t0, busy0, own0 = self._start
        t1, busy1, own1 = self._now()
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        other = max(0.0, (busy1 - busy0) - (own1 - own0))
        self.share = other / capacity if capacity > 0 else 0.0

    def warn(self, what: str) -> None:
        """Say so when other processes used more than ``BUSY`` of the CPUs."""
        if self.share is not None and self.share > BUSY:
            print(
                f"WARNING: other processes used {self.share:.0%} of the CPUs while "
                f"{what} were measured: the figures include that contention",
                flush=True,
            )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median of the repeats with min, max and (max - min) / median."""
    if not values:
        raise ValueError("spread of no values")
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {
        "median": float(med),
        "min": float(lo),
        "max": float(hi),
        "rel_spread": float((hi - lo) / med) if med else 0.0,
        "repeats": len(values),
    }


def errorbar_args(stats: Sequence[dict[str, float]]) -> dict[str, Any]:
    """``ax.errorbar``/``ax.bar`` keyword arguments drawing min-max around medians."""
    return {
        "yerr": [
            [s["median"] - s["min"] for s in stats],
            [s["max"] - s["median"] for s in stats],
        ],
        "capsize": 3,
    }


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--smoke``: tiny sizes, one repeat, output to a ``*-smoke`` file."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run at tiny sizes in seconds to check the benchmark works (CI)",
    )


def smoke_path(path: Path) -> Path:
    """Where a smoke run writes: ``x.json`` -> ``x-smoke.json`` in a temp-like folder."""
    return path.with_name(f"{path.stem}-smoke{path.suffix}")


# -- servers under test (gateway and mixed-workload benchmarks) ----------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, path: str, timeout: float = 60.0) -> None:
    """Poll ``GET path`` on 127.0.0.1:port until it answers 200 or `timeout` passes."""
    import http.client
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing healthy on port {port}{path} after {timeout}s")


def start_gateway(port: int, config: Path) -> Any:
    """Start ``sage gateway`` (the one next to this Python) on `port` with `config`."""
    import subprocess
    import sys

    sage = Path(sys.executable).with_name("sage")
    options = ["--port", str(port), "--config", str(config), "--log-level", "warning"]
    return subprocess.Popen([str(sage), "gateway", *options])


# -- pipeline sinks --------------------------------------------------------------------


def latency_sink(batch_size: int | None = None, span: bool = False) -> type:
    """A SAGE sink class (named ``LatencySink``) collecting per-item latency.

    Items carry their emission time in ``item["t"]`` (``time.perf_counter``); the
    sink's result is the list of ``now - t`` in seconds, one per item, or with
    ``span`` the pair ``(latencies, streaming_s)``: seconds from the first item's
    emission to the last item's arrival (throughput without the job's set-up).
    ``batch_size`` sets the sink's contract (e.g. whole packets, as peers' sinks).
    """
    import time

    from sage_core import Contract, SinkFunction

    perf = time.perf_counter

    class LatencySink(SinkFunction):
        if batch_size is not None:
            contract = Contract(batch_size=batch_size)

        def __init__(self) -> None:
            super().__init__()
            self.lat: list[float] = []
            self.span = Span()

        def sink_batch(self, items: list[Any]) -> None:
            now = perf()
            self.lat.extend([now - x["t"] for x in items])
            self.span.add(items, now)

        def result(self) -> Any:
            return (self.lat, self.span.seconds()) if span else self.lat

    return LatencySink


class Span:
    """First emission (``item["t"]``) to last arrival of the items a sink saw."""

    def __init__(self) -> None:
        self.first = float("inf")
        self.last = float("-inf")

    def add(self, items: list[Any], now: float) -> None:
        if items:
            self.first = min(self.first, items[0]["t"])  # packets keep emission order
            self.last = now

    def seconds(self) -> float:
        return max(self.last - self.first, 1e-9)


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(
    path: Path, report: dict[str, Any], plot: Callable[[Path], None]
) -> None:
    """``report`` as JSON at ``path`` (with ``machine_after``), ``plot(png)`` beside it."""
    report.setdefault("machine_after", machine_info())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    png = path.with_suffix(".png")
    plot(png)
    print(f"wrote {path} and {png}")


def grouped_bars(
    ax: Any,
    groups: Sequence[Any],
    systems: Sequence[str],
    stat: Any,
    tick_labels: Sequence[str],
    **tick_kw: Any,
) -> None:
    """One bar per (group, system) on ``ax``: ``stat(group, system)`` gives a
    ``spread`` dict (drawn as median with min-max bars) or None (no bar). Each
    system keeps one colour in every panel; groups are the x ticks."""
    width = 0.8 / len(systems)
    for j, system in enumerate(systems):
        xs, stats = [], []
        for i, group in enumerate(groups):
            found = stat(group, system)
            if found is not None:
                xs.append(i + j * width)
                stats.append(found)
        if stats:
            ax.bar(
                xs,
                [s["median"] for s in stats],
                width,
                label=system,
                color=f"C{j}",
                **errorbar_args(stats),
            )
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(groups))], tick_labels, **tick_kw
    )


async def open_loop_post(
    port: int,
    path: str,
    bodies: Sequence[Any],
    rate: float,
    seconds: float,
    seed: int,
    connections: int = 128,
) -> dict[str, Any]:
    """Open-loop Poisson load on ``POST path`` (JSON ``bodies`` at random) from
    ``connections`` keep-alive HTTP/1.1 connections of plain asyncio streams: a
    request's latency runs from its scheduled send time, so time it waits for a free
    connection counts. (A pooled client such as httpx spends O(pool) per request
    once hundreds are in flight and stops keeping the rate.)"""
    import asyncio
    import random
    import time

    rng = random.Random(seed)
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    codes: dict[int, int] = {}
    timeline: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (job := await queue.get()) is not None:
                due, body = job
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                codes[status] = codes.get(status, 0) + 1
                if status == 200:
                    timeline.append((due - start, time.perf_counter() - due))
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    encoded = [json.dumps(b).encode() for b in bodies]
    due, sent = start, 0
    while due - start < seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        queue.put_nowait((due, rng.choice(encoded)))
        sent += 1
        due += rng.expovariate(rate)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies = [lat for _, lat in timeline]
    return {
        "sent": sent,
        "ok_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None,
        "refused_share": codes.get(429, 0) / sent if sent else 0.0,
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "timeline": sorted(timeline),
    }


def _two_cpus_or_more() -> list[int] | None:
    """The CPUs this process may use, sorted; None with fewer than two or no
    affinity support (nothing to split)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return cpus if len(cpus) >= 2 else None


def pin_split() -> dict[str, list[int]] | None:
    """The engine's CPU (the last one) and the pipeline's (the others); None with
    fewer than two CPUs or no affinity support."""
    cpus = _two_cpus_or_more()
    if cpus is None:
        return None
    return {"engine": cpus[-1:], "pipeline": cpus[:-1]}


def engine_cpus(layout: str) -> dict[str, list[int]] | None:
    """CPUs for two engines and their load client in ``layout``: ``separate`` gives
    the LLM and the embedding engine one CPU each, ``shared`` puts both on the last
    CPU (the OS shares it between them); the client gets the CPUs left over, or all
    of them when none are. None with fewer than two CPUs or no affinity support (the
    engines then run unpinned)."""
    if layout not in ("separate", "shared"):
        raise ValueError(f"layout must be 'separate' or 'shared', got {layout!r}")
    cpus = _two_cpus_or_more()
    if cpus is None:
        return None
    if layout == "separate":
        return {"llm": cpus[:1], "embedding": cpus[1:2], "client": cpus[2:] or cpus}
    return {"llm": cpus[-1:], "embedding": cpus[-1:], "client": cpus[:-1]}


def limit_threads(n: int) -> None:
    """BLAS/torch threads of this process (and processes it starts) to ``n``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def start_vllm(model: Any, name: str, *, pin: bool) -> tuple[Any, Any]:
    """A vLLM CPU server for ``model`` (started) and the CPU split: with ``pin``
    (and two CPUs or more) the engine gets the last CPU and this process, with
    the processes it starts later (Dask workers), the others; else (server, None)."""
    from sage_plugins.engines.vllm_server import VLLMServer

    pinned = pin_split() if pin else None
    cpus = pinned["engine"] if pinned is not None else None
    server = VLLMServer(model, served_model_name=name, cpus=cpus).start()
    if pinned is not None:
        os.sched_setaffinity(0, pinned["pipeline"])  # the pipeline and its workers
        limit_threads(len(pinned["pipeline"]))
    return server, pinned
