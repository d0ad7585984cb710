"""Inference backend interfaces: embedding and generation, resolved by plugin name.

A backend is what a pipeline stage (``embed``, ``generate``, ``rerank`` ...) calls to
reach an inference engine: an OpenAI-compatible server, an in-process vLLM engine, a
local sentence-transformers model. Backends register through the ``register_backends``
hook; ``create_backend("openai", base_url=..., model=...)`` builds one by name::

    from sage_core.backends import GenerationRequest, create_backend

    llm = create_backend("openai", base_url="http://127.0.0.1:8000/v1", model="tiny")
    [answer] = llm.generate([GenerationRequest(prompt="Hello", max_tokens=8)])
    answer.text, answer.completion_tokens, answer.latency_s

Conventions every backend keeps:

* ``embed(texts)`` returns a ``float32`` array of shape ``(len(texts), dim)`` whose rows
  have unit L2 norm (so inner product equals cosine similarity), in input order;
* ``generate(requests)`` returns one :class:`Generation` per request, in order, and
  may serve the requests of one call concurrently (that is the point of batching);
* a request with ``stream=True`` is served token by token and its ``Generation``
  carries the time to first token and the times of the later tokens;
* ``close()`` releases connections, threads and models; backends are context managers.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sage_core.common.errors import SageError

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class TokenVectors:
    """One text's contextual token embeddings (``EmbeddingBackend.embed_tokens``).

    Attributes:
        tokens: the model's tokens of the text (word pieces), special tokens left out.
        vectors: one unit-norm float32 row per token, shape ``(len(tokens), dim)``.
    """

    tokens: tuple[str, ...]
    vectors: Vectors


class BackendError(SageError):
    """A backend was misconfigured or cannot serve what was asked of it."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a raw ``prompt`` (completions) or chat ``messages``.

    Attributes:
        prompt: text to continue (``/v1/completions`` style); exclusive with messages.
        messages: chat messages ``[{"role": ..., "content": ...}]``.
        max_tokens: most tokens to generate.
        temperature: 0 means greedy decoding (deterministic on one engine).
        top_p: nucleus sampling mass.
        stop: strings that end generation.
        seed: sampling seed, where the engine supports one.
        stream: serve token by token and record TTFT and inter-token times.
        extra: further engine parameters passed through unchanged.
        on_token: with ``stream``, called with each piece of text as it arrives,
            by backends that stream (``openai``); the others ignore it.
    """

    prompt: str | None = None
    messages: Sequence[Mapping[str, Any]] | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    stream: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    on_token: Callable[[str], None] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise BackendError(
                "a GenerationRequest needs exactly one of prompt= or messages="
            )
        if self.messages is not None and not self.messages:
            raise BackendError("messages= is empty; give at least one chat message")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise BackendError(f"max_tokens must be an int, got {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise BackendError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise BackendError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True, slots=True)
class Generation:
    """The result of one generation with its timing.

    Attributes:
        text: the generated text.
        model: the model that produced it.
        finish_reason: ``"stop"``, ``"length"`` ... as the engine reported it.
        prompt_tokens: tokens in the prompt (None when the engine did not say).
        completion_tokens: tokens generated.
        latency_s: seconds from sending the request to the end of the answer.
        ttft_s: seconds to the first generated token (streamed requests only).
        token_times_s: for streamed requests, seconds from the request to each
            received piece of text (one piece is usually one token).
        source: where it ran (an endpoint URL or ``"in-process"``).
    """

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int
    latency_s: float
    ttft_s: float | None = None
    token_times_s: tuple[float, ...] = ()
    source: str = ""

    @property
    def itl_s(self) -> tuple[float, ...]:
        """Gaps between consecutive received pieces (inter-token latencies)."""
        times = self.token_times_s
        return tuple(b - a for a, b in itertools.pairwise(times))

    @property
    def tbt_s(self) -> float | None:
        """Mean time between received pieces after the first (the mean of
        :attr:`itl_s`); None for non-streamed answers or fewer than 2 pieces."""
        times = self.token_times_s
        if len(times) < 2:
            return None
        return (times[-1] - times[0]) / (len(times) - 1)

    def timing(self) -> dict[str, Any]:
        """Plain-data timing summary (what pipeline stages attach to items)."""
        return {
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "tbt_s": self.tbt_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }


class Backend(abc.ABC):  # noqa: B024 - the abstract methods are on the subclasses
    """Common base of inference backends."""

    #: what this backend can do: drawn from "embed", "embed_tokens", "generate", "chat"
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: GPUs a pipeline stage using this backend requests by default (contract gpu=)
    default_gpu: ClassVar[float] = 0.0

    #: the model name this backend serves or calls
    model: str = ""

    @property
    def gpu(self) -> float:
        """GPUs a stage using this configured backend should declare."""
        return self.default_gpu

    @classmethod
    def gpu_for(cls, config: Mapping[str, Any]) -> float:
        """GPUs a backend built with ``config`` would need, without building it
        (what operator contracts declare): ``config["gpu"]`` if given, else
        1 for a ``device`` naming CUDA, else ``default_gpu``."""
        if config.get("gpu") is not None:
            return float(config["gpu"])
        if "cuda" in str(config.get("device", "")):
            return 1.0
        return cls.default_gpu

    @classmethod
    def engine_for(cls, config: Mapping[str, Any]) -> str | None:
        """The external engine a backend built with ``config`` calls (what operator
        contracts declare as ``engine``), or None when it computes in the worker."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description: backend class, model, capabilities."""
        return {
            "backend": type(self).__name__,
            "model": self.model,
            "capabilities": list(self.capabilities),
        }

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release here
        """Release connections, threads and models (idempotent)."""

    def __enter__(self) -> Backend:  # noqa: PYI034 - py3.10
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddingBackend(Backend):
    """Turns texts into unit-norm vectors."""

    capabilities: ClassVar[tuple[str, ...]] = ("embed",)

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of the vectors ``embed`` returns."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> Vectors:
        """Vectors of ``texts``: shape ``(len(texts), dim)``, float32, unit rows."""

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """``embed`` for async callers (default: runs ``embed`` in a thread)."""
        return await asyncio.to_thread(self.embed, texts)

    def embed_tokens(self, texts: Sequence[str]) -> list[TokenVectors]:
        """Contextual token embeddings of ``texts`` (late-interaction matching), for
        backends with the ``"embed_tokens"`` capability.

        Raises:
            BackendError: this backend has no token embeddings.
        """
        raise BackendError(
            f"embedding backend {type(self).__name__} does not give token embeddings "
            f"(capabilities: {', '.join(self.capabilities)})"
        )


class GenerationBackend(Backend):
    """Generates text for prompts or chat messages."""

    capabilities: ClassVar[tuple[str, ...]] = ("generate", "chat")

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order; may serve them concurrently."""

    async def agenerate(
        self, requests: Sequence[GenerationRequest]
    ) -> list[Generation]:
        """``generate`` for async callers (default: runs it in a thread)."""
        return await asyncio.to_thread(self.generate, requests)


def normalize_rows(vectors: Any) -> Vectors:
    """``vectors`` as a C-contiguous float32 matrix with unit-norm rows.

    All-zero rows stay zero (they have no direction).
    """
    out = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if out.ndim != 2:
        raise BackendError(f"expected a 2-d matrix of vectors, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return np.ascontiguousarray(out)


def backend_class(name: str) -> type[Backend]:
    """The class registered as backend ``name`` (nothing is built or loaded).

    Raises:
        UnknownPluginError: no backend of that name.
        BackendError: the registered object is not a Backend class.
    """
    from sage_core import plugins

    obj = plugins.get("backend", name)
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise BackendError(
            f"backend {name!r} is registered as {obj!r}, not a Backend class"
        )
    return obj


def create_backend(name: str, **config: Any) -> Backend:
    """Build the backend registered as ``name`` with ``config``.

    Raises:
        UnknownPluginError: no backend of that name (the message lists close matches).
        BackendError: the registered object did not produce a Backend.
    """
    from sage_core import plugins

    factory = plugins.get("backend", name)
    backend = factory(**config)
    if not isinstance(backend, Backend):
        raise BackendError(
            f"backend {name!r} produced {type(backend).__name__}, which is not a "
            f"sage_core.backends.Backend; fix the plugin that registers it"
        )
    return backend


def _create_as(name: str, kind: type, verb: str, config: dict[str, Any]) -> Backend:
    cls = backend_class(name)
    if not issubclass(cls, kind):
        raise BackendError(
            f"backend {name!r} cannot {verb} (it offers {list(cls.capabilities)}); "
            f"choose a backend whose capabilities include {verb!r} "
            f"(`sage plugins --kind backend`)"
        )
    return cls(**config)


def create_embedding_backend(name: str, **config: Any) -> EmbeddingBackend:
    """``create_backend`` that insists on an embedding backend (checked before it
    is built, so no model loads in vain)."""
    backend = _create_as(name, EmbeddingBackend, "embed", config)
    assert isinstance(backend, EmbeddingBackend)
    return backend


def create_generation_backend(name: str, **config: Any) -> GenerationBackend:
    """``create_backend`` that insists on a generation backend (checked first)."""
    backend = _create_as(name, GenerationBackend, "generate", config)
    assert isinstance(backend, GenerationBackend)
    return backend


def render_prompt(request: GenerationRequest, tokenizer: Any) -> str:
    """The text an in-process engine generates from: the raw ``prompt``, or the chat
    ``messages`` through the tokenizer's chat template (with the assistant turn
    opened)."""
    if request.messages is None:
        assert request.prompt is not None
        return request.prompt
    return str(
        tokenizer.apply_chat_template(
            list(request.messages), tokenize=False, add_generation_prompt=True
        )
    )
