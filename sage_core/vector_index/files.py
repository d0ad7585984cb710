"""The saved-index file: header checks, reading, and opening by backend name.

A saved index is untrusted input (it may come from anyone): every header field is
checked for type and bounds before the payload is read, the payload length and
checksum against the header, and the opened index against the header again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from sage_core import plugins
from sage_core.vector_index.base import (
    FILE_MAGIC,
    FILE_VERSION,
    METRICS,
    IndexFormatError,
    UntrustedIndexError,
    VectorIndex,
    VectorIndexError,
)

#: most bytes a saved index's JSON header may take (read before anything else)
MAX_HEADER_BYTES = 1 << 20
#: widest vector a saved index may declare
MAX_FILE_DIM = 1 << 16
_HEADER_KEYS = frozenset(
    ("backend", "dim", "metric", "count", "options", "payload_bytes", "payload_blake2b")
)
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{32}$")


def open_saved(
    cls: type[VectorIndex], path: str | os.PathLike[str], *, trusted: bool = False
) -> VectorIndex:
    """``cls.load``: read, check and open a file saved by backend ``cls``."""
    header, payload = _read_file(Path(path))
    if header["backend"] != cls.backend:
        raise IndexFormatError(
            f"{path} holds a {header['backend']!r} index, not {cls.backend!r}; "
            f"open it with load_index()"
        )
    if not (cls.validates_files or trusted):
        raise UntrustedIndexError(
            f"{path} is a {cls.backend!r} index, whose loader is not safe on "
            f"hostile files; pass trusted=True only if you made the file or "
            f"trust whoever did"
        )
    _check_options(cls, header, path)
    try:
        index = cls._from_bytes(payload, header)
    except VectorIndexError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, struct.error) as exc:
        raise IndexFormatError(
            f"{path}: the {cls.backend} payload does not match its header ({exc}); "
            f"the file is damaged or forged"
        ) from exc
    for key, value in (
        ("dim", index.dim),
        ("metric", index.metric),
        ("count", len(index)),
    ):
        if header[key] != value:
            raise IndexFormatError(
                f"{path}: the header says {key}={header[key]!r}, the payload "
                f"holds {value!r}; the file is damaged or forged"
            )
    return index


def read_index_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a saved index (backend, dim, metric, count, options).

    Raises:
        IndexFormatError: not an index file, a newer format, or a header field
            out of bounds.
    """
    with open(path, "rb") as f:
        return _parse_head(f.read(len(FILE_MAGIC) + 8), f, Path(path))


def _parse_head(start: bytes, f: Any, path: Path) -> dict[str, Any]:
    if len(start) < len(FILE_MAGIC) + 8 or not start.startswith(FILE_MAGIC):
        raise IndexFormatError(f"{path} is not a SAGE vector index file")
    version, head_len = struct.unpack("<II", start[len(FILE_MAGIC) :])
    if version > FILE_VERSION:
        raise IndexFormatError(
            f"{path} uses index file version {version}; this SAGE reads up to "
            f"{FILE_VERSION} (upgrade sage-dask)"
        )
    if version < 1 or head_len > MAX_HEADER_BYTES:
        raise IndexFormatError(
            f"{path} has a damaged header (version {version}, {head_len} bytes; "
            f"at most {MAX_HEADER_BYTES})"
        )
    raw = f.read(head_len)
    if len(raw) != head_len:
        raise IndexFormatError(f"{path} is truncated inside its header")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise IndexFormatError(f"{path} has a damaged header: {exc}") from None
    problem = _header_problem(header)
    if problem:
        raise IndexFormatError(f"{path} has a damaged header: {problem}")
    return dict(header)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header_problem(header: Any) -> str | None:
    """What is wrong with a parsed header, or None (types and bounds only)."""
    if not isinstance(header, dict):
        return "it is not a JSON object"
    if set(header) != _HEADER_KEYS:
        missing = sorted(_HEADER_KEYS - set(header))
        extra = sorted(set(header) - _HEADER_KEYS)
        return f"missing fields {missing}, unknown fields {extra}"
    backend, options = header["backend"], header["options"]
    checks = (
        (isinstance(backend, str) and _BACKEND_NAME.match(backend), "backend"),
        (_is_int(header["dim"]) and 1 <= header["dim"] <= MAX_FILE_DIM, "dim"),
        (header["metric"] in METRICS, "metric"),
        (_is_int(header["count"]) and header["count"] >= 0, "count"),
        (_is_int(header["payload_bytes"]) and header["payload_bytes"] >= 0, "size"),
        (isinstance(header["payload_blake2b"], str), "payload_blake2b"),
        (isinstance(options, dict), "options"),
    )
    for ok, field in checks:
        if not ok:
            return f"field {field!r} is missing or out of bounds"
    if not _DIGEST.match(header["payload_blake2b"]):
        return "field 'payload_blake2b' is not a 128-bit hex digest"
    for key, value in options.items():
        if not isinstance(value, (bool, int, float, str, type(None))):
            return f"option {key!r} is not a JSON scalar"
    return None


def _check_options(cls: type[VectorIndex], header: dict[str, Any], path: Any) -> None:
    """Options of a saved file within ``cls.file_options`` (when declared)."""
    bounds = cls.file_options
    if bounds is None:
        return
    for key, value in header["options"].items():
        if key not in bounds:
            raise IndexFormatError(
                f"{path}: unknown {cls.backend} option {key!r} (known: "
                f"{', '.join(sorted(bounds))}); the file is damaged or forged"
            )
        low, high = bounds[key]
        if not (_is_int(value) and low <= value <= high):
            raise IndexFormatError(
                f"{path}: {cls.backend} option {key}={value!r} is outside "
                f"[{low}, {high}]; the file is damaged or forged"
            )


def _read_file(path: Path) -> tuple[dict[str, Any], bytes]:
    with open(path, "rb") as f:
        header = _parse_head(f.read(len(FILE_MAGIC) + 8), f, path)
        left = os.fstat(f.fileno()).st_size - f.tell()
        if left != header["payload_bytes"]:  # checked before anything is read
            raise IndexFormatError(
                f"{path} is truncated or padded: payload has {left} bytes, header "
                f"says {header['payload_bytes']}"
            )
        payload = f.read(left)
    if len(payload) != left:
        raise IndexFormatError(f"{path} changed while it was read")
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    if digest != header["payload_blake2b"]:
        raise IndexFormatError(f"{path} is corrupt (payload checksum mismatch)")
    return header, payload


def load_index(path: str | os.PathLike[str], *, trusted: bool = False) -> VectorIndex:
    """Reopen an index saved by any registered backend (named in the file).

    A saved index is untrusted input: the header is checked field by field and
    against the payload, and the native (``native-flat``, ``native-ivf``) and
    ``hnswlib`` backends check their payload before a library reads it, so a
    hostile file raises
    ``IndexFormatError``. ``usearch`` (and any plugin backend that does not set
    ``validates_files``) hands the payload to a library loader that trusts it:
    such files open only with ``trusted=True``; pass it only for files you made
    or whose source you trust.

    Raises:
        IndexFormatError: corrupt, truncated, foreign or forged file.
        UntrustedIndexError: the backend's loader needs ``trusted=True``.
        UnknownPluginError: the file names a backend that is not installed.
    """
    header = read_index_header(path)
    cls = plugins.get("vector-index", header["backend"])
    index: VectorIndex = cls.load(path, trusted=trusted)
    return index
