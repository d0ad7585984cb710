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
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    # The fresh environment sees the project under test (and its dependencies)
    # through a .pth file; the plugin is pip-installed into it as a user would.
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        tmp_path,
    ).strip()
    parent_site = [p for p in sys.path if p.endswith("site-packages")]
    # addsitedir (not a bare path) so .pth files there, e.g. editable installs, apply
    Path(site, "parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parent_site)
    )
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(EXAMPLE)],
        tmp_path,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )

    sage = [str(python), "-c", "from sage_core.cli import main; main()"]
    rows = json.loads(_run([*sage, "plugins"], tmp_path))
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

    # the installed operator is usable by name in a pipeline, from a spec and the CLI
    (tmp_path / "lines.txt").write_text("two words\nthree more words\n")
    spec = tmp_path / "stats.yaml"
    spec.write_text(
        "name: stats\n"
        "operators:\n"
        "  - {name: read, use: text-lines, config: {path: lines.txt}}\n"
        "  - {name: stats, use: text-stats, parallelism: 2, inputs: [read]}\n"
        "  - {name: out, use: collect, inputs: [stats]}\n"
    )
    plan = json.loads(_run([*sage, "plan", str(spec), "--json"], tmp_path))
    stats_op = next(op for op in plan["operators"] if op["name"] == "stats")
    assert stats_op["ref"] == {"kind": "plugin", "name": "text-stats"}
    lines = _run([*sage, "run", str(spec)], tmp_path).splitlines()
    got = sorted((row["text"], row["words"]) for row in map(json.loads, lines))
    assert got == [("three more words", 3), ("two words", 2)]
