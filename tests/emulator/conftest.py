"""Fixtures of the emulator tests: ``sage engine emulate`` as a real process, and the
gateway fixture of the control-plane tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_path = Path(__file__).resolve().parents[1] / "llm" / "conftest.py"
_spec = importlib.util.spec_from_file_location("sage_tests_llm_conftest_emu", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules["sage_tests_llm_conftest_emu"] = _module
_spec.loader.exec_module(_module)

gateway = _module.gateway


@pytest.fixture(scope="module")
def emulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """``emulator(config)`` runs ``sage engine emulate`` on it (once per config and
    test module); returns its ready line."""
    procs: list[subprocess.Popen[str]] = []
    ready: dict[str, dict[str, Any]] = {}
    tmp_path = tmp_path_factory.mktemp("emulator")

    def start(config: dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(config, sort_keys=True)
        if key in ready:
            return ready[key]
        path = tmp_path / f"emulate-{len(procs)}.json"
        path.write_text(json.dumps(config))
        sage = Path(sys.executable).with_name("sage")
        proc = subprocess.Popen(
            [str(sage), "engine", "emulate", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"emulator exited: {proc.stderr.read() if proc.stderr else ''}"
        ready[key] = dict(json.loads(line))
        return ready[key]

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.communicate(timeout=20)  # waits, and closes the pipes
