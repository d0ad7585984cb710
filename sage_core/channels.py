"""Moving items between replicas: stable key hashing (and the native bounded queues).

This module and ``sage_core.vector_index`` are the only importers of ``_native``.
"""

from __future__ import annotations

import numbers
from typing import Any

try:
    import sage_core._native as _native  # noqa: PLR0402 (mypy resolves the stub this way)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "sage_core._native is missing or stale: the C++ extension was not built. "
        "Rebuild it with `pip install --no-build-isolation -ve .` from the source "
        "tree (needs nanobind and scikit-build-core), or reinstall the package."
    ) from exc

__all__ = ["build_info", "key_bytes", "stable_hash"]

_SUPPORTED = "str, int, float, bytes, bool, None, or tuples of these"


def key_bytes(key: Any) -> bytes:
    """Canonical byte encoding of a routing key.

    Keys that compare equal in Python encode equally (``1``, ``1.0`` and ``True`` are
    one key, as they are one dict key), so keyed state and routing agree.

    Raises:
        TypeError: the key's type has no stable encoding.
    """
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return b"b" + bytes(key)
    if isinstance(key, numbers.Integral):
        return b"i" + str(int(key)).encode()
    if isinstance(key, numbers.Real):
        value = float(key)
        if value.is_integer():
            return b"i" + str(int(value)).encode()
        return b"f" + value.hex().encode()
    if key is None:
        return b"n"
    if isinstance(key, tuple):
        parts = [key_bytes(part) for part in key]
        return b"t" + b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    raise TypeError(
        f"a routing key of type {type(key).__name__} has no stable hash; "
        f"key_by must produce {_SUPPORTED}"
    )


def stable_hash(key: Any, seed: int = 0) -> int:
    """64-bit hash of ``key`` that is the same in every process and run.

    Python's ``hash()`` of str/bytes is salted per process, so it cannot partition
    keys across workers; this can.
    """
    return int(_native.hash64(key_bytes(key), seed))


def build_info() -> dict[str, str]:
    """How the native extension was built (compiler, instruction set, versions)."""
    return dict(_native.build_info())
