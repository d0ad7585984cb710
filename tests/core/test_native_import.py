"""A script run from a source checkout without a built extension is told why."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import sage_core
from sage_core.common.native_import import has_extension, missing_native_message

INSTALLED = Path(sage_core.__file__).parent


def _fake_checkout(root: Path) -> Path:
    """A source tree: pyproject.toml and the sage_core sources, no compiled module."""
    shutil.copytree(
        INSTALLED,
        root / "sage_core",
        ignore=shutil.ignore_patterns("_native*.so", "_native*.pyd", "__pycache__"),
    )
    (root / "pyproject.toml").write_text('[project]\nname = "sage-dask"\n')
    return root / "sage_core"


def test_script_in_a_source_checkout_says_the_tree_shadows_the_install(
    tmp_path: Path,
) -> None:
    assert has_extension(INSTALLED)
    _fake_checkout(tmp_path)
    script = tmp_path / "my_pipeline.py"
    script.write_text(
        "from sage_core import LocalEnvironment\n"
        "env = LocalEnvironment('x')\n"
        "env.from_collection([1]).collect()\n"
        "env.execute()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"imported from the source tree {tmp_path.resolve()}" in last
    assert f"shadows the installed sage-dask in {INSTALLED}" in last
    assert "Run the script from another directory" in last
    assert "pip install --no-build-isolation -ve" in last


def test_unbuilt_checkout_without_an_install_is_told_to_build(tmp_path: Path) -> None:
    package = _fake_checkout(tmp_path)
    message = missing_native_message(package, None)
    assert "where the C++ extension is not built" in message
    assert f"pip install --no-build-isolation -ve {tmp_path.resolve()}" in message


def test_installed_package_without_extension_is_told_to_reinstall(
    tmp_path: Path,
) -> None:
    package = tmp_path / "site-packages" / "sage_core"
    package.mkdir(parents=True)
    message = missing_native_message(package, package, "No module named x")
    assert "missing or stale" in message and "reinstall" in message
    assert "No module named x" in message
