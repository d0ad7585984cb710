"""Native index arguments out of range get named errors that state the limit; sizes
are never multiplied unchecked; threads=0 follows the process's CPU affinity."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sage_core import _native
from sage_core.vector_index import MISSING_ID, FlatIndex, IVFIndex
from sage_core.vector_index.base import MAX_K
from sage_core.vector_index.native import LIMITS

from .isolated import assert_clean_exit, run_python

pytestmark = pytest.mark.native


def _filled(cls: type[FlatIndex | IVFIndex]) -> FlatIndex | IVFIndex:
    index = cls(4, "l2")
    rng = np.random.default_rng(0)
    index.add(np.arange(32), rng.standard_normal((32, 4)))
    return index


def test_wrapper_and_native_bounds_agree() -> None:
    assert LIMITS["max_k"] == MAX_K == 2**16
    assert LIMITS["max_dim"] == LIMITS["max_nlist"] == 2**20
    assert LIMITS["max_train_iters"] == 1000
    assert LIMITS["max_rows"] == 2**32 - 1


def test_huge_k_is_refused_not_overflowed() -> None:
    # m * k overflowed size_t (k = 2**62 with 4 queries) and the scan wrote past
    # the result arrays; run where a crash cannot take the test run down.
    proc = run_python(
        """
        import numpy as np
        from sage_core import _native
        q = np.ones((4, 4), np.float32)
        for index in (_native.FlatIndex(4, "l2"), _native.IVFIndex(4, "l2", nlist=2)):
            index.add(np.arange(8, dtype=np.uint64), np.ones((8, 4), np.float32))
            for k in (2**62, 2**63, 2**64 - 1, 2**16 + 1):
                try:
                    index.search(q, k)
                except ValueError as exc:
                    assert "k must be between 1 and 65536" in str(exc), exc
                else:
                    raise AssertionError(f"k={k} was accepted")
        print("refused")
        """
    )
    assert_clean_exit(proc)
    assert "refused" in proc.stdout


@pytest.mark.parametrize("cls", [FlatIndex, IVFIndex])
@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 2**62])
def test_k_out_of_range_names_the_limit(cls: type, k: int) -> None:
    index = _filled(cls)
    with pytest.raises(ValueError, match=f"k must be between 1 and {MAX_K}"):
        index.search(np.ones((4, 4)), k)


@pytest.mark.parametrize("k", [1.5, "3", None, True])
def test_k_that_is_no_integer_is_a_type_error(k: object) -> None:
    with pytest.raises(TypeError, match="k must be an integer"):
        _filled(FlatIndex).search(np.ones((1, 4)), k)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [FlatIndex, IVFIndex])
def test_k_up_to_the_limit_pads_without_holding_k_items(cls: type) -> None:
    index = _filled(cls)
    ids, scores = index.search(np.ones((3, 4)), MAX_K)
    assert ids.shape == scores.shape == (3, MAX_K)
    found = ids[:, :32]
    assert (found != MISSING_ID).sum() >= 3  # IVF probes only some lists
    assert (ids[:, 32:] == MISSING_ID).all()
    assert np.isneginf(scores[:, 32:]).all()


@pytest.mark.parametrize("dim", [0, 2**20 + 1, 2**40])
def test_dim_out_of_range(dim: int) -> None:
    for make in (lambda: FlatIndex(dim), lambda: IVFIndex(dim)):
        with pytest.raises(ValueError, match=r"dim must be between 1 and 1048576"):
            make()


@pytest.mark.parametrize(
    ("option", "value", "limit"),
    [
        ("nlist", 2**20 + 1, "nlist must be between 0 and 1048576"),
        ("nprobe", 0, "nprobe must be between 1 and 1048576"),
        ("nprobe", 2**20 + 1, "nprobe must be between 1 and 1048576"),
        ("train_iters", 0, "train_iters must be between 1 and 1000"),
        ("train_iters", 10**6, "train_iters must be between 1 and 1000"),
    ],
)
def test_ivf_options_out_of_range(option: str, value: int, limit: str) -> None:
    with pytest.raises(ValueError, match=limit):
        IVFIndex(4, **{option: value})


def test_nprobe_setter_is_bounded() -> None:
    index = IVFIndex(4)
    with pytest.raises(ValueError, match="nprobe must be between 1 and 1048576"):
        index.nprobe = 2**21


@pytest.mark.parametrize("threads", [-1, 2**31])
def test_threads_out_of_range(threads: int) -> None:
    with pytest.raises(ValueError, match="threads must be between 0"):
        FlatIndex(4, threads=threads)
    index = _filled(FlatIndex)
    index.threads = -1
    with pytest.raises(ValueError, match="threads must be >= 0"):
        index.search(np.ones((1, 4)), 1)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a process allowed on at least two CPUs",
)
def test_default_threads_follow_the_cpu_affinity() -> None:
    # hardware_concurrency() counted every CPU of the machine, whatever taskset,
    # cgroup cpusets or a Dask worker's pinning allowed this process.
    proc = run_python(
        """
        import os
        one = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {one})
        from sage_core import _native
        print(_native.hardware_threads(), _native.build_info()["hardware_threads"])
        """
    )
    assert_clean_exit(proc)
    assert proc.stdout.split() == ["1", "1"]
    assert _native.hardware_threads() == len(os.sched_getaffinity(0))
