"""Why ``sage_core._native`` did not import, in words a user can act on.

The usual cause for a newcomer: a script saved in (or run from) the repository root
imports ``sage_core`` from the source tree, which Python finds first on ``sys.path``,
instead of the installed package; the source tree has no compiled extension. The
message says so, names both places and how to fix it.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "sage-dask"


def has_extension(package_dir: Path) -> bool:
    """Whether ``package_dir`` holds a compiled ``_native`` module."""
    return any(
        p.suffix in (".so", ".pyd") for p in package_dir.glob("_native*") if p.is_file()
    )


def installed_package_dir() -> Path | None:
    """The ``sage_core`` directory of the installed distribution, if there is one."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file("sage_core/__init__.py"))).parent


def missing_native_message(
    package_dir: Path, installed_dir: Path | None, cause: str = ""
) -> str:
    """The explanation for an ImportError of ``sage_core._native``.

    Args:
        package_dir: the directory of the ``sage_core`` that was imported.
        installed_dir: the installed distribution's ``sage_core`` (None if none).
        cause: the original ImportError's text.
    """
    root = package_dir.resolve().parent
    in_source_tree = (root / "pyproject.toml").is_file()
    why = f" ({cause})" if cause else ""
    if in_source_tree and not has_extension(package_dir):
        if (
            installed_dir is not None
            and installed_dir.resolve() != package_dir.resolve()
            and has_extension(installed_dir)
        ):
            return (
                f"sage_core was imported from the source tree {root}, which shadows "
                f"the installed sage-dask in {installed_dir}: Python looks in the "
                f"script's directory (or the current one) first, and the source "
                f"tree has no built C++ extension{why}. Run the script from another "
                f"directory, or install the source tree in editable mode: "
                f"pip install --no-build-isolation -ve {root}"
            )
        return (
            f"sage_core was imported from the source tree {root}, where the C++ "
            f"extension is not built{why}. Build it with "
            f"`pip install --no-build-isolation -ve {root}` (needs nanobind and "
            f"scikit-build-core)."
        )
    return (
        f"sage_core._native is missing or stale in {package_dir}{why}: the C++ "
        f"extension was not built. Rebuild it with `pip install "
        f"--no-build-isolation -ve .` from the source tree (needs nanobind and "
        f"scikit-build-core), or reinstall the package."
    )


def native_import_error(exc: ImportError) -> ImportError:
    """The ImportError to raise (``from exc``) when ``sage_core._native`` fails to
    import, explaining why for the ``sage_core`` that is imported."""
    package_file = sys.modules["sage_core"].__file__ or ""
    return ImportError(
        missing_native_message(
            Path(package_file).parent, installed_package_dir(), str(exc)
        )
    )
