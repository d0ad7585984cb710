"""The one place that loads the compiled extension ``sage_core._native``.

``sage_core.channels`` and ``sage_core.vector_index.native`` wrap it; nothing else
touches the extension directly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["load_extension"]


def load_extension() -> ModuleType:
    """Import ``sage_core._native`` (by name: import-linter cannot see compiled modules).

    Raises:
        ImportError: the extension is missing or stale; the message says how to build
            it.
    """
    try:
        return importlib.import_module("sage_core._native")
    except ImportError as exc:
        raise ImportError(
            "sage_core._native is missing or stale: the C++ extension was not "
            "built. Rebuild it with `pip install --no-build-isolation -ve .` from "
            "the source tree (needs nanobind and scikit-build-core), or reinstall "
            "the package."
        ) from exc
