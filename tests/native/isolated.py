"""Running code that might crash the interpreter in a child process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(
    code: str, *, timeout: float = 120, args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (outside the source tree, so the
    installed package is imported) and return the finished process."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(args or [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parent,
        env=env,
        check=False,
    )


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    """The child exited 0: no crash (a signal gives a negative code), no failure."""
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}\n"
        f"--- stdout (tail)\n{proc.stdout[-4000:]}\n"
        f"--- stderr (tail)\n{proc.stderr[-4000:]}"
    )
