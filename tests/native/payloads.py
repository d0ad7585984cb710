"""Building checksum-valid but malicious native index payloads, and SAGE index files
that carry them (the file layer's checksum recomputed, so only the native loader's
own validation stands between the bytes and the index)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

_MASK = 2**64 - 1
_K = 0xFF51AFD7ED558CCD


def checksum64(data: bytes) -> int:
    """The native format's checksum (native/include/sage/serialize.hpp)."""
    h = [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5]
    full = len(data) - len(data) % 32
    words = struct.unpack_from(f"<{full // 8}Q", data)
    for j in range(0, len(words), 4):
        for lane in range(4):
            x = ((h[lane] ^ words[j + lane]) * _K) & _MASK
            h[lane] = x ^ (x >> 29)
    t = len(data)
    for c in data[full:]:
        t = ((t ^ c) * 0x100000001B3) & _MASK
    r = t
    for lane in range(4):
        r = ((r ^ h[lane]) * _K) & _MASK
        r ^= r >> 33
    return r


def reseal(body: bytes) -> bytes:
    """``body`` (everything before the checksum) with a valid checksum appended."""
    return body + struct.pack("<Q", checksum64(body))


@dataclass(frozen=True)
class Field:
    """One field of a payload: its name, byte offset and struct format."""

    name: str
    offset: int
    fmt: str  # "<I", "<Q" or "<f"


def _section(fields: list[Field], body: bytes, pos: int, name: str, item: str) -> int:
    """Records a length-prefixed array section (its count, its first item); returns
    the offset after it."""
    (count,) = struct.unpack_from("<Q", body, pos)
    fields.append(Field(f"{name}.count", pos, "<Q"))
    size = struct.calcsize(item)
    if count:
        fields.append(Field(f"{name}[0]", pos + 8, item))
    if count > 1:
        fields.append(Field(f"{name}[1]", pos + 8 + size, item))
    return pos + 8 + count * size


def fields_of(payload: bytes) -> list[Field]:
    """Every header field and section of a native FlatIndex/IVFIndex payload."""
    body = payload[:-8]
    (kind,) = struct.unpack_from("<I", body, 12)
    fields = [Field("version", 8, "<I"), Field("kind", 12, "<I")]
    fields += [Field("metric", 16, "<I"), Field("dim", 20, "<Q")]
    if kind == 1:
        fields.append(Field("n", 28, "<Q"))
        pos = _section(fields, body, 36, "ids", "<Q")
        _section(fields, body, pos, "vectors", "<f")
        return fields
    names = ("nlist", "nprobe", "train_iters", "max_train", "seed")
    fields += [Field(name, 28 + 8 * i, "<Q") for i, name in enumerate(names)]
    fields.append(Field("trained", 68, "<I"))
    (trained,) = struct.unpack_from("<I", body, 68)
    if not trained:
        return fields
    (nlist,) = struct.unpack_from("<Q", body, 28)
    pos = _section(fields, body, 72, "centroids", "<f")
    for lst in range(nlist):
        fields.append(Field(f"list{lst}.n", pos, "<Q"))
        pos = _section(fields, body, pos + 8, f"list{lst}.ids", "<Q")
        pos = _section(fields, body, pos, f"list{lst}.vectors", "<f")
    return fields


def mutate(payload: bytes, field: Field, value: float) -> bytes:
    """``payload`` with ``field`` set to ``value``, checksum recomputed."""
    body = bytearray(payload[:-8])
    struct.pack_into(field.fmt, body, field.offset, value)
    return reseal(bytes(body))


def read_sage_file(path: Path) -> tuple[dict[str, object], bytes]:
    """The JSON header and the payload of a saved SAGE index file."""
    raw = path.read_bytes()
    (head_len,) = struct.unpack_from("<I", raw, 12)
    return json.loads(raw[16 : 16 + head_len]), raw[16 + head_len :]


def write_sage_file(path: Path, header: dict[str, object], payload: bytes) -> None:
    """A SAGE index file holding ``payload``, its size and digest in the header."""
    head = dict(header)
    head["payload_bytes"] = len(payload)
    head["payload_blake2b"] = hashlib.blake2b(payload, digest_size=16).hexdigest()
    text = json.dumps(head, sort_keys=True).encode()
    path.write_bytes(b"SAGEVIF\n" + struct.pack("<II", 1, len(text)) + text + payload)
