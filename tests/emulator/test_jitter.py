"""Step and batch times vary as the profile says (``step_cv``/``batch_cv``): the
real CPU engines' p99 latencies sit well above their medians, and an emulator
that runs every step in exactly f(...) had p99s 25-49% short."""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import replace

import pytest

from sage_plugins.emulator.device import Device
from sage_plugins.emulator.engines import EmbeddingEngine, LLMEngine
from sage_plugins.emulator.profile import (
    EmbeddingTiming,
    EmulatorConfigError,
    LLMTiming,
    Profile,
    jitter,
)

LLM = LLMTiming(step_base_ms=1.0, prefill_ms_per_token=0.0, decode_ms_per_seq=0.0)
EMB = EmbeddingTiming(batch_base_ms=1.0, ms_per_input=0.0, ms_per_token=0.0)


@pytest.mark.parametrize("cv", [0.1, 0.5, 1.0])
def test_jitter_has_mean_one_and_the_asked_spread(cv: float) -> None:
    rng = random.Random(1)
    draws = [jitter(cv, rng) for _ in range(40_000)]
    assert min(draws) > 0
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.03)
    assert statistics.pstdev(draws) == pytest.approx(cv, rel=0.1)


def test_no_jitter_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert jitter(0.0, rng) == 1.0
    assert rng.getstate() == state


def _busy(engine_id: str, cv: float) -> float:
    """Emulated seconds of the 40 steps of one generation."""
    engine = LLMEngine(engine_id, "m", replace(LLM, step_cv=cv))

    async def main() -> None:
        device = Device("d0")
        device.place(engine)
        task = asyncio.ensure_future(device.run())
        seq = engine.submit(prompt_tokens=4, max_tokens=40)
        await seq.finished
        task.cancel()

    asyncio.run(main())
    return engine.busy_s


def test_an_engine_draws_its_steps_from_a_stream_of_its_own() -> None:
    """Same engine id, same step times (a run can be repeated); another id,
    others; cv 0 gives the profile's time for every step."""
    a, b, c = _busy("llm0", 0.5), _busy("llm0", 0.5), _busy("llm1", 0.5)
    assert a == b and a != c
    assert _busy("llm0", 0.0) == pytest.approx(40 * LLM.step_s(0, 1, 0))


def test_embedding_batches_vary_with_batch_cv() -> None:
    engine = EmbeddingEngine("emb", "e", replace(EMB, batch_cv=0.5))

    async def main() -> list[float]:  # submit() needs a running loop
        times = []
        for _ in range(400):
            engine.queue.clear()
            engine.submit([8])
            times.append(engine.plan()[0])
        return times

    times = asyncio.run(main())
    assert statistics.pstdev(times) / statistics.fmean(times) == pytest.approx(
        0.5, rel=0.2
    )


@pytest.mark.parametrize("field", ["step_cv", "batch_cv"])
@pytest.mark.parametrize("bad", [-0.1, 3.5, float("nan")])
def test_a_profile_with_a_bad_cv_is_refused(field: str, bad: float) -> None:
    llm = {"step_base_ms": 1, "prefill_ms_per_token": 0, "decode_ms_per_seq": 0}
    emb = {"batch_base_ms": 1, "ms_per_input": 0, "ms_per_token": 0}
    (llm if field == "step_cv" else emb)[field] = bad
    with pytest.raises(EmulatorConfigError, match=field):
        Profile.from_dict({"source": "test", "llm": llm, "embedding": emb})
