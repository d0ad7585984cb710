"""Child-process driver for the malicious index file tests (run by
test_index_files.py): writes SAGE index files whose native payload has one field
changed, opens each with ``load_index`` and prints one JSON line per case.

A case that crashes or hangs the loader, or raises anything but IndexFormatError,
ends this process (a watchdog dumps the stack of a hang), which the parent reports
with the case that was running.
"""

from __future__ import annotations

import faulthandler
import json
import math
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import payloads

from sage_core.vector_index import FlatIndex, IndexFormatError, IVFIndex, load_index

BIG = 2**64 - 1
MAX_DIM, MAX_NLIST, MAX_ITERS = 2**20, 2**20, 1000


def originals(tmp: Path) -> dict[str, Path]:
    """Saved indexes of every native layout: flat and IVF (trained or not)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    out = {}
    for metric in ("cos", "l2"):
        flat = FlatIndex(4, metric)
        flat.add(np.arange(5) + 10, x[:5])
        ivf = IVFIndex(4, metric, nlist=4, nprobe=2, train_iters=3)
        ivf.add(np.arange(40) + 100, x)
        for name, index in ((f"flat-{metric}", flat), (f"ivf-{metric}", ivf)):
            out[name] = tmp / f"{name}.bin"
            index.save(out[name])
    untrained = IVFIndex(4, "ip", nlist=4, train_iters=3)
    out["ivf-untrained"] = tmp / "ivf-untrained.bin"
    untrained.save(out["ivf-untrained"])
    return out


def bad_values(name: str, old: float, payload: bytes) -> list[float]:
    """Values of field ``name`` that the loader must refuse (given its old value)."""
    ints = {
        "version": [0, 2, 2**32 - 1],
        "kind": [0, 3, 2 if old == 1 else 1],
        "metric": [3, 2**32 - 1],
        "dim": [0, MAX_DIM + 1, BIG, old + 1, old - 1],
        "n": [old + 1, old - 1, 2**32, BIG],
        "nlist": [MAX_NLIST + 1, BIG],
        "nprobe": [0, MAX_NLIST + 1, BIG],
        "train_iters": [0, MAX_ITERS + 1, 2**63, BIG],
        "trained": [2, 2**32 - 1, 1 - old],
    }
    key = name.split(".")[-1] if "." in name else name
    trained = struct.unpack_from("<I", payload, 12)[0] == 2 and payload[68] == 1
    if name == "nlist" and trained:  # the centroids and lists follow from nlist
        return [0, old + 1, *ints[name]]
    if name in ints:
        return [v for v in ints[name] if v >= 0]
    if key == "count" or key == "n":
        return [old + 1, 2**32, BIG]
    if "vectors[" in name or "centroids[" in name:
        cos = struct.unpack_from("<I", payload, 16)[0] == 2
        return [math.nan, math.inf, -math.inf] + ([3.0] if cos else [])
    if name.startswith("ids[") or ".ids[" in name:
        return [BIG]
    return []


def cases(files: dict[str, Path]) -> Iterator[tuple[str, Path, bytes, dict, bool]]:
    """(case name, source file, payload, header, must_fail) for every mutation."""
    for label, path in files.items():
        header, payload = payloads.read_sage_file(path)
        yield f"{label}/unchanged", path, payload, header, False
        fields = payloads.fields_of(payload)
        for field in fields:
            (old,) = struct.unpack_from(field.fmt, payload, field.offset)
            for value in bad_values(field.name, old, payload):
                bad = payloads.mutate(payload, field, value)
                yield f"{label}/{field.name}={value!r}", path, bad, header, True
            if field.name in ("seed", "max_train"):
                ok = payloads.mutate(payload, field, 2**64 - 1)
                yield f"{label}/{field.name}=max", path, ok, header, False
        # an id repeated (in one section, across IVF lists), bytes after the end
        by_name = {f.name: f for f in fields}
        firsts = [f for f in fields if f.name == "ids[0]" or f.name.endswith(".ids[0]")]
        pairs = [(firsts[0], by_name.get(firsts[0].name[:-2] + "1]"))] if firsts else []
        if len(firsts) >= 2:
            pairs.append((firsts[0], firsts[1]))
        for a, b in pairs:
            if b is None:
                continue
            (dup,) = struct.unpack_from("<Q", payload, a.offset)
            bad = payloads.mutate(payload, b, dup)
            yield f"{label}/{b.name} repeats {a.name}", path, bad, header, True
        extra = payloads.reseal(payload[:-8] + b"\0\0\0\0")
        yield f"{label}/trailing bytes", path, extra, header, True


def exercise(index: FlatIndex | IVFIndex) -> None:
    """What a user does next with a loaded index: add (which may train), search."""
    rng = np.random.default_rng(1)
    index.add(np.arange(64) + 10_000, rng.standard_normal((64, index.dim)))
    index.search(rng.standard_normal((3, index.dim)), 5)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = originals(root)
        for n, (name, _, payload, header, must_fail) in enumerate(cases(files)):
            print(f"case {name}", file=sys.stderr, flush=True)
            faulthandler.dump_traceback_later(30, exit=True)
            target = root / f"case-{n}.bin"
            payloads.write_sage_file(target, header, payload)
            try:
                index = load_index(target)
                exercise(index)  # type: ignore[arg-type]
                outcome = "ok"
            except IndexFormatError as exc:
                outcome = f"IndexFormatError: {exc}"
            faulthandler.cancel_dump_traceback_later()
            line = {"case": name, "must_fail": must_fail, "outcome": outcome}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
