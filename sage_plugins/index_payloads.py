"""Checks of hnswlib and usearch payloads before the libraries read them.

A saved index may come from anyone, and both libraries trust the bytes they load:
hnswlib indexes its arrays with the counts and offsets of its header, so one changed
field makes it read or write out of bounds. The checks here parse each format in
Python and compare every field with the SAGE header (dim, count, options) and with
the payload length.

* hnswlib (format of hnswlib 0.8): the whole file is checked — header, level-0
  records (neighbour counts and ids, deletion marks, finite vectors, unique labels
  that match the live ids) and the upper-level link lists (sizes, counts, ids, and
  that a neighbour at level l lives on level l) — so a file that passes is one
  hnswlib itself could have written, and files from anyone may be loaded.
* usearch: the header, the vector matrix and the graph header are checked, but the
  per-node records (neighbour lists) are read by usearch unchecked and the format
  is internal to usearch, so usearch files must be trusted (see ``load_index``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from sage_core.vector_index import MISSING_ID, IndexFormatError

#: most threads an index may be configured (or a saved file may ask) to use
MAX_THREADS = 1024
#: bounds of candidate-list sizes (ef, expansion)
SEARCH_WIDTH = (1, 1 << 20)


def check_options(
    backend: str, bounds: dict[str, tuple[int, int]], **values: Any
) -> None:
    """Constructor options within the bounds a saved file is checked against."""
    for key, value in values.items():
        low, high = bounds[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not low <= value <= high
        ):
            raise ValueError(
                f"{backend}: {key} must be an integer in [{low}, {high}], not {value!r}"
            )


def pack_live(ids: npt.NDArray[np.uint64], blob: bytes) -> bytes:
    """The live ids (count + uint64 each) followed by a library's file."""
    return struct.pack("<Q", len(ids)) + ids.astype("<u8").tobytes() + blob


def unpack_live(payload: bytes) -> tuple[npt.NDArray[np.uint64], bytes]:
    """Inverse of ``pack_live``."""
    if len(payload) < 8:
        raise IndexFormatError("index payload is truncated")
    (n,) = struct.unpack_from("<Q", payload)
    if 8 + 8 * n > len(payload):
        raise IndexFormatError("index payload is truncated")
    ids = np.frombuffer(payload, dtype="<u8", count=n, offset=8).astype(np.uint64)
    return ids, payload[8 + 8 * n :]


#: hnswlib's header: offsetLevel0, max_elements, cur_element_count,
#: size_data_per_element, label_offset, offsetData, maxlevel, enterpoint_node,
#: maxM, maxM0, M, mult, ef_construction
HNSW_HEAD = struct.Struct("<QQQQQQiIQQQdQ")
HNSW_MAX_M = 10_000  # hnswlib clamps M to this
_NO_NODE = 0xFFFFFFFF  # hnswlib's tableint -1: no entry point yet
_FLOAT = 4  # bytes of a float32 and of a hnswlib neighbour id / list header


def _fail(what: str) -> IndexFormatError:
    return IndexFormatError(f"hnswlib payload: {what}; the file is damaged or forged")


def check_hnswlib(
    blob: bytes,
    *,
    dim: int,
    live: npt.NDArray[np.uint64],
    options: dict[str, Any],
) -> int:
    """Check a hnswlib ``saveIndex`` file against the SAGE header.

    Args:
        blob: the hnswlib file.
        dim: the header's vector dimension.
        live: the live (not deleted) ids stored beside the blob.
        options: the header's options (``M``, ``ef_construction``).

    Returns:
        The element count to pass as ``max_elements`` to hnswlib's loader (so the
        file's own ``max_elements`` field never sizes an allocation).

    Raises:
        IndexFormatError: any field out of bounds or inconsistent.
    """
    if len(blob) < HNSW_HEAD.size:
        raise _fail("shorter than its header")
    (off0, max_el, cur, per, label_off, data_off, maxlevel, enter, max_m, max_m0, m,
     mult, efc) = HNSW_HEAD.unpack_from(blob)  # fmt: skip
    want_m = options.get("M", 16)
    if not (2 <= m <= HNSW_MAX_M) or m != want_m or max_m != m or max_m0 != 2 * m:
        raise _fail(f"M={m}, maxM={max_m}, maxM0={max_m0} (the header says M={want_m})")
    if not (math.isfinite(mult) and math.isclose(mult, 1 / math.log(m), rel_tol=1e-9)):
        raise _fail(f"mult={mult} is not 1/ln(M)")
    if efc != max(int(options.get("ef_construction", 200)), m):
        raise _fail(f"ef_construction={efc} differs from the header's")
    link0 = max_m0 * _FLOAT + _FLOAT
    if (off0, data_off, label_off, per) != (
        0,
        link0,
        link0 + dim * _FLOAT,
        link0 + dim * _FLOAT + 8,
    ):
        raise _fail(
            f"record layout ({off0}, {data_off}, {label_off}, {per}) is not dim={dim}"
        )
    if not (len(live) <= cur <= max_el < _NO_NODE):
        raise _fail(f"{cur} elements of {max_el} slots for {len(live)} live ids")
    level0_end = HNSW_HEAD.size + cur * per
    if level0_end > len(blob):
        raise _fail(f"{cur} records do not fit in {len(blob)} bytes")
    record = np.dtype(
        [("count", "<u2"), ("deleted", "u1"), ("unused", "u1"),
         ("ids", "<u4", (max_m0,)), ("vector", "<f4", (dim,)), ("label", "<u8")]
    )  # fmt: skip
    records = np.frombuffer(blob, record, count=cur, offset=HNSW_HEAD.size)
    _check_level0(records, cur=cur, max_m0=max_m0, live=live)
    levels = _check_upper_levels(blob, level0_end, cur=cur, max_m=max_m)
    if cur == 0:
        if (maxlevel, enter) != (-1, _NO_NODE):
            raise _fail(f"an empty graph with entry point {enter} at level {maxlevel}")
    elif enter >= cur or maxlevel != levels[enter]:
        raise _fail(f"entry point {enter} at level {maxlevel} is not a graph node")
    return max(cur, 1)


def _check_level0(
    records: npt.NDArray[np.void],
    *,
    cur: int,
    max_m0: int,
    live: npt.NDArray[np.uint64],
) -> None:
    """Neighbour lists, deletion marks, vectors and labels of the level-0 records."""
    counts = records["count"]
    if (counts > max_m0).any() or (records["deleted"] > 1).any():
        raise _fail("a level-0 list header is out of bounds")
    if records["unused"].any():
        raise _fail("a level-0 list header is out of bounds")
    used = np.arange(max_m0)[None, :] < counts[:, None]
    if (records["ids"][used] >= cur).any():
        raise _fail("a level-0 neighbour is not a graph node")
    if not np.isfinite(records["vector"]).all():
        raise _fail("a stored vector is not finite")
    labels = records["label"]
    ordered = np.sort(labels)
    if (ordered[1:] == ordered[:-1]).any() or (labels == np.uint64(MISSING_ID)).any():
        raise _fail("labels repeat or use the reserved id")
    present = np.sort(labels[records["deleted"] == 0])
    if not np.array_equal(present, np.sort(live)):
        raise _fail("the live ids are not the graph's undeleted labels")


def _check_upper_levels(
    blob: bytes, offset: int, *, cur: int, max_m: int
) -> npt.NDArray[np.int64]:
    """Walk the per-element link lists; return each element's top level."""
    block = max_m * _FLOAT + _FLOAT
    if (len(blob) - offset) % _FLOAT:
        raise _fail("the link lists do not end on a list boundary")
    words = np.frombuffer(blob, "<u4", offset=offset)
    nonzero = np.flatnonzero(words)  # list sizes and list contents
    levels = np.zeros(cur, dtype=np.int64)
    starts: list[int] = []  # where each (element, level >= 1) list begins
    need: list[int] = []  # its level: every neighbour must reach it
    pos = i = 0  # word position, element
    while i < cur:  # skip runs of empty lists (most elements) at once
        k = int(np.searchsorted(nonzero, pos))
        skip = min((int(nonzero[k]) if k < len(nonzero) else len(words)) - pos, cur - i)
        i, pos = i + skip, pos + skip
        if i == cur:
            break
        if pos >= len(words):
            raise _fail("the link lists are truncated")
        size = int(words[pos])
        pos += 1
        if size % block or pos + size // _FLOAT > len(words):
            raise _fail(f"element {i} has a link list of {size} bytes")
        levels[i] = size // block
        start = offset + pos * _FLOAT
        starts.extend(range(start, start + size, block))
        need.extend(range(1, levels[i] + 1))
        pos += size // _FLOAT
        i += 1
    if pos != len(words):
        raise _fail(f"{(len(words) - pos) * _FLOAT} bytes follow the link lists")
    lists = np.dtype([("count", "<u2"), ("unused", "<u2"), ("ids", "<u4", (max_m,))])
    raw = np.frombuffer(blob, np.uint8)
    at = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block)
    rows = np.ascontiguousarray(raw[at]).view(lists).ravel()
    if (rows["count"] > max_m).any() or rows["unused"].any():
        raise _fail("an upper-level list header is out of bounds")
    used = np.arange(max_m)[None, :] < rows["count"][:, None]
    nbrs = rows["ids"][used]
    level = np.broadcast_to(np.asarray(need, dtype=np.int64)[:, None], used.shape)
    top = np.asarray(levels, dtype=np.int64)
    if (nbrs >= cur).any() or (
        top[np.minimum(nbrs, max(cur - 1, 0))] < level[used]
    ).any():
        raise _fail("an upper-level neighbour is not on that level")
    return levels


#: usearch's codes for our metrics (``MetricKind``), f32 scalars, u64 keys, u32 slots
USEARCH_METRICS = {"cos": 99, "ip": 105, "l2": 101}
_USEARCH_KINDS = (11, 14, 15)
_USEARCH_HEAD = struct.Struct("<7s3H4B3Q?22x")
_USEARCH_GRAPH = struct.Struct("<5Q")
_USEARCH_MAX_LEVEL = 64


def check_usearch(blob: bytes, *, dim: int, metric: str, count: int | None,
                  options: dict[str, Any]) -> None:  # fmt: skip
    """Check a usearch ``save()`` buffer's headers and sizes against the SAGE header.

    The neighbour lists inside the node records are not checked (see the module
    docstring): a file that passes still needs to be trusted.

    Raises:
        IndexFormatError: any header field out of bounds or inconsistent.
    """

    def fail(what: str) -> IndexFormatError:
        return IndexFormatError(
            f"usearch payload: {what}; the file is damaged or forged"
        )

    matrix = struct.Struct("<2I")
    if len(blob) < matrix.size:
        raise fail("shorter than its header")
    rows, cols = matrix.unpack_from(blob)
    head_at = matrix.size + rows * cols
    if cols != dim * _FLOAT or head_at + _USEARCH_HEAD.size + _USEARCH_GRAPH.size > len(
        blob
    ):
        raise fail(f"a {rows}x{cols}-byte matrix for dim={dim} in {len(blob)} bytes")
    (magic, major, _minor, _patch, kind_metric, *kinds, present, deleted, dims,
     multi) = _USEARCH_HEAD.unpack_from(blob, head_at)  # fmt: skip
    if magic != b"usearch" or major != 2:
        raise fail(f"magic {magic!r}, format version {major} (expected usearch 2.x)")
    if (
        kind_metric != USEARCH_METRICS[metric]
        or tuple(kinds) != _USEARCH_KINDS
        or multi
    ):
        raise fail(f"metric/scalar kinds {kind_metric}, {kinds} are not {metric} f32")
    if count is None:  # a pickle: no saved header to compare with
        count = present
    if dims != dim or present != count or present + deleted != rows:
        raise fail(f"{present} + {deleted} vectors of dim {dims} for {count} x {dim}")
    graph_at = head_at + _USEARCH_HEAD.size
    size, conn, conn_base, max_level, entry = _USEARCH_GRAPH.unpack_from(blob, graph_at)
    want = int(options.get("connectivity", 16))
    if size != rows or conn != want or conn_base != 2 * conn:
        raise fail(f"graph of {size} nodes, connectivity {conn}/{conn_base}")
    levels_at = graph_at + _USEARCH_GRAPH.size
    if levels_at + 2 * size > len(blob):
        raise fail("node levels are truncated")
    levels = np.frombuffer(blob, "<i2", count=size, offset=levels_at).astype(np.int64)
    if size == 0:
        if (max_level, entry) != (2**64 - 1, 0):
            raise fail("an empty graph with an entry point")
        return
    if (levels < 0).any() or (levels > _USEARCH_MAX_LEVEL).any():
        raise fail("a node level is out of bounds")
    if entry >= size or max_level != levels[entry]:
        raise fail(f"entry slot {entry} at level {max_level} is not a graph node")
    node = 8 + 2 + _FLOAT + conn_base * _FLOAT  # key, level, base list
    total = levels_at + 2 * size + int((node + levels * (_FLOAT + conn * _FLOAT)).sum())
    if total != len(blob):
        raise fail(f"node records take {total} bytes of {len(blob)}")
