"""Conversational memory: short-term windows, the SQLite + vector long-term store,
forgetting, persistence, context within a budget, and the operators in a pipeline."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core import LocalEnvironment
from sage_plugins.memory import LongTermStore, Memory, MemoryStoreError
from sage_plugins.memory.dialogues import make_dialogues

HASH = {"embedder": "hash"}


def memory(tmp_path: Path, **kw: Any) -> Memory:
    return Memory("chat", root=tmp_path, **{**HASH, **kw})


def test_short_term_window_keeps_the_last_turns_by_count_and_tokens(
    tmp_path: Path,
) -> None:
    mem = memory(tmp_path, recent_turns=3, recent_tokens=10_000)
    for i in range(6):
        mem.add_turn("s", f"turn number {i}")
    assert [t["text"] for t in mem.recent("s")] == [
        f"turn number {i}" for i in (3, 4, 5)
    ]
    tight = memory(tmp_path, recent_turns=100, recent_tokens=8)
    for i in range(6):
        tight.add_turn("t", f"turn number {i}")
    assert sum(t["tokens"] for t in tight.recent("t")) <= 8
    assert tight.recent("t")[-1]["text"] == "turn number 5"


@given(
    tokens=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    budget=st.integers(0, 120),
)
def test_context_never_exceeds_the_budget_and_reports_what_it_left_out(
    tmp_path_factory: Any, tokens: list[int], budget: int
) -> None:
    mem = memory(tmp_path_factory.mktemp("m"), recent_turns=4, recent_tokens=10_000)
    for i, n in enumerate(tokens):
        mem.add_turn("s", " ".join(f"w{i}x{j}" for j in range(n)), user="u")
    ctx = mem.context("s", "w0x0", user="u", budget_tokens=budget, top_k=5)
    assert ctx["tokens"] <= budget
    chosen = [t["id"] for t in ctx["recent"]] + [h["id"] for h in ctx["recalled"]]
    assert len(chosen) == len(set(chosen))
    assert not set(chosen) & set(ctx["left_out"])
    considered = min(4, len(tokens)) + min(5, max(0, len(tokens) - 4))
    assert len(chosen) + len(ctx["left_out"]) == considered


def test_turn_one_fact_is_recalled_after_leaving_the_window(tmp_path: Path) -> None:
    mem = memory(tmp_path, recent_turns=2)
    mem.add_turn("s1", "I am allergic to peanuts and sesame.", user="ann")
    for text in ("Nice weather today.", "Suggest a movie.", "I had a long day."):
        mem.add_turn("s1", text, user="ann")
    ctx = mem.context(
        "s1", "which food gives me an allergic reaction peanuts", user="ann"
    )
    assert "peanuts" not in " ".join(t["text"] for t in ctx["recent"])
    assert ctx["recalled"][0]["text"] == "I am allergic to peanuts and sesame."
    assert "[memory] I am allergic" in ctx["text"]


def test_recall_is_per_user_and_forgetting_a_user_removes_everything(
    tmp_path: Path,
) -> None:
    mem = memory(tmp_path)
    mem.add_fact("my sister is called Clara", user="ann")
    mem.add_fact("my sister is called Maya", user="bob")
    mem.add_turn("s", "my sister Maya visits", user="bob")
    hits = mem.context("x", "sister called", user="ann")["recalled"]
    assert [h["text"] for h in hits] == ["my sister is called Clara"]
    assert mem.forget(user="bob") == 2
    assert mem.recent("s") == []
    assert mem.store.items(user="bob") == []
    reopened = memory(tmp_path)
    assert [i["text"] for i in reopened.store.items()] == ["my sister is called Clara"]


def test_long_term_store_persists_and_sees_other_writers(tmp_path: Path) -> None:
    a = memory(tmp_path)
    b = memory(tmp_path)  # a second handle, as a reader replica elsewhere has
    (fid,) = [a.add_fact("the wifi password is hunter2", user="u", meta={"src": "t"})]
    assert b.store.get(fid)["meta"] == {"src": "t"}  # type: ignore[index]
    assert b.context("q", "wifi password", user="u")["recalled"][0]["id"] == fid
    a.forget(user="u")
    assert b.context("q", "wifi password", user="u")["recalled"] == []
    assert (tmp_path / "memory" / "chat" / "memory.sqlite").exists()


def test_wrong_embedding_size_and_bad_names_are_named_errors(tmp_path: Path) -> None:
    store = LongTermStore("m", dim=4, root=tmp_path)
    with pytest.raises(MemoryStoreError, match="4-d"):
        store.add(["x"], [[1.0, 2.0]])
    with pytest.raises(MemoryStoreError, match="memory name"):
        LongTermStore("../etc", dim=4, root=tmp_path)
    with pytest.raises(MemoryStoreError, match="user= or session="):
        store.forget()


def test_chat_pipeline_turn_five_gets_the_fact_of_turn_one(tmp_path: Path) -> None:
    turns = [
        "My dog is called Biscuit and he loves the beach.",
        "The weather has been lovely today.",
        "Can you suggest a good movie for tonight?",
        "I had a long day at work.",
        "What is the name of my dog?",
    ]
    items = [
        {"session": sess, "user": user, "text": t.replace("Biscuit", name)}
        for sess, user, name in (("a", "ann", "Biscuit"), ("b", "bob", "Rex"))
        for t in turns
    ]
    env = LocalEnvironment("chat")
    (
        env.from_collection(items)
        .key_by("session")
        .map(
            "memory-read",
            memory="chat",
            root=str(tmp_path),
            embedder="hash",
            recent_turns=3,
            budget_tokens=200,
            parallelism=2,
        )
        .map(lambda x: {**x, "answer": f"noted: {x['text']}"})
        .map(
            "memory-write",
            memory="chat",
            root=str(tmp_path),
            embedder="hash",
            field="answer",
            parallelism=1,
        )
        .collect(name="out")
    )
    result = env.execute(timeout=60)
    last = {
        x["session"]: x for x in result.collected("out") if x["text"].startswith("What")
    }
    for sess, name in (("a", "Biscuit"), ("b", "Rex")):
        ctx = last[sess]["memory"]
        assert all("dog is called" not in t["text"] for t in ctx["recent"])
        assert f"My dog is called {name}" in ctx["recalled"][0]["text"]


def _chat(
    env: LocalEnvironment, items: list[dict[str, Any]], root: Path, n: int
) -> None:
    (
        env.from_collection(items)
        .map(_slowly)
        .key_by("session")
        .map(
            "memory-read",
            memory="resume",
            root=str(root),
            embedder="hash",
            recent_turns=3,
            budget_tokens=400,
            parallelism=n,
        )
        .collect(name="out")
    )


def _slowly(x: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.002)
    return x


def test_short_term_windows_resume_at_another_parallelism(tmp_path: Path) -> None:
    """The windows are managed keyed state: a job cancelled after a checkpoint and
    resumed with 3 replicas instead of 2 still gives every turn its session's
    previous turns (keys moved with their key groups)."""
    sessions = [f"s{i}" for i in range(12)] + list(range(12))  # str and int ids
    items = [
        {"session": s, "user": "u", "text": f"turn {t} of {s}"}
        for t in range(8)
        for s in sessions
    ]
    ckpt = {"checkpoint_interval_s": 0.02, "checkpoint_dir": str(tmp_path / "ck")}
    first = LocalEnvironment("chat-resume", **ckpt)
    _chat(first, items, tmp_path, 2)
    job = first.submit()
    deadline = time.monotonic() + 60
    while not list((tmp_path / "ck").glob("*/chk-*/MANIFEST.json")):
        assert time.monotonic() < deadline, "no checkpoint committed"
        time.sleep(0.01)
    time.sleep(0.1)
    job.cancel()
    with contextlib.suppress(Exception):
        job.wait(30)
    second = LocalEnvironment("chat-resume", **ckpt)
    _chat(second, items, tmp_path, 3)
    result = second.execute(timeout=120, resume=job.job_id)
    last = {}
    for x in result.collected("out"):
        last[x["session"]] = x
    assert set(last) == set(sessions)
    for s, x in last.items():
        assert x["text"] == f"turn 7 of {s}"
        recent = [t["text"] for t in x["memory"]["recent"]]
        assert recent == [f"turn {t} of {s}" for t in (4, 5, 6)], (s, recent)


def test_labelled_dialogues_put_the_fact_first_and_ask_last() -> None:
    ds = make_dialogues(50, users=5, seed=3)
    assert len({d.session for d in ds}) == 50
    assert all(len(d.turns) >= 6 and d.turns[-1].endswith("?") for d in ds)
    assert make_dialogues(50, users=5, seed=3) == ds


def test_example_chat_spec_recalls_turn_one_at_turn_five(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sage_core.graph import load_spec

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    example = Path(__file__).parents[2] / "examples" / "pipelines" / "chat_memory.yaml"
    spec = load_spec(example)
    out = spec.graph.nodes["out"]
    out.ref = type(out.ref)("plugin", "collect")
    env = LocalEnvironment("chat")
    env.graph = spec.graph
    (last,) = [
        x for x in env.execute(timeout=60).collected("out") if "again" in x["text"]
    ]
    assert "Biscuit" in last["memory"]["recalled"][0]["text"]
    assert all("Biscuit" not in t["text"] for t in last["memory"]["recent"])
