"""The emulator's timing model on known cases, in emulated time (wall-clock only as
lower bounds, which a slow machine cannot break): a request alone costs exactly the
profile's steps; co-located engines take turns on one device timeline, or share it
at once on a processor-sharing device, or hold it in slices that preempt a long step
on a time-slicing one; engines on different devices do not wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from sage_plugins.emulator.device import Device
from sage_plugins.emulator.engines import EmbeddingEngine, LLMEngine
from sage_plugins.emulator.profile import (
    EmbeddingTiming,
    EmulatorConfigError,
    LLMTiming,
    load_profile,
)

LLM = LLMTiming(
    step_base_ms=2.0,
    prefill_ms_per_token=0.1,
    decode_ms_per_seq=0.05,
    kv_ms_per_1k_tokens=1.0,
    kv_capacity_tokens=10_000,
    max_num_seqs=8,
    max_batched_tokens=512,
)
EMB = EmbeddingTiming(batch_base_ms=1.0, ms_per_input=0.5, ms_per_token=0.01)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _start(*devices: Device) -> list[asyncio.Task[None]]:
    return [asyncio.ensure_future(d.run()) for d in devices]


def test_one_generation_alone_costs_the_profile_steps() -> None:
    async def main() -> float:
        device = Device("d0")
        engine = LLMEngine("llm", "m", LLM)
        device.place(engine)
        tasks = await _start(device)
        seq = engine.submit(prompt_tokens=100, max_tokens=5)
        await seq.finished
        for t in tasks:
            t.cancel()
        assert seq.generated == 5 and engine.steps == 5
        return engine.busy_s

    busy = run(main())
    # prefill step (kv 100), then 4 decode steps with kv 101..104
    expected = LLM.step_s(100, 0, 100) + sum(
        LLM.step_s(0, 1, 100 + k) for k in range(1, 5)
    )
    assert busy == pytest.approx(expected)


def test_chunked_prefill_splits_a_long_prompt() -> None:
    async def main() -> int:
        device = Device("d0")
        engine = LLMEngine("llm", "m", LLM)
        device.place(engine)
        tasks = await _start(device)
        seq = engine.submit(prompt_tokens=1200, max_tokens=1)
        await seq.finished
        for t in tasks:
            t.cancel()
        return engine.steps

    assert run(main()) == 3  # 512 + 512 + 176 prompt tokens


def test_one_embedding_batch_alone_costs_g() -> None:
    async def main() -> float:
        device = Device("d0")
        engine = EmbeddingEngine("emb", "e", EMB)
        device.place(engine)
        tasks = await _start(device)
        job = engine.submit([10, 20, 30])
        await job.done
        for t in tasks:
            t.cancel()
        return engine.busy_s

    assert run(main()) == pytest.approx(EMB.batch_s(3, 60))


async def _llm_then_embedding(
    colocated: bool, sharing: str = "turns", step_ms: float = 150.0
) -> tuple[float, float, float, float]:
    """A long prefill (``step_ms``) submitted first, then an embedding job: (llm
    step start, llm step end, embedding step start, embedding step end) on the
    devices' clocks."""
    slow = LLMTiming(
        step_base_ms=step_ms, prefill_ms_per_token=0.0, decode_ms_per_seq=0.0
    )
    d0, d1 = Device("d0", sharing=sharing), Device("d1", sharing=sharing)
    llm = LLMEngine("llm", "m", slow)
    emb = EmbeddingEngine("emb", "e", EMB)
    d0.place(llm)
    (d0 if colocated else d1).place(emb)
    marks: dict[str, tuple[float, float]] = {}
    for device in (d0, d1):
        device.on_step = lambda e, start, end: marks.setdefault(e.id, (start, end))
    tasks = await _start(d0, d1)
    seq = llm.submit(10, 1)
    await asyncio.sleep(0)  # the device takes the LLM step first
    job = emb.submit([10])
    await asyncio.gather(seq.finished, job.done)
    for t in tasks:
        t.cancel()
    return (*marks["llm"], *marks["emb"])


def test_colocated_engines_take_turns_on_one_device() -> None:
    _, llm_end, emb_start, emb_end = run(_llm_then_embedding(colocated=True))
    assert emb_start >= llm_end  # the embedding batch waited for the LLM step
    assert emb_end - emb_start == pytest.approx(EMB.batch_s(1, 10))


def test_engines_on_different_devices_do_not_wait() -> None:
    _, llm_end, emb_start, _ = run(_llm_then_embedding(colocated=False))
    assert emb_start < llm_end


def test_colocated_engines_on_a_processor_sharing_device_slow_each_other() -> None:
    # a 1 s step, as below: the batch must arrive while the step runs
    llm_start, llm_end, emb_start, emb_end = run(
        _llm_then_embedding(colocated=True, sharing="processor", step_ms=1000.0)
    )
    assert emb_start < llm_end  # the embedding batch did not wait for the step
    # while both ran, each got half the device: the embedding batch took at least
    # twice its time, and the LLM step lost as much as the batch's own time
    emb = EMB.batch_s(1, 10)
    assert emb_end - emb_start >= 2 * emb - 1e-3
    assert llm_end - llm_start >= 1.0 + emb - 1e-3


def test_a_timeslice_device_preempts_a_long_step_for_a_colocated_engine() -> None:
    # a 1 s step: the device must see the batch before the step ends, which a
    # process stalled for a 150 ms step's length on a loaded box did not
    llm_start, llm_end, emb_start, emb_end = run(
        _llm_then_embedding(colocated=True, sharing="timeslice", step_ms=1000.0)
    )
    assert emb_start < llm_end  # the batch ran in the LLM step's slices' gaps
    assert emb_end < llm_end  # and ended long before the 1 s step
    emb = EMB.batch_s(1, 10)
    assert emb_end - emb_start >= emb - 1e-3
    # the step held the device for its own second, plus the batch's slices
    assert llm_end - llm_start >= 1.0 + emb - 1e-3


def test_an_engine_alone_on_a_timeslice_device_costs_the_profile_steps() -> None:
    async def main() -> tuple[float, float]:
        device = Device("gpu", sharing="timeslice", timeslice_ms=1.0)
        engine = LLMEngine("llm", "m", LLM)
        device.place(engine)
        tasks = await _start(device)
        t0 = time.monotonic()
        seq = engine.submit(prompt_tokens=400, max_tokens=3)
        await seq.finished
        wall = time.monotonic() - t0
        for t in tasks:
            t.cancel()
        return engine.busy_s, wall

    busy, wall = run(main())
    expected = LLM.step_s(400, 0, 400) + sum(
        LLM.step_s(0, 1, 400 + k) for k in range(1, 3)
    )
    assert busy == pytest.approx(expected)  # slices do not split a lone step
    assert wall >= expected - 2e-3


def test_an_engine_that_spins_after_its_step_keeps_its_share_of_the_device() -> None:
    slow = LLMTiming(
        step_base_ms=100.0, prefill_ms_per_token=0.0, decode_ms_per_seq=0.0
    )

    async def main() -> tuple[float, float]:
        device = Device("cpu", sharing="processor", idle_spin_s=5.0)
        llm, emb = LLMEngine("llm", "m", slow), EmbeddingEngine("emb", "e", EMB)
        device.place(llm)
        device.place(emb)
        marks: dict[str, tuple[float, float]] = {}
        device.on_step = lambda e, start, end: marks.setdefault(e.id, (start, end))
        tasks = await _start(device)
        await emb.submit([10]).done  # the embedding engine served, and now spins
        await llm.submit(10, 1).finished
        for t in tasks:
            t.cancel()
        return marks["llm"]

    start, end = run(main())
    assert end - start >= 0.200 - 1e-3  # half the device for the whole step


def test_a_request_reaches_the_scheduler_after_the_request_overhead() -> None:
    timing = LLMTiming(
        step_base_ms=1.0,
        prefill_ms_per_token=0.0,
        decode_ms_per_seq=0.0,
        request_overhead_ms=80.0,
    )

    async def main() -> tuple[float, float, str, int]:
        device = Device("d0")
        engine = LLMEngine("llm", "m", timing)
        device.place(engine)
        starts: list[float] = []
        device.on_step = lambda e, start, end: starts.append(start)
        tasks = await _start(device)
        submitted = time.monotonic()
        seq = engine.submit(10, 1)
        state = seq.state  # not queued yet: no step may take it
        aborted = engine.submit(10, 1)
        engine.abort(aborted)  # aborted on the way: never reaches the scheduler
        await seq.finished
        await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        return submitted, starts[0], state, engine.steps

    submitted, first_step, state, steps = run(main())
    assert state == "arriving"
    assert first_step >= submitted + 0.080 - 2e-3
    assert steps == 1  # the aborted request never took a step


def test_full_kv_cache_preempts_the_newest_sequence() -> None:
    small = LLMTiming(
        step_base_ms=0.1,
        prefill_ms_per_token=0.0,
        decode_ms_per_seq=0.0,
        kv_capacity_tokens=120,
        max_batched_tokens=512,
    )

    async def main() -> tuple[int, int]:
        device = Device("d0")
        engine = LLMEngine("llm", "m", small)
        device.place(engine)
        tasks = await _start(device)
        seqs = [engine.submit(50, 20) for _ in range(2)]
        await asyncio.gather(*(s.finished for s in seqs))
        for t in tasks:
            t.cancel()
        return engine.preemptions, sum(s.generated for s in seqs)

    preemptions, generated = run(main())
    assert preemptions >= 1  # 2 x (50 + 20) > 120: one had to give its KV back
    assert generated == 40  # and every sequence still finished


def test_a_request_larger_than_the_kv_cache_is_refused() -> None:
    async def main() -> None:
        engine = LLMEngine("llm", "m", LLM)
        with pytest.raises(ValueError, match="KV cache"):
            engine.submit(9_999, 10)

    run(main())


def test_a_device_with_an_unknown_sharing_is_refused() -> None:
    from sage_plugins.emulator.emulate import build

    config = {
        "profile": "cpu-2core-tiny-llama-minilm",
        "devices": [{"sharing": "fair", "engines": [{"id": "e", "model": "m"}]}],
    }
    with pytest.raises(EmulatorConfigError, match="sharing must be one of"):
        build(config)
    config["devices"][0].update(sharing="turns", idle_spin_s=1.0)
    with pytest.raises(EmulatorConfigError, match="needs sharing: processor"):
        build(config)
    config["devices"][0].update(sharing="processor", idle_spin_s=-1)
    with pytest.raises(EmulatorConfigError, match="idle_spin_s must be"):
        build(config)
    config["devices"][0].update(sharing="turns", idle_spin_s=0, timeslice_ms=2)
    with pytest.raises(EmulatorConfigError, match="needs sharing: timeslice"):
        build(config)
    for bad in (0, 5000, "2ms", True):
        config["devices"][0].update(sharing="timeslice", timeslice_ms=bad)
        with pytest.raises(EmulatorConfigError, match="timeslice_ms must be"):
            build(config)


def test_profiles_name_their_source_and_bad_ones_are_refused() -> None:
    profile = load_profile("h100-llama3-8b-e5-mistral-7b")
    assert "datasheet" in profile.source
    with pytest.raises(EmulatorConfigError, match="no emulator profile"):
        load_profile("no-such-profile")
    with pytest.raises(EmulatorConfigError, match="source"):
        load_profile({"llm": {}, "embedding": {}})
    with pytest.raises(EmulatorConfigError, match="unknown field"):
        profile.with_overrides("llm", {"kv_size": 3})
