"""Child-process driver of the native fuzz tests (run by test_native_fuzz.py).

``python -c "import fuzz_bindings; fuzz_bindings.main(GROUP, N)"`` runs N hypothesis
examples of GROUP (``queue``, ``index`` or ``payload``) against every binding of
``sage_core._native`` and the Python wrappers: sizes, k, dims, timeouts, dtypes,
shapes, non-contiguous arrays, huge and negative integers. Each call must return or
raise a named exception; a crash ends this process, whose stderr names the last case.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_core import _native
from sage_core.channels import BoundedQueue
from sage_core.common.errors import SageError
from sage_core.vector_index import FlatIndex, IndexFormatError, IVFIndex

# What a call may raise: the named errors; anything else (RuntimeError from an
# untranslated C++ exception, MemoryError from an unchecked size, SystemError)
# fails the run, as does a crash.
NAMED = (ValueError, TypeError, OverflowError, SageError)

HUGE = [2**16, 2**16 + 1, 2**20 + 1, 2**26 + 1, 2**31, 2**32, 2**62, 2**63]
HUGE += [2**64 - 1, 2**64, 2**100, -(2**63), -(2**64)]
ints = st.one_of(st.integers(-3, 40), st.sampled_from(HUGE))
timeouts = st.one_of(
    st.sampled_from([0, 0.0, -0.0, -1, -1e-300, math.nan, -math.inf]),
    st.sampled_from([None, math.inf, 1e10, 1e300]),
    st.floats(0, 0.0005),
    st.sampled_from([2**64, True, "1", 1j]),
)


def attempt(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn; return its result, or None when it raised a named exception."""
    print(label, file=sys.stderr, flush=True)
    try:
        return fn(*args, **kwargs)
    except NAMED:
        return None


# --- queues -----------------------------------------------------------------------

queue_ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "push",
                "pop",
                "push_many",
                "pop_many",
                "try_push",
                "try_pop",
                "wait_room",
                "close",
            ]
        ),
        ints,
        timeouts,
    ),
    max_size=25,
)


def _waits(timeout: Any) -> bool:
    """Whether ``timeout`` is a wait longer than a few milliseconds."""
    if timeout is None:
        return True
    if isinstance(timeout, (int, float)) and not math.isnan(timeout):
        return timeout > 0.0005
    return False


def _would_block(q: Any, op: str, n: int) -> bool:
    if q.closed:
        return False
    room = q.capacity - q.size
    return (op in ("pop", "pop_many") and q.size == 0) or (
        (op in ("push", "wait_room") and room == 0) or (op == "push_many" and n > room)
    )


@given(
    cls=st.sampled_from([BoundedQueue, _native.BoundedQueue]),
    capacity=ints,
    ops=queue_ops,
)
def fuzz_queue(cls: type, capacity: int, ops: list[tuple[str, int, Any]]) -> None:
    q = attempt(f"queue({capacity})", cls, capacity)
    if q is None:
        return
    for op, n, timeout in ops:
        size = min(abs(n), 50)
        if _waits(timeout) and _would_block(q, op, size):
            timeout = 0.001  # nothing else runs: a long wait would only wait
        label = f"queue({capacity}).{op} n={n} timeout={timeout!r}"
        if op == "push":
            attempt(label, q.push, [n], timeout=timeout)
        elif op == "pop":
            attempt(label, q.pop, timeout=timeout)
        elif op == "push_many":
            attempt(label, q.push_many, list(range(size)), timeout=timeout)
        elif op == "pop_many":
            attempt(label, q.pop_many, n, timeout=timeout)
        elif op == "try_push":
            attempt(label, q.try_push, object())
        elif op == "try_pop":
            attempt(label, q.try_pop)
        elif op == "wait_room":
            attempt(label, q.wait_room, timeout=timeout)
        else:
            attempt(label, q.close)
        attempt(label + " counters", q.counters)


# --- indexes ----------------------------------------------------------------------

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, object]


@st.composite
def arrays(draw: st.DrawFn, dim: int, ids: bool = False) -> Any:
    """A matrix (or id vector) of a random dtype, shape and memory layout."""
    n = draw(st.integers(0, 12))
    width = draw(st.sampled_from([dim, dim, dim + 1, max(dim - 1, 0), 0]))
    shape: tuple[int, ...] = (n,) if ids else (n, width)
    if draw(st.booleans()):
        shape = draw(st.sampled_from([(), (n, 2, 2), (n,), (1, n)]))
    dtype = draw(st.sampled_from([np.uint64, np.int64, np.int8, np.float64, object]))
    if not ids:
        dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = np.asarray(rng.standard_normal(shape) * 3)
    if ids:
        values = np.asarray(rng.integers(0, 30, shape))
        if draw(st.booleans()):
            values = values - 5  # negative ids
    elif draw(st.booleans()) and values.size:
        values.flat[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow/invalid casts are the point here
        arr = np.array(values, dtype=dtype)
    if draw(st.booleans()) and arr.ndim >= 1:  # a non-contiguous view
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    if draw(st.booleans()) and arr.ndim == 2:
        arr = np.asfortranarray(arr)
    return arr


def _desc(arr: Any) -> str:
    """dtype, shape, strides and first values of an array (for crash reports)."""
    head = np.asarray(arr).ravel()[:4].tolist()
    return f"{arr.dtype}{arr.shape}/{arr.strides}{head}"


index_calls = st.lists(
    st.sampled_from(["add", "search", "remove", "get", "contains", "train", "bytes"]),
    max_size=8,
)


@given(
    kind=st.sampled_from(["flat", "ivf", "native-flat", "native-ivf"]),
    dim=st.one_of(st.integers(1, 9), ints),
    metric=st.sampled_from(["cos", "l2", "ip", "x"]),
    options=st.fixed_dictionaries(
        {"nlist": ints, "nprobe": ints, "train_iters": ints, "max_train": ints}
    ),
    calls=index_calls,
    data=st.data(),
)
def fuzz_index(
    kind: str,
    dim: int,
    metric: str,
    options: dict[str, int],
    calls: list[str],
    data: st.DataObject,
) -> None:
    options["train_iters"] = min(
        options["train_iters"], 50
    )  # bounded above; a long k-means is only slow
    label = f"{kind}(dim={dim}, {metric}, {options})"
    if kind == "flat":
        index = attempt(label, FlatIndex, dim, metric)
    elif kind == "ivf":
        index = attempt(label, IVFIndex, dim, metric, **options)
    elif kind == "native-flat":
        index = attempt(label, _native.FlatIndex, dim, metric)
    else:
        opts = [options[k] for k in ("nlist", "nprobe", "train_iters", "max_train")]
        index = attempt(label, _native.IVFIndex, dim, metric, *opts)
    if index is None:
        return
    raw = kind.startswith("native")
    for call in calls:
        vectors = data.draw(arrays(index.dim), label="vectors")
        ids = data.draw(arrays(index.dim, ids=True), label="ids")
        k, threads = data.draw(ints, label="k"), data.draw(ints, label="threads")
        case = f"{label}.{call} ids={_desc(ids)} vectors={_desc(vectors)} k={k} t={threads}"
        if call == "add":
            extra = (threads,) if raw and "ivf" in kind else ()
            attempt(case, index.add, ids, vectors, *extra)
        elif call == "search":
            allowed = data.draw(st.one_of(st.none(), arrays(index.dim, ids=True)))
            args: tuple[Any, ...] = (vectors, k, allowed, threads) if raw else ()
            if raw:
                attempt(case, index.search, *args)
            else:
                attempt(case, index.search, vectors, k, allowed_ids=allowed)
        elif call == "remove":
            attempt(case, index.remove, ids)
        elif call == "get":
            attempt(case, index.get, ids)
        elif call == "contains":
            attempt(case, index.contains if raw else index.__contains__, k)
        elif call == "train" and "ivf" in kind:
            extra = (threads,) if raw else ()
            attempt(case, index.train, vectors, *extra)
        elif call == "bytes":
            blob = index.to_bytes() if raw else index._to_bytes()
            cls = type(index) if raw else type(index._impl)
            attempt(case, cls.from_bytes, blob)


# --- payloads ---------------------------------------------------------------------


def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3)).astype(np.float32)
    flat = _native.FlatIndex(3, "cos")
    flat.add(np.arange(6, dtype=np.uint64), x[:6])
    ivf = _native.IVFIndex(3, "l2", 3, 2, 3)
    ivf.add(np.arange(30, dtype=np.uint64), x)
    return [flat.to_bytes(), ivf.to_bytes(), _native.IVFIndex(3, "ip", 2).to_bytes()]


PAYLOADS = _payloads()


@given(
    which=st.integers(0, len(PAYLOADS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8))),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    reseal=st.booleans(),
)
def fuzz_payload(
    which: int, edits: list[tuple[int, bytes]], cut: int | None, reseal: bool
) -> None:
    body = bytearray(PAYLOADS[which][:-8])
    for pos, chunk in edits:
        at = pos % len(body)
        body[at : at + len(chunk)] = chunk
    if cut is not None:
        body = body[: cut % (len(body) + 1)]
    blob = payloads.reseal(bytes(body)) if reseal else bytes(body)
    cls = _native.FlatIndex if which == 0 else _native.IVFIndex
    print(f"payload {which} {blob.hex()}", file=sys.stderr, flush=True)
    try:
        index = cls.from_bytes(blob)
    except IndexFormatError:
        return
    rng = np.random.default_rng(1)
    dim = index.dim
    ids = np.arange(40, dtype=np.uint64) + 10**6
    attempt("add", index.add, ids, rng.standard_normal((40, dim)).astype(np.float32))
    attempt("search", index.search, rng.standard_normal((2, dim)).astype(np.float32), 4)


GROUPS = {"queue": fuzz_queue, "index": fuzz_index, "payload": fuzz_payload}


def main(group: str, examples: int) -> None:
    """Run ``examples`` hypothesis examples of ``group``."""
    run = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(GROUPS[group])
    run()
    print(f"{group}: {examples} examples passed")
