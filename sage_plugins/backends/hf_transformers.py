"""The ``transformers`` backend: in-process generation with Hugging Face transformers.

A real local engine for machines without vLLM: it loads a causal LM from a local
directory (e.g. the tiny model of ``sage engine make-tiny-model``) with the hub
offline. Non-streamed requests of one call that share sampling settings run as one
left-padded batch; streamed requests run one at a time with a time stamp per
generated token. Much slower than vLLM for real models (no continuous batching or
paged attention): use it for small models, tests and demos.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from sage_core.backends import (
    BackendError,
    Generation,
    GenerationBackend,
    GenerationRequest,
    render_prompt,
)

logger = logging.getLogger(__name__)


class _TokenClock:
    """A transformers streamer that records when each new token arrives."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter() - self.start)

    def end(self) -> None:
        pass


class TransformersBackend(GenerationBackend):
    """A causal LM run in-process by ``transformers``.

    Args:
        model: local model directory.
        device: torch device (``"cpu"``, ``"cuda"``).
        dtype: torch dtype name (``"float32"``, ``"bfloat16"`` ...).
        max_batch_size: most requests in one padded batch.
        gpu: GPUs a stage using it declares (default: 1 on CUDA, else 0).
    """

    def __init__(
        self,
        *,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 16,
        gpu: float | None = None,
    ) -> None:
        if not model or not os.path.isdir(model):
            raise BackendError(
                f"the transformers backend needs model= a local model directory, got "
                f"{model!r} (make one with `sage engine make-tiny-model DIR`)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError(
                "the transformers backend needs torch and transformers; install "
                "them with: pip install 'sage-dask[llm]'"
            ) from exc
        self.path = os.path.abspath(model)
        self.model = os.path.basename(self.path.rstrip("/"))
        self.device = device
        self.max_batch_size = max_batch_size
        self._gpu = float(gpu) if gpu is not None else (1.0 if "cuda" in device else 0)
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.path, local_files_only=True
        )
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, dtype=getattr(torch, dtype)
        ).to(device)
        self._model.eval()
        self._lock = threading.Lock()

    @property
    def gpu(self) -> float:
        return self._gpu

    def _kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        extra = dict(request.extra)
        kwargs: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if extra.pop("ignore_eos", False):
            kwargs["min_new_tokens"] = request.max_tokens
        if request.temperature > 0:
            kwargs.update(
                do_sample=True, temperature=request.temperature, top_p=request.top_p
            )
        else:
            kwargs["do_sample"] = False
        if request.stop:
            kwargs.update(stop_strings=list(request.stop), tokenizer=self._tokenizer)
        return {**kwargs, **extra}

    def _run(self, group: list[GenerationRequest], stream: bool) -> list[Generation]:
        torch = self._torch
        prompts = [render_prompt(r, self._tokenizer) for r in group]
        inputs = self._tokenizer(prompts, return_tensors="pt", padding=True).to(
            self.device
        )
        width = inputs["input_ids"].shape[1]
        start = time.perf_counter()
        clock = _TokenClock(start) if stream else None
        seed = group[0].seed
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            out = self._model.generate(
                **inputs, streamer=clock, **self._kwargs(group[0])
            )
        latency = time.perf_counter() - start
        results = []
        eos = self._tokenizer.eos_token_id
        for row, request in enumerate(group):
            new = out[row, width:].tolist()
            if eos in new:  # EOS counts as a generated token, as engines count it
                n, finish = new.index(eos) + 1, "stop"
            else:
                n = len(new)
                if request.stop:  # a row stopped by a stop string is padded after
                    while n and new[n - 1] == self._tokenizer.pad_token_id:
                        n -= 1
                finish = "length" if n >= request.max_tokens else "stop"
            prompt_len = int(inputs["attention_mask"][row].sum())
            times = tuple(clock.times[:n]) if clock else ()
            results.append(
                Generation(
                    text=self._tokenizer.decode(new[:n], skip_special_tokens=True),
                    model=self.model,
                    finish_reason=finish,
                    prompt_tokens=prompt_len,
                    completion_tokens=n,
                    latency_s=latency,
                    ttft_s=times[0] if times else None,
                    token_times_s=times,
                    source="in-process",
                )
            )
        return results

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        results: dict[int, Generation] = {}
        batches: dict[tuple[Any, ...], list[int]] = {}
        for i, request in enumerate(requests):
            if request.stream:
                [results[i]] = self._run([request], stream=True)
                continue
            key = (
                request.max_tokens,
                request.temperature,
                request.top_p,
                tuple(request.stop),
                request.seed,
                tuple(sorted(request.extra.items())),
            )
            batches.setdefault(key, []).append(i)
        for indices in batches.values():
            for k in range(0, len(indices), self.max_batch_size):
                part = indices[k : k + self.max_batch_size]
                outs = self._run([requests[i] for i in part], stream=False)
                results.update(zip(part, outs, strict=True))
        return [results[i] for i in range(len(requests))]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "device": self.device}

    def close(self) -> None:
        self._model = None
