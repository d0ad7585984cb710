"""SAGE native core: stable hashing, bounded queues and vector indexes."""

def hash64(data: bytes, seed: int = 0) -> int:
    """
    Stable 64-bit hash of a byte string (FNV-1a + splitmix64 finaliser).

    The value is identical across processes, runs and platforms, unlike Python's
    salted ``hash()``; it is what key-based routing partitions by.
    """

def build_info() -> dict:
    """
    Compiler, target instruction set and version the extension was built with.
    """
