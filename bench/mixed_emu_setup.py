"""Layouts of the emulated mixed-workload experiment and the processes serving them.

On N emulated devices (profile ``h100-llama3-8b-e5-mistral-7b`` unless told):

* ``siloed``: LLM engines on the first N/2 devices, embedding engines on the others;
  clients call each service directly (round-robin over its engines);
* ``unified``: an LLM and an embedding engine on every device behind ``sage
  gateway``; the LLM engine's KV cache is smaller there (the embedding model's
  weights share the memory: 0.9 x 80 GB - 16 GB Llama - 14.2 GB e5-mistral - ~6 GB
  activations = 36 GB / 128 KiB ≈ 270k tokens instead of 400k).

Co-located engines share their device as ``sharing`` says (the emulator's device
modes): ``timeslice`` (the default) holds the device in slices of ``timeslice_ms``
that preempt a step, as a GPU time-slices the contexts of two engine processes;
``turns`` runs each step whole before the other engine's.

``Gateways`` starts one gateway per router under test; policies are switched at run
time with ``PUT /admin/policy``. A router is named with its options where it needs
them, ``device-packing:pack_limit=16`` (``router_spec``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from common import free_port, start_gateway, wait_ready

UNIFIED_KV_TOKENS = 270_000
MODELS = {"llm": "llama", "embedding": "e5"}


def router_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:KEY=VALUE,...]`` -> the router's name and its config (numbers parsed)."""
    name, _, options = spec.partition(":")
    config: dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, sep, raw = option.partition("=")
        if not sep:
            raise ValueError(f"router option {option!r} in {spec!r} is not KEY=VALUE")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return name, config


def add_layout_args(parser: argparse.ArgumentParser) -> None:
    """The options of the layouts and their estimated capacity, shared by the
    fixed-load and the saturation benchmarks."""
    parser.add_argument("--profile", default="h100-llama3-8b-e5-mistral-7b")
    parser.add_argument(
        "--sharing",
        choices=("timeslice", "turns"),
        default="timeslice",
        help="how co-located engines share a device: slices that preempt a step "
        "(a GPU time-slicing two processes) or whole steps in turn",
    )
    parser.add_argument(
        "--timeslice-ms",
        type=float,
        default=2.0,
        help="the slice of --sharing timeslice (nvidia-smi compute-policy: 2, 10, 30)",
    )
    parser.add_argument(
        "--llm-capacity",
        type=float,
        default=20.0,
        help="estimated LLM requests/s of one device (profile, workload)",
    )
    parser.add_argument(
        "--emb-capacity",
        type=float,
        default=60.0,
        help="estimated embedding requests/s of one device",
    )
    parser.add_argument(
        "--emb-inflight",
        type=int,
        default=8,
        help="embedding requests the gateway keeps in flight per engine",
    )


def layout(
    kind: str,
    n: int,
    profile: str,
    scale: float = 1.0,
    sharing: str = "timeslice",
    timeslice_ms: float = 2.0,
) -> dict[str, Any]:
    """The emulator config of one layout on ``n`` devices."""
    devices = []
    for d in range(n):
        engines: list[dict[str, Any]] = []
        llm: dict[str, Any] = {"id": f"llm{d}", "kind": "llm", "model": MODELS["llm"]}
        emb = {"id": f"emb{d}", "kind": "embedding", "model": MODELS["embedding"]}
        if kind == "unified":
            llm["overrides"] = {"kv_capacity_tokens": UNIFIED_KV_TOKENS}
            engines = [llm, emb]
        else:
            engines = [llm] if d < n // 2 else [emb]
        device: dict[str, Any] = {"name": f"gpu{d}", "sharing": sharing}
        device["engines"] = engines
        if sharing == "timeslice":
            device["timeslice_ms"] = timeslice_ms
        devices.append(device)
    return {"profile": profile, "time_scale": scale, "devices": devices}


class Emulator:
    """``sage engine emulate`` in a subprocess; ``engines`` from its ready line."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "emulate.json"
        path.write_text(json.dumps(config))
        sage = Path(sys.executable).with_name("sage")
        self.proc = subprocess.Popen(
            [str(sage), "engine", "emulate", str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the engine emulator exited before it was ready")
        self.info = json.loads(line)
        self.engines: list[dict[str, Any]] = self.info["engines"]

    def urls(self, kind: str) -> list[str]:
        return [e["url"] for e in self.engines if e["kind"] == kind]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


class Gateways:
    """One ``sage gateway`` per router over the unified layout's engines."""

    def __init__(
        self, engines: list[dict[str, Any]], routers: list[str], emb_inflight: int
    ) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: dict[str, str] = {}
        specs = [
            {
                "id": e["id"],
                "url": e["url"],
                "kind": e["kind"],
                "model": e["model"],
                "device": e["device"],
                "max_inflight": 256 if e["kind"] == "llm" else emb_inflight,
            }
            for e in engines
        ]
        for i, router in enumerate(routers):
            name, options = router_spec(router)
            port = free_port()
            config = Path(self.dir.name) / f"gateway-{i}.json"
            config.write_text(
                json.dumps(
                    {
                        "engines": specs,
                        "policy": "fifo",
                        "router": name,
                        "router_config": {"metrics_interval_ms": 100, **options},
                        "queue_limits": {"completion": 100000, "embedding": 100000},
                        "queue_timeout_s": 120,
                    }
                )
            )
            self.procs.append(start_gateway(port, config))
            self.urls[router] = f"http://127.0.0.1:{port}"
        for url in self.urls.values():
            wait_ready(int(url.rsplit(":", 1)[1]), "/health", timeout=120)

    def set_policy(self, router: str, policy: str, config: dict[str, Any]) -> str:
        url = self.urls[router]
        body = {"policy": policy, "config": config}
        httpx.put(f"{url}/admin/policy", json=body, timeout=30).raise_for_status()
        return url

    def policy(self, router: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.urls[router]}/admin/policy", timeout=30).json())

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.dir.cleanup()
