"""Plain-Python reference versions of the native code, for differential tests.

Slow on purpose: clarity over speed. Never used on a hot path.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def mix64(x: int) -> int:
    """splitmix64 finaliser."""
    x &= _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x


def hash64(data: bytes, seed: int = 0) -> int:
    """FNV-1a over ``data`` then splitmix64, exactly as ``native/include/sage/hash.hpp``."""
    h = _FNV_OFFSET ^ mix64(seed)
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & _MASK
    return mix64(h ^ len(data))
