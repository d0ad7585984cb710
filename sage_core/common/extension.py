"""The one place that loads the compiled extension ``sage_core._native``.

``sage_core.channels`` and ``sage_core.vector_index.native`` wrap it; nothing else
touches the extension directly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sage_core.common.native_import import native_import_error

__all__ = ["load_extension"]


def load_extension() -> ModuleType:
    """Import ``sage_core._native`` (by name: import-linter cannot see compiled modules).

    Raises:
        ImportError: the extension is missing or stale; the message says why (a
            source checkout shadowing the installed package, an unbuilt checkout)
            and how to fix it.
    """
    try:
        return importlib.import_module("sage_core._native")
    except ImportError as exc:  # a broken install, or a source tree shadowing one
        raise native_import_error(exc) from exc
