"""Timing profiles of the engine emulator: how long one device step takes.

A profile is a JSON data file (``profiles/*.json`` beside this module, or any path)
naming where its figures come from (``source``). Two cost models:

* LLM continuous batching, one step of the engine's scheduler::

      f = step_base_ms + prefill_ms_per_token * prefill_tokens
          + decode_ms_per_seq * decode_seqs + kv_ms_per_1k_tokens * kv_tokens / 1000

  with a KV cache of ``kv_capacity_tokens`` (preemption when it fills),
  ``max_num_seqs`` sequences and ``max_batched_tokens`` tokens per step (chunked
  prefill, as vLLM's V1 scheduler); a request joins the scheduler
  ``request_overhead_ms`` after it arrives (the server's HTTP and tokenisation path,
  no device time);
* embedding batches::

      g = batch_base_ms + ms_per_input * inputs + ms_per_token * tokens

  at most ``max_batch_inputs`` inputs / ``max_batch_tokens`` tokens per batch.

Every figure is emulated time: nothing here runs a model.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sage_core.llm.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


class EmulatorConfigError(ConfigError):
    """An emulator config or profile is missing, malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class LLMTiming:
    step_base_ms: float
    prefill_ms_per_token: float
    decode_ms_per_seq: float
    kv_ms_per_1k_tokens: float = 0.0
    kv_capacity_tokens: int = 100_000
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    request_overhead_ms: float = 0.0
    #: coefficient of variation of a step's time around f (0: every step exactly f)
    step_cv: float = 0.0

    def step_s(self, prefill_tokens: int, decode_seqs: int, kv_tokens: int) -> float:
        """Seconds of one scheduler step (f)."""
        ms = (
            self.step_base_ms
            + self.prefill_ms_per_token * prefill_tokens
            + self.decode_ms_per_seq * decode_seqs
            + self.kv_ms_per_1k_tokens * kv_tokens / 1000.0
        )
        return ms / 1000.0


@dataclass(frozen=True, slots=True)
class EmbeddingTiming:
    batch_base_ms: float
    ms_per_input: float
    ms_per_token: float
    max_batch_inputs: int = 256
    max_batch_tokens: int = 16_384
    dimensions: int = 384
    #: coefficient of variation of a batch's time around g
    batch_cv: float = 0.0

    def batch_s(self, inputs: int, tokens: int) -> float:
        """Seconds of one embedding batch (g)."""
        ms = (
            self.batch_base_ms + self.ms_per_input * inputs + self.ms_per_token * tokens
        )
        return ms / 1000.0


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise EmulatorConfigError(f"{where} must be a mapping, got {data!r}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EmulatorConfigError(
            f"{where} has unknown field(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(names))}"
        )
    try:
        built = cls(**data)
    except TypeError as exc:
        raise EmulatorConfigError(f"{where}: {exc}") from None
    for f in fields(cls):
        value = getattr(built, f.name)
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise EmulatorConfigError(f"{where}.{f.name} must be a number >= 0")
        if f.name.endswith("_cv") and value > MAX_CV:
            raise EmulatorConfigError(f"{where}.{f.name} must be at most {MAX_CV}")
    return built


#: the largest coefficient of variation a profile may give a step or batch time
MAX_CV = 3.0


def jitter(cv: float, rng: random.Random) -> float:
    """A factor of mean 1 and coefficient of variation ``cv`` (log-normal: never
    negative, with the long right tail measured step times have); 1.0 for 0."""
    if cv <= 0:
        return 1.0
    sigma = math.sqrt(math.log1p(cv * cv))
    return rng.lognormvariate(-sigma * sigma / 2, sigma)


@dataclass(frozen=True, slots=True)
class Profile:
    """LLM and embedding timing of one emulated device type, with its source."""

    name: str
    source: str
    llm: LLMTiming
    embedding: EmbeddingTiming
    tokens_per_word: float = 1.3

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "") -> Profile:
        if not isinstance(data, dict) or not data.get("source"):
            raise EmulatorConfigError(
                f"profile {name!r} must be a mapping with a 'source' saying where "
                f"its figures come from"
            )
        return cls(
            name=str(data.get("name") or name),
            source=str(data["source"]),
            llm=_build(LLMTiming, data.get("llm"), f"profile {name}.llm"),
            embedding=_build(
                EmbeddingTiming, data.get("embedding"), f"profile {name}.embedding"
            ),
            tokens_per_word=float(data.get("tokens_per_word", 1.3)),
        )

    def with_overrides(self, kind: str, overrides: dict[str, Any]) -> Profile:
        """This profile with some LLM or embedding fields replaced (per engine)."""
        if not overrides:
            return self
        part = self.llm if kind == "llm" else self.embedding
        merged = {f.name: getattr(part, f.name) for f in fields(part)} | overrides
        built = _build(type(part), merged, f"engine override of {self.name}.{kind}")
        return Profile(
            self.name,
            self.source,
            built if kind == "llm" else self.llm,
            built if kind == "embedding" else self.embedding,
            self.tokens_per_word,
        )


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def profile_data(ref: str) -> dict[str, Any]:
    """The raw mapping of a profile given by built-in name or file path.

    Raises:
        EmulatorConfigError: not found, or not JSON.
    """
    path = Path(ref)
    if not path.suffix:
        path = PROFILE_DIR / f"{ref}.json"
    if not path.is_file():
        raise EmulatorConfigError(
            f"no emulator profile {ref!r}; built-in: {', '.join(builtin_profiles())} "
            f"(or give a path to a JSON profile)"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise EmulatorConfigError(f"profile {path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EmulatorConfigError(f"profile {path} must be a JSON object")
    data.setdefault("name", path.stem)
    return data


def load_profile(ref: str | dict[str, Any]) -> Profile:
    """A profile by built-in name, file path, or inline mapping.

    Raises:
        EmulatorConfigError: not found or malformed.
    """
    if isinstance(ref, dict):
        return Profile.from_dict(ref, "inline")
    data = profile_data(ref)
    return Profile.from_dict(data, str(data["name"]))


def count_tokens(text: str, tokens_per_word: float) -> int:
    """Emulated token count of a text: words x tokens_per_word, at least 1."""
    return max(1, math.ceil(len(text.split()) * tokens_per_word))
