"""SAGE native core: stable hashing, bounded queues and vector indexes."""

from collections.abc import Iterable
from typing import Annotated, Any

import numpy
from numpy.typing import NDArray

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

def install_errors(types: dict) -> None:
    """
    Install the Python exception classes native errors are raised as.

    Called by sage_core.channels and sage_core.vector_index at import; maps an
    error name (``"QueueClosed"``, ``"IndexFormatError"``, ...) to its class.
    """

class BoundedQueue:
    """
    Bounded multi-producer multi-consumer FIFO of Python objects.

    A ring buffer of fixed capacity. Blocking waits release the GIL;
    ``try_push``/``try_pop`` never block (for async callers).
    """

    def __init__(self, capacity: int) -> None:
        """
        Create an empty queue holding at most ``capacity`` objects
        (1 <= capacity <= 2**26; the ring is allocated up front).

        Raises:
            ValueError: capacity out of range.
        """

    def try_push(self, obj: object | None) -> bool:
        """
        Append ``obj`` if there is room; return False when full. Never blocks.

        Raises:
            QueueClosed: the queue is closed.
        """

    def try_pop(self) -> tuple[bool, Any]:
        """
        Return ``(True, obj)`` for the oldest object, or ``(False, None)`` when
        empty. Never blocks.

        Raises:
            QueueClosed: the queue is closed and drained.
        """

    def push(self, obj: object | None, timeout: float | None = None) -> None:
        """
        Append ``obj``, waiting (GIL released) while the queue is full.

        Args:
            timeout: seconds to wait; None, inf or >= 1e9 (31 years) wait
                forever, 0 never waits.

        Raises:
            QueueTimeout: still full when the timeout expired.
            QueueClosed: the queue is or became closed.
            ValueError: the timeout is NaN or negative.
        """

    def pop(self, timeout: float | None = None) -> Any:
        """
        Remove and return the oldest object, waiting while the queue is empty.

        Args:
            timeout: as for push (None, inf or >= 1e9 wait forever).

        Raises:
            QueueTimeout: still empty when the timeout expired.
            QueueClosed: the queue is closed and drained.
            ValueError: the timeout is NaN or negative.
        """

    def wait_room(self, timeout: float | None = None) -> bool:
        """
        Wait (GIL released) until the queue has room; return True then, False
        when the timeout expired first. Another producer may take the room:
        push with ``try_push`` and wait again when it returns False (a value
        built after the wait, such as the time it entered, goes in as built).

        Args:
            timeout: as for ``push``.

        Raises:
            QueueClosed: the queue is or became closed.
            ValueError: the timeout is NaN or negative.
        """

    def push_many(self, items: Iterable[Any], timeout: float | None = None) -> int:
        """
        Append ``items`` in order, waiting while full; return how many went in.

        Fewer than ``len(items)`` only when the timeout expired (the rest were
        not queued; retry them). ``timeout=0`` pushes what fits now.

        Raises:
            QueueClosed: closed before all were pushed (``.pushed`` counts
                the ones that went in).
        """

    def pop_many(self, max_n: int, timeout: float | None = None) -> list[Any]:
        """
        Remove and return up to ``max_n`` objects, oldest first.

        Returns what is there at once; waits only while the queue is empty, and
        returns ``[]`` if it is still empty when the timeout expires.

        Raises:
            QueueClosed: the queue is closed and drained.
        """

    def close(self) -> None:
        """
        Close the queue and wake every waiter. Pushes then raise QueueClosed;
        pops drain what remains, then raise QueueClosed. Idempotent.
        """

    @property
    def closed(self) -> bool:
        """Whether close() was called."""

    @property
    def size(self) -> int:
        """Number of objects in the queue now."""

    @property
    def capacity(self) -> int:
        """Most objects the queue holds."""

    def counters(self) -> dict:
        """
        Counters since creation: pushed, popped, high_watermark, producer_blocks,
        consumer_waits, producer_blocked_s, consumer_wait_s, size, capacity, closed.
        """

def kernels() -> str:
    """Name of the scan kernels in use (``"avx2+fma"`` or ``"generic"``)."""

def set_kernels(name: str) -> None:
    """
    Choose the scan kernels: ``"auto"`` (cpuid), ``"avx2"`` or ``"generic"``.

    For tests and benchmarks; the environment variable SAGE_KERNELS sets the
    initial choice.
    """

def hardware_threads() -> int:
    """
    Number of CPUs this process may run on (its affinity mask): what index
    searches and adds with ``threads=0`` use.
    """

def limits() -> dict[str, int]:
    """
    Bounds the native code enforces: max_dim, max_k, max_nlist (also the
    largest nprobe), max_train_iters, max_queue_capacity, and max_rows (rows
    of one FlatIndex or one IVF list).
    """

class FlatIndex:
    """Exact (brute-force) vector index."""

    def __init__(self, dim: int, metric: str = "cos") -> None:
        """
        Create an empty index of ``dim``-dimensional vectors (1 <= dim <= 2**20);
        metric is 'ip', 'l2' or 'cos'.
        """

    @property
    def dim(self) -> int:
        """Vector dimension."""

    @property
    def metric(self) -> str:
        """Similarity metric: 'ip', 'l2' or 'cos'."""

    def __len__(self) -> int:
        """Number of vectors in the index."""

    def memory_bytes(self) -> int:
        """Bytes held by the index."""

    def contains(self, id: int) -> bool:
        """Whether ``id`` is in the index."""

    def add(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
        vectors: Annotated[
            NDArray[numpy.float32],
            dict(shape=(None, None), order="C", device="cpu", writable=False),
        ],
    ) -> None:
        """
        Add vectors under new uint64 ids (cos vectors are stored normalised).

        Raises:
            DuplicateIdError: an id is present or repeated (nothing added).
        """

    def remove(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
    ) -> int:
        """
        Remove ids; returns how many. Raises UnknownIdError (removing nothing) if
        any is absent.
        """

    def search(
        self,
        queries: Annotated[
            NDArray[numpy.float32],
            dict(shape=(None, None), order="C", device="cpu", writable=False),
        ],
        k: int,
        allowed_ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ]
        | None = None,
        threads: int = 0,
    ) -> tuple:
        """
        Top-``k`` most similar rows for each query (rows of a float32 matrix).

        Args:
            allowed_ids: if given, only these ids can be returned (filter applied
                during the scan, so up to k allowed results come back).
            threads: worker threads; 0 uses every CPU this process may run on.

        Returns:
            ``(ids, scores)``, both of shape (len(queries), k), best first; higher
            scores are more similar (ip: dot product, cos: cosine, l2: minus the
            squared distance). Missing results have id 2**64-1 and score -inf.

        Raises:
            ValueError: k outside 1..2**16 (``limits()['max_k']``) or threads < 0.
        """

    def get(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
    ) -> Annotated[NDArray[numpy.float32], dict(shape=(None, None))]:
        """Stored vectors of ``ids`` (normalised for cos), shape (len(ids), dim)."""

    def to_bytes(self) -> bytes:
        """Serialise to bytes (versioned format with a checksum)."""

    @staticmethod
    def from_bytes(data: bytes) -> FlatIndex:
        """
        Rebuild an index from to_bytes() output.

        Raises:
            IndexFormatError: corrupt, truncated or foreign data.
        """

class IVFIndex:
    """Inverted-file index over k-means centroids."""

    def __init__(
        self,
        dim: int,
        metric: str = "cos",
        nlist: int = 0,
        nprobe: int = 8,
        train_iters: int = 10,
        max_train: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Create an untrained index. nlist=0 picks round(sqrt(n)) of the training set;
        max_train=0 trains on at most 256*nlist sampled vectors. Bounds: 1 <= dim
        <= 2**20, nlist <= 2**20, 1 <= nprobe <= 2**20, 1 <= train_iters <= 1000
        (see limits()).
        """

    @property
    def dim(self) -> int:
        """Vector dimension."""

    @property
    def metric(self) -> str:
        """Similarity metric: 'ip', 'l2' or 'cos'."""

    @property
    def trained(self) -> bool:
        """Whether centroids exist."""

    @property
    def nlist(self) -> int:
        """Number of inverted lists."""

    @property
    def nprobe(self) -> int:
        """Lists scanned per query by default."""

    @nprobe.setter
    def nprobe(self, arg: int, /) -> None: ...
    def __len__(self) -> int:
        """Number of vectors in the index."""

    def memory_bytes(self) -> int:
        """Bytes held by the index."""

    def contains(self, id: int) -> bool:
        """Whether ``id`` is in the index."""

    def list_sizes(self) -> list[int]:
        """Live vectors per inverted list."""

    def train(
        self,
        vectors: Annotated[
            NDArray[numpy.float32],
            dict(shape=(None, None), order="C", device="cpu", writable=False),
        ],
        threads: int = 0,
    ) -> None:
        """Train the centroids by k-means on (a sample of) ``vectors``."""

    def add(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
        vectors: Annotated[
            NDArray[numpy.float32],
            dict(shape=(None, None), order="C", device="cpu", writable=False),
        ],
        threads: int = 0,
    ) -> None:
        """
        Add vectors under new ids; the first add trains an untrained index.

        Raises:
            DuplicateIdError: an id is present or repeated (nothing added).
            IndexNotTrainedError: untrained and the batch is smaller than nlist.
        """

    def remove(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
    ) -> int:
        """Remove ids; returns how many (UnknownIdError if any is absent)."""

    def search(
        self,
        queries: Annotated[
            NDArray[numpy.float32],
            dict(shape=(None, None), order="C", device="cpu", writable=False),
        ],
        k: int,
        allowed_ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ]
        | None = None,
        threads: int = 0,
        nprobe: int = 0,
    ) -> tuple:
        """
        Top-``k`` most similar rows for each query (rows of a float32 matrix).

        Args:
            allowed_ids: if given, only these ids can be returned (filter applied
                during the scan, so up to k allowed results come back).
            threads: worker threads; 0 uses every CPU this process may run on.

        Returns:
            ``(ids, scores)``, both of shape (len(queries), k), best first; higher
            scores are more similar (ip: dot product, cos: cosine, l2: minus the
            squared distance). Missing results have id 2**64-1 and score -inf.

        Raises:
            ValueError: k outside 1..2**16 (``limits()['max_k']``) or threads < 0.
        """

    def get(
        self,
        ids: Annotated[
            NDArray[numpy.uint64],
            dict(shape=(None,), order="C", device="cpu", writable=False),
        ],
    ) -> Annotated[NDArray[numpy.float32], dict(shape=(None, None))]:
        """Stored vectors of ``ids`` (normalised for cos), shape (len(ids), dim)."""

    def to_bytes(self) -> bytes:
        """Serialise to bytes (versioned format with a checksum)."""

    @staticmethod
    def from_bytes(data: bytes) -> IVFIndex:
        """
        Rebuild an index from to_bytes() output.

        Raises:
            IndexFormatError: corrupt, truncated or foreign data.
        """
