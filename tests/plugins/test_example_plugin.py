"""The example third-party plugin, pip-installed into a fresh virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "sage-example-plugin"


def _run(args: list[str], cwd: Path, **kwargs: object) -> str:
    result = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        **kwargs,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_installed_plugin_is_listed_and_resolvable(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    python = env_dir / "bin" / "python"
    # Reuse this interpreter's installed packages (dask, numpy, ...) through a .pth
    # file, then install the project and the plugin the way a user would.
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        tmp_path,
    ).strip()
    parent_site = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "parent.pth").write_text("\n".join(parent_site) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "0"}
    _run([*pip, "--no-deps", "--no-build-isolation", str(ROOT)], tmp_path, env=env)
    _run([*pip, "--no-deps", str(EXAMPLE)], tmp_path, env=env)

    sage = env_dir / "bin" / "sage"
    rows = json.loads(_run([str(sage), "plugins"], tmp_path))
    ours = {(r["kind"], r["name"]): r for r in rows if r["plugin"] == "example"}
    assert set(ours) == {("operator", "text-stats"), ("router", "primary-backup")}
    assert {r["distribution"] for r in ours.values()} == {"sage-example-plugin"}
    assert {r["version"] for r in ours.values()} == {"0.1.0"}

    code = (
        "from sage_core import plugins; "
        "op = plugins.get('operator', 'text-stats')(); "
        "print(op.map('two words'))"
    )
    out = _run([str(python), "-c", code], tmp_path)
    assert out.strip() == "{'text': 'two words', 'words': 2, 'chars': 9}"
