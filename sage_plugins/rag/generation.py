"""``prompt`` (template + token budget) and ``generate`` (any generation backend)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from sage_core.backends import (
    GenerationBackend,
    GenerationRequest,
    create_generation_backend,
)
from sage_core.contract import Contract
from sage_core.functions import MapFunction, OperatorContext
from sage_core.serve.tokens import TokenSink, token_sinks
from sage_plugins.rag.common import RagError, backend_contract, text_of
from sage_plugins.rag.text import token_counter

DEFAULT_TEMPLATE = (
    "Answer the question using only the context below. Cite the passages you use "
    "as [n].\n\nContext:\n{context}\n\nQuestion: {query}\nAnswer:"
)
DEFAULT_SYSTEM = "You are a helpful assistant that answers from the given context."


class Prompt(MapFunction):
    """Builds the model input from ``template`` with ``{query}`` and ``{context}``.

    The context is the item's refined ``context`` when present, else its
    ``contexts`` as ``[n] text`` lines in rank order. The whole prompt is kept within
    ``max_prompt_tokens`` (counted with ``tokenizer``: ``"approx"`` or a
    ``tokenizer.json``/model directory): contexts that do not fit are left out, and
    a context that alone is too long is cut at a word boundary. With ``chat`` (the
    default) the output is ``messages`` (system + user), else ``prompt``. Adds
    ``prompt_info``: ``tokens``, ``contexts_used``, ``truncated``.
    """

    contract = Contract(batch_size=32)

    def __init__(
        self,
        *,
        template: str = DEFAULT_TEMPLATE,
        system: str | None = DEFAULT_SYSTEM,
        chat: bool = True,
        max_prompt_tokens: int = 384,
        tokenizer: str | None = None,
        field: str = "query",
    ) -> None:
        super().__init__(
            template=template,
            system=system,
            chat=chat,
            max_prompt_tokens=max_prompt_tokens,
            tokenizer=tokenizer,
            field=field,
        )
        names = {
            f for _, f, _, _ in string.Formatter().parse(template) if f is not None
        }
        if names != {"query", "context"}:
            raise RagError(
                "prompt: the template must use exactly the fields {query} and "
                f"{{context}} (double other braces); it uses {sorted(names)}"
            )
        self.template, self.system, self.chat = template, system, chat
        self.field, self.budget = field, max_prompt_tokens
        self.count = token_counter(tokenizer)

    def _cut(self, text: str, budget: int) -> str:
        words = text.split()
        lo, hi = 0, len(words)
        while lo < hi:  # the longest word prefix within the budget
            mid = (lo + hi + 1) // 2
            if self.count(" ".join(words[:mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo])

    def map(self, item: Any) -> Any:
        query = text_of(item, self.field, "prompt")
        frame = self.count(self.template.format(query=query, context=""))
        if self.system and self.chat:
            frame += self.count(self.system)
        room = self.budget - frame
        if room < 0:
            raise RagError(
                f"prompt: the template and question alone take {frame} tokens, over "
                f"max_prompt_tokens={self.budget}; raise it or shorten the template"
            )
        if isinstance(item, Mapping) and isinstance(item.get("context"), str):
            blocks = [item["context"]] if item["context"] else []
        else:
            found = item.get("contexts", []) if isinstance(item, Mapping) else []
            blocks = [
                f"[{n}] {text_of(c, 'text', 'prompt')}"
                for n, c in enumerate(found, start=1)
            ]
        kept: list[str] = []
        truncated = False
        for block in blocks:
            need = self.count(block) + (1 if kept else 0)
            if need <= room:
                kept.append(block)
                room -= need
            elif not kept:  # the best context alone is too long: cut it
                kept.append(self._cut(block, room))
                truncated = True
                break
            else:
                truncated = True
                break
        text = self.template.format(query=query, context="\n".join(kept))
        info = {
            "tokens": self.count(text)
            + (self.count(self.system) if self.system and self.chat else 0),
            "contexts_used": len(kept),
            "truncated": truncated,
        }
        out = dict(item) if isinstance(item, Mapping) else {self.field: item}
        out["prompt_info"] = info
        if self.chat:
            messages = (
                [{"role": "system", "content": self.system}] if self.system else []
            )
            out["messages"] = [*messages, {"role": "user", "content": text}]
        else:
            out["prompt"] = text
        return out


class Generate(MapFunction):
    """Generates ``answer`` from the item's ``messages`` (or ``prompt``) with any
    generation backend; the requests of one batch are served concurrently.

    Config: ``backend`` (``"openai"``), ``backend_config``, ``max_tokens`` (128),
    ``temperature`` (0: greedy), ``stream`` (token by token, recording TTFT and
    inter-token times), ``params`` (further engine parameters, e.g.
    ``{"ignore_eos": True}``), ``batch_size`` (8), ``out``. Adds ``generation``:
    latency, TTFT, TBT, prompt/completion tokens, finish reason.

    Under ``sage serve``, a request that asked for ``stream: true`` gets the tokens
    as they are generated when the backend streams (``openai``); with the other
    backends it gets the answer when it is complete.
    """

    contract = Contract(batch_size=8)

    @classmethod
    def contract_for(cls, config: Mapping[str, Any]) -> Contract:
        return backend_contract(
            "generate",
            config,
            default_backend="openai",
            batch_size=8,
            streaming=bool(config.get("stream", False)),
        )

    def __init__(
        self,
        *,
        backend: str = "openai",
        backend_config: Mapping[str, Any] | None = None,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stream: bool = False,
        params: Mapping[str, Any] | None = None,
        batch_size: int = 8,
        out: str = "answer",
    ) -> None:
        super().__init__(
            backend=backend,
            backend_config=dict(backend_config or {}),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=stream,
            params=dict(params or {}),
            batch_size=batch_size,
            out=out,
        )
        self.out = out
        self.llm: GenerationBackend | None = None
        GenerationRequest(
            prompt="check", max_tokens=max_tokens, temperature=temperature
        )

    def open(self, context: OperatorContext) -> None:
        self.llm = create_generation_backend(
            self.config["backend"], **self.config["backend_config"]
        )

    def _request(self, item: Any, sink: TokenSink | None) -> GenerationRequest:
        cfg = self.config
        common = {
            "max_tokens": cfg["max_tokens"],
            "temperature": cfg["temperature"],
            "stream": cfg["stream"] or sink is not None,
            "extra": cfg["params"],
            "on_token": sink,
        }
        if isinstance(item, Mapping) and item.get("messages"):
            return GenerationRequest(messages=item["messages"], **common)
        return GenerationRequest(prompt=text_of(item, "prompt", "generate"), **common)

    def map_batch(self, items: list[Any]) -> list[Any]:
        if self.llm is None:
            self.open(OperatorContext("generate"))
        assert self.llm is not None
        sinks = token_sinks(len(items))  # served requests that asked for a stream
        answers = self.llm.generate(
            [self._request(item, sink) for item, sink in zip(items, sinks, strict=True)]
        )
        out = []
        for item, answer in zip(items, answers, strict=True):
            row = dict(item) if isinstance(item, Mapping) else {"prompt": item}
            row[self.out] = answer.text
            row["generation"] = {**answer.timing(), "model": answer.model}
            out.append(row)
        return out

    def map(self, item: Any) -> Any:
        return self.map_batch([item])[0]

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
