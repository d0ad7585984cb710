"""``sage engine emulate CONFIG``: emulated engines on emulated devices, one process.

Config (YAML or JSON)::

    profile: h100-llama3-8b-e5-mistral-7b   # built-in name, path, or inline mapping
    host: 127.0.0.1
    time_scale: 1.0          # wall seconds per emulated second
    devices:
      - name: gpu0
        sharing: turns       # co-located engines' steps take turns, whole;
                             # timeslice: they hold the device in slices that
                             # preempt a step (a GPU time-slicing processes);
                             # processor: they run at once at a shared speed (a CPU)
        timeslice_ms: 2      # timeslice only: the slice (nvidia-smi compute-policy
                             # sets 2, 10 or 30 ms)
        idle_spin_s: 0       # processor only: an engine keeps its share this long
                             # after its last step (vLLM's CPU workers spin 1 s)
        engines:
          - {id: llm0, kind: llm, model: llama, port: 9001}
          - {id: emb0, kind: embedding, model: e5, port: 9002,
             overrides: {max_batch_inputs: 64}}

An LLM engine entry may set ``tool_rounds`` (default 1): how many tool calls it
makes in a conversation that offers tools before it answers (``tools.py``).

Port 0 (or none) picks a free port. Once every engine listens, one JSON line is
printed: ``{"emulated": true, "profile": ..., "engines": [{id, kind, model, device,
url}, ...]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_plugins.emulator.device import Device
from sage_plugins.emulator.engines import EmbeddingEngine, Engine, LLMEngine
from sage_plugins.emulator.profile import EmulatorConfigError, Profile, load_profile
from sage_plugins.emulator.server import EngineApp


@dataclass
class Emulation:
    """Devices, their engines, and where each engine listens."""

    profile: Profile
    host: str
    devices: list[Device]
    ports: dict[str, int]
    apps: dict[str, EngineApp]

    def describe(self) -> dict[str, Any]:
        engines = []
        for device in self.devices:
            for engine in device.engines:
                engines.append(
                    {
                        "id": engine.id,
                        "kind": engine.kind,
                        "model": engine.model,
                        "device": device.name,
                        "url": f"http://{self.host}:{self.ports[engine.id]}",
                    }
                )
        return {
            "emulated": True,
            "time_scale": self.devices[0].time_scale,
            "profile": self.profile.name,
            "source": self.profile.source,
            "engines": engines,
        }


def _make_engine(entry: Any, profile: Profile, where: str) -> Engine:
    if not isinstance(entry, dict) or not entry.get("id") or not entry.get("model"):
        raise EmulatorConfigError(f"{where}: an engine needs 'id' and 'model'")
    kind = entry.get("kind", "llm")
    if kind not in ("llm", "embedding"):
        raise EmulatorConfigError(f"{where}: kind must be 'llm' or 'embedding'")
    overrides = entry.get("overrides") or {}
    timed = profile.with_overrides(kind, overrides)
    if kind == "llm":
        return LLMEngine(str(entry["id"]), str(entry["model"]), timed.llm)
    return EmbeddingEngine(str(entry["id"]), str(entry["model"]), timed.embedding)


def _tool_rounds(entry: dict[str, Any], eid: str) -> int:
    rounds = entry.get("tool_rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= 64:
        raise EmulatorConfigError(
            f"engine {eid!r}: tool_rounds must be an int in 0..64"
        )
    return rounds


def build(config: dict[str, Any]) -> Emulation:
    """Devices and engines from a config mapping (nothing listens yet).

    Raises:
        EmulatorConfigError: malformed config, unknown profile, duplicate ids/ports.
    """
    if not isinstance(config, dict):
        raise EmulatorConfigError("the emulator config must be a mapping")
    profile = load_profile(config.get("profile", "h100-llama3-8b-e5-mistral-7b"))
    devices_cfg = config.get("devices")
    if not isinstance(devices_cfg, list) or not devices_cfg:
        raise EmulatorConfigError(
            "the emulator config needs a non-empty 'devices' list"
        )
    try:
        scale = float(config.get("time_scale", 1.0))
    except (TypeError, ValueError):
        scale = -1.0
    if not 0 < scale <= 1000:
        raise EmulatorConfigError("time_scale must be a number in (0, 1000]")
    devices, ports, apps = [], {}, {}
    for i, dev in enumerate(devices_cfg):
        if not isinstance(dev, dict) or not isinstance(dev.get("engines"), list):
            raise EmulatorConfigError(f"devices[{i}] needs an 'engines' list")
        try:
            device = Device(
                str(dev.get("name") or f"device{i}"),
                scale,
                dev.get("sharing", "turns"),
                dev.get("idle_spin_s", 0.0),
                dev.get("timeslice_ms"),
            )
        except (TypeError, ValueError) as exc:
            raise EmulatorConfigError(f"devices[{i}].{exc}") from exc
        for j, entry in enumerate(dev["engines"]):
            engine = _make_engine(entry, profile, f"devices[{i}].engines[{j}]")
            if engine.id in ports:
                raise EmulatorConfigError(f"engine id {engine.id!r} appears twice")
            port = int(entry.get("port") or 0)
            if port and port in ports.values():
                raise EmulatorConfigError(f"port {port} is given to two engines")
            ports[engine.id] = port
            device.place(engine)
            apps[engine.id] = EngineApp(
                engine, profile.tokens_per_word, _tool_rounds(entry, engine.id)
            )
        devices.append(device)
    return Emulation(
        profile, str(config.get("host", "127.0.0.1")), devices, ports, apps
    )


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EmulatorConfigError(f"no emulator config at {path}")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EmulatorConfigError(f"{path}: invalid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EmulatorConfigError(f"{path}: the config must be a mapping")
    return data


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it a keep-alive request's response
    # waits ~40 ms for the client's delayed ACK (Nagle), on top of the emulated time
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EmulatorConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _no_signals() -> Iterator[None]:
    yield


async def serve(
    emulation: Emulation,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run every device timeline and engine server until ``stop`` is set."""
    import uvicorn

    stop = stop or asyncio.Event()
    sockets = {
        eid: _bind(emulation.host, port) for eid, port in emulation.ports.items()
    }
    for eid, sock in sockets.items():
        emulation.ports[eid] = sock.getsockname()[1]
    servers = []
    for eid, app in emulation.apps.items():
        config = uvicorn.Config(
            app.app, log_level="warning", access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        server.capture_signals = _no_signals  # type: ignore[method-assign]
        servers.append((server, sockets[eid]))
    tasks = [asyncio.ensure_future(d.run()) for d in emulation.devices]
    serving = [asyncio.ensure_future(s.serve(sockets=[sock])) for s, sock in servers]
    while not all(s.started for s, _ in servers):
        if any(t.done() for t in serving):
            break
        await asyncio.sleep(0.02)
    if on_ready is not None:
        on_ready(emulation.describe())
    await stop.wait()
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*serving, return_exceptions=True)
    for task in tasks:
        task.cancel()
    for sock in sockets.values():
        sock.close()


def run(config_path: str) -> None:
    """The ``sage engine emulate`` entry point: serve until SIGINT/SIGTERM."""
    emulation = build(read_config(config_path))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(emulation, lambda info: print(json.dumps(info), flush=True), stop)

    asyncio.run(main())
