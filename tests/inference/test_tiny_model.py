"""The tiny random-weight Llama: loadable, ChatML template, deterministic, reusable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sage_plugins.engines.tiny_model import MARKER, TinyModelError, make_tiny_model

pytestmark = pytest.mark.inference


def test_tiny_model_loads_with_the_recipe_architecture(tiny_model: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model)
    assert (config.hidden_size, config.num_hidden_layers) == (128, 2)
    assert (config.num_attention_heads, config.head_dim) == (2, 64)
    assert config.num_key_value_heads == 1 and not config.tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert len(tokenizer) == config.vocab_size == 4096
    text = "def handler(request):\n    return 42"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    assert config.eos_token_id == tokenizer.eos_token_id


def test_greedy_generation_in_transformers_is_deterministic(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = tokenizer("import os", return_tensors="pt").input_ids
    with torch.no_grad():
        runs = [
            model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
            for _ in range(2)
        ]
    assert runs[0].shape == (1, ids.shape[1] + 6)
    assert torch.equal(runs[0], runs[1])


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_seed_same_weights_and_existing_model_is_reused(
    tiny_model: Path, tmp_path: Path, sage_cli: Any
) -> None:
    again = make_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model)
    assert (again / "tokenizer.json").read_bytes() == (
        tiny_model / "tokenizer.json"
    ).read_bytes()
    stamp = (again / "model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(sage_cli, ["engine", "make-tiny-model", str(again)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"model": str(again), "meaningful": False}
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert _digest(other) != _digest(tiny_model)


def test_refuses_a_directory_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TinyModelError, match="not a tiny model"):
        make_tiny_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / MARKER).exists()
