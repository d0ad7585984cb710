"""Saved indexes are untrusted input: forged files give named errors, never crashes.

Each forged file is checksum-valid (the checksum is recomputed), so only the field
checks stand between it and the libraries. Loads run in a child process, many files
per child; a child that dies or hangs names the file it was loading.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core.vector_index import (
    FILE_MAGIC,
    IndexFormatError,
    UntrustedIndexError,
    create_index,
    load_index,
    read_index_header,
)

pytestmark = pytest.mark.native

# Loads each file named on stdin, then searches, adds and re-saves what opened.
CHILD = r"""
import json, sys
import numpy as np
from sage_core.common.errors import SageError
from sage_core.vector_index import load_index

for tag, path, trusted in json.load(sys.stdin):
    print("START", tag, flush=True)
    try:
        index = load_index(path, trusted=trusted)
    except SageError as exc:
        print("RESULT", tag, type(exc).__name__, flush=True)
        continue
    except Exception as exc:
        print("RESULT", tag, "UNNAMED:" + type(exc).__name__ + ":" + str(exc)[:200],
              flush=True)
        continue
    try:
        q = np.ones((2, index.dim), np.float32)
        index.search(q, 3)
        index.add([2**40 + 1], np.full((1, index.dim), 0.5, np.float32))
        index.search(q, 5)
        index.save(path + ".again")
        load_index(path + ".again", trusted=trusted)
        print("RESULT", tag, "ok", flush=True)
    except SageError as exc:
        print("RESULT", tag, "ok+" + type(exc).__name__, flush=True)
    except Exception as exc:
        print("RESULT", tag, "UNNAMED:" + type(exc).__name__ + ":" + str(exc)[:200],
              flush=True)
"""


def load_in_children(
    cases: list[tuple[str, Path, bool]], cwd: Path, timeout: float = 120
) -> dict[str, str]:
    """Outcome per tag: an error class name, ``ok``, ``crash:<rc>`` or ``hang``."""
    results: dict[str, str] = {}
    pending = list(cases)
    while pending:
        started: list[str] = []
        try:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD],
                input=json.dumps([(t, str(p), trusted) for t, p, trusted in pending]),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=cwd,  # not the source tree: the installed package is tested
            )
            out, failure = proc.stdout, f"crash:{proc.returncode}"
        except subprocess.TimeoutExpired as exc:
            raw = exc.stdout or b""
            out = raw.decode() if isinstance(raw, bytes) else raw
            failure = "hang"
        for line in out.splitlines():
            kind, tag, *rest = line.split(" ", 2)
            if kind == "START":
                started.append(tag)
            elif kind == "RESULT":
                results[tag] = rest[0]
        done = {t for t in started if t in results}
        unfinished = [t for t in started if t not in results]
        if unfinished:
            results[unfinished[0]] = failure
            done.add(unfinished[0])
        elif len(done) < len(pending):  # died before starting the next file
            results[pending[len(done)][0]] = failure
            done.add(pending[len(done)][0])
        pending = [c for c in pending if c[0] not in done]
    return results


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (head_len,) = struct.unpack_from("<I", raw, len(FILE_MAGIC) + 4)
    start = len(FILE_MAGIC) + 8
    return json.loads(raw[start : start + head_len]), raw[start + head_len :]


def forge(path: Path, header: dict[str, Any], payload: bytes) -> Path:
    """Write ``header`` + ``payload`` with a matching size and checksum."""
    header = {
        **header,
        "payload_bytes": len(payload),
        "payload_blake2b": hashlib.blake2b(payload, digest_size=16).hexdigest(),
    }
    head = json.dumps(header).encode()
    path.write_bytes(FILE_MAGIC + struct.pack("<II", 1, len(head)) + head + payload)
    return path


def saved(tmp_path: Path, backend: str, n: int = 60, dim: int = 6) -> Path:
    opts = {"nlist": 4} if backend == "native-ivf" else {}
    index = create_index(backend, dim=dim, metric="l2", **opts)
    x = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    index.add(np.arange(n), x)
    index.remove([3, 7])
    path = tmp_path / f"{backend}.sidx"
    index.save(path)
    return path


def assert_no_crash(results: dict[str, str]) -> None:
    bad = {
        t: r
        for t, r in results.items()
        if r in ("hang",) or r.startswith(("crash", "UNNAMED"))
    }
    assert not bad, bad


# --- the SAGE header -------------------------------------------------------------

HOSTILE_FIELDS: dict[str, list[Any]] = {
    "backend": ["", "../x", 5, None, "native-flat", "hnswlib", "usearch", "Nope"],
    "dim": [0, -1, 5, 7, 2**40, "6", True, 6.0, None],
    "metric": ["x", "ip", "cos", None, 1],
    "count": [-1, 0, 57, 59, 2**64, "58", None, 58.5],
    "options": [None, [], {"threads": 2**31}, {"threads": -1}, {"M": 1}, {"nope": 1},
                {"M": 10**6}, {"ef": 0}, {"threads": "2"}, {"seed": -5}],
}  # fmt: skip


@pytest.mark.parametrize("backend", ["native-flat", "native-ivf", "hnswlib"])
def test_every_hostile_header_field_is_a_named_error(
    tmp_path: Path, backend: str
) -> None:
    header, payload = split(saved(tmp_path, backend))
    cases = []
    for field, values in HOSTILE_FIELDS.items():
        for n, value in enumerate(values):
            if header.get(field) == value and type(header.get(field)) is type(value):
                continue  # not a change
            forged = {**header, field: value}
            tag = f"{field}-{n}"
            cases.append((tag, forge(tmp_path / tag, forged, payload), False))
    cases.append(("extra", forge(tmp_path / "x", {**header, "x": 1}, payload), False))
    missing = {k: v for k, v in header.items() if k != "count"}
    cases.append(("missing", forge(tmp_path / "m", missing, payload), False))
    results = load_in_children(cases, tmp_path)
    assert_no_crash(results)
    opened = {t: r for t, r in results.items() if r.startswith("ok")}
    # only a metric the payload does not record may change (hnswlib stores none)
    assert all(t.startswith("metric") for t in opened) or not opened, opened
    if backend != "hnswlib":
        assert not opened, opened


def test_header_length_and_version_are_bounded_before_reading(tmp_path: Path) -> None:
    path = saved(tmp_path, "native-flat")
    raw = bytearray(path.read_bytes())
    for version, head_len, match in [
        (1, 2**32 - 1, "damaged header"),
        (1, 1 << 21, "damaged header"),
        (0, 10, "damaged header"),
        (1, len(raw), "truncated inside its header"),
    ]:
        struct.pack_into("<II", raw, len(FILE_MAGIC), version, head_len)
        path.write_bytes(bytes(raw))
        with pytest.raises(IndexFormatError, match=match):
            read_index_header(path)
        with pytest.raises(IndexFormatError, match=match):
            load_index(path)


def test_payload_size_is_checked_before_reading(tmp_path: Path) -> None:
    path = saved(tmp_path, "native-flat")
    header, payload = split(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IndexFormatError, match="truncated or padded"):
        load_index(path)
    for size in (2**62, len(payload) + 1, len(payload) - 1):  # 2**62: never allocated
        head = json.dumps({**header, "payload_bytes": size}).encode()
        path.write_bytes(FILE_MAGIC + struct.pack("<II", 1, len(head)) + head + payload)
        with pytest.raises(IndexFormatError, match=f"header says {size}"):
            load_index(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def flat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved(tmp_path_factory.mktemp("flat"), "native-flat", n=10)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(HOSTILE_FIELDS)), value=JSON)
def test_any_json_in_a_header_field_is_checked(
    flat_file: Path, field: str, value: Any
) -> None:
    header, payload = split(flat_file)
    path = forge(flat_file.with_name("h.sidx"), {**header, field: value}, payload)
    try:
        got = read_index_header(path)
    except IndexFormatError:
        return
    assert isinstance(got["dim"], int) and 1 <= got["dim"] <= 1 << 16
    assert got["metric"] in ("ip", "l2", "cos") and isinstance(got["options"], dict)
    assert isinstance(got["count"], int) and got["count"] >= 0
    assert isinstance(got["backend"], str)


# --- hnswlib's own header and records ----------------------------------------------

HNSW_FIELDS = ["offsetLevel0", "max_elements", "cur_element_count",
               "size_data_per_element", "label_offset", "offsetData", "maxlevel",
               "enterpoint_node", "maxM", "maxM0", "M", "mult", "ef_construction"]  # fmt: skip
HNSW_HEAD = struct.Struct("<QQQQQQiIQQQdQ")


def hnsw_values(field: str, value: Any) -> list[Any]:
    if field == "mult":
        return [0.0, -1.0, math.inf, math.nan, 1e300, value * 1.001]
    if field == "maxlevel":
        return [-2, -1, 0, value + 1, 2**31 - 1]
    if field == "enterpoint_node":  # nodes that do not exist
        return [60, 61, 2**31, 2**32 - 1]
    return [0, 1, value - 1, value + 1, value * 2, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


def test_every_hnswlib_header_field_is_checked(tmp_path: Path) -> None:
    header, payload = split(saved(tmp_path, "hnswlib"))
    (n,) = struct.unpack_from("<Q", payload)
    blob_at = 8 + 8 * n
    fields = list(HNSW_HEAD.unpack_from(payload, blob_at))
    cases = []
    for i, name in enumerate(HNSW_FIELDS):
        for j, value in enumerate(hnsw_values(name, fields[i])):
            if value == fields[i] or (name != "mult" and not 0 <= value < 2**64):
                continue
            if name == "maxlevel" and not -(2**31) <= value < 2**31:
                continue
            changed = list(fields)
            changed[i] = value
            forged = bytearray(payload)
            HNSW_HEAD.pack_into(forged, blob_at, *changed)
            tag = f"{name}-{j}"
            cases.append((tag, forge(tmp_path / tag, header, bytes(forged)), False))
    results = load_in_children(cases, tmp_path)
    assert_no_crash(results)
    opened = {t: r for t, r in results.items() if r.startswith("ok")}
    # a larger max_elements only sizes spare slots, which the loader ignores
    assert all(t.startswith("max_elements") for t in opened), opened
    assert results["max_elements-0"] == "IndexFormatError"  # fewer slots than nodes


def test_hnswlib_records_and_link_lists_survive_byte_changes(tmp_path: Path) -> None:
    header, payload = split(saved(tmp_path, "hnswlib", n=120))
    rng = np.random.default_rng(7)
    cases = []
    for n, at in enumerate(rng.integers(0, len(payload), 300)):
        forged = bytearray(payload)
        forged[at] ^= int(rng.integers(1, 256))
        tag = f"byte-{n}-{at}"
        cases.append((tag, forge(tmp_path / f"b{n}", header, bytes(forged)), False))
    results = load_in_children(cases, tmp_path)
    assert_no_crash(results)
    # a changed neighbour id may still name a node of the right level: a valid graph
    assert all(r == "IndexFormatError" or r.startswith("ok") for r in results.values())


def test_hnswlib_vectors_must_be_finite(tmp_path: Path) -> None:
    header, payload = split(saved(tmp_path, "hnswlib", n=10, dim=2))
    (n,) = struct.unpack_from("<Q", payload)
    fields = HNSW_HEAD.unpack_from(payload, 8 + 8 * n)
    data_at = 8 + 8 * n + HNSW_HEAD.size + fields[5]  # first record's vector
    forged = bytearray(payload)
    struct.pack_into("<f", forged, data_at, math.nan)
    path = forge(tmp_path / "nan.sidx", header, bytes(forged))
    with pytest.raises(IndexFormatError, match="not finite"):
        load_index(path)


# --- usearch: trusted files only, headers still checked ---------------------------

USEARCH_HEAD = struct.Struct("<7s3H4B3Q?")


def test_usearch_files_need_trust_and_their_headers_are_checked(tmp_path: Path) -> None:
    path = saved(tmp_path, "usearch")
    with pytest.raises(UntrustedIndexError, match="trusted=True"):
        load_index(path)
    assert len(load_index(path, trusted=True)) == 58
    header, payload = split(path)
    rows, cols = struct.unpack_from("<2I", payload)
    head_at = 8 + rows * cols
    fields = list(USEARCH_HEAD.unpack_from(payload, head_at))
    graph_at = head_at + 64
    graph = list(struct.unpack_from("<5Q", payload, graph_at))
    cases = []
    for i, value in enumerate(fields):
        if i in (2, 3):  # minor and patch versions: any 2.x reads the format
            continue
        for j, new in enumerate(
            [b"usearcX"] if i == 0 else [not value] if i == 11 else [0, value + 1, 255]
        ):
            if new == value:
                continue
            changed = list(fields)
            changed[i] = new
            forged = bytearray(payload)
            USEARCH_HEAD.pack_into(forged, head_at, *changed)
            tag = f"head{i}-{j}"
            cases.append((tag, forge(tmp_path / tag, header, bytes(forged)), True))
    for i, value in enumerate(graph):
        for j, new in enumerate([0, value + 1, 2**32, 2**64 - 1]):
            if new == value:
                continue
            changed = list(graph)
            changed[i] = new
            forged = bytearray(payload)
            struct.pack_into("<5Q", forged, graph_at, *changed)
            tag = f"graph{i}-{j}"
            cases.append((tag, forge(tmp_path / tag, header, bytes(forged)), True))
    for j, (r, c) in enumerate([(rows + 1, cols), (rows, cols + 4), (0, cols), (2**32 - 1, 2**32 - 1)]):  # fmt: skip
        forged = bytearray(payload)
        struct.pack_into("<2I", forged, 0, r, c)
        cases.append((f"matrix-{j}", forge(tmp_path / f"m{j}", header, bytes(forged)), True))  # fmt: skip
    results = load_in_children(cases, tmp_path)
    assert_no_crash(results)
    # another entry slot on the top level is a valid graph; nothing else opens
    opened = {t for t, r in results.items() if r != "IndexFormatError"}
    assert all(t.startswith("graph4") for t in opened), results


@pytest.mark.parametrize("case", ["empty", "one", "all-removed", "re-added", "grown"])
def test_files_hnswlib_writes_still_open(tmp_path: Path, case: str) -> None:
    index = create_index("hnswlib", dim=3, metric="cos", capacity=4, M=4)
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    if case != "empty":
        n = 1 if case == "one" else 40  # "grown": past the capacity of 4
        index.add(np.arange(n), x[:n])
    if case in ("all-removed", "re-added"):
        index.remove(np.arange(40))
    if case == "re-added":
        index.add([5, 7], x[:2])
    path = tmp_path / "h.sidx"
    index.save(path)
    again = load_index(path)
    assert len(again) == len(index)
    again.add([1000], x[:1])
    assert again.search(x[:1], 1)[0][0, 0] in (1000, 0)
