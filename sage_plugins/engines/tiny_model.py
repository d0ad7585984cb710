"""A tiny random-weight Llama with a locally trained tokenizer, for offline engines.

No trained generative model can be downloaded on an offline machine, so SAGE makes one:
a 2-layer Llama (hidden 128, 2 attention heads of size 64, 1 KV head, untied
embeddings, 2048 positions) with weights drawn from a fixed seed, and a byte-level BPE
tokenizer trained on the Python standard library's own source text, wrapped as a
``PreTrainedTokenizerFast`` with a ChatML chat template. vLLM (CPU or GPU) and
``transformers`` both load it; greedy decoding is deterministic. Its output is
**meaningless text** (random weights): use it to test serving, streaming, token counts
and timing, never answer quality.

``sage engine make-tiny-model DIR`` calls :func:`make_tiny_model`. Needs ``torch``,
``transformers`` and ``tokenizers`` (the ``llm`` extra), imported only when called.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sage_core.common.errors import SageError

logger = logging.getLogger(__name__)

#: special tokens of the ChatML template; <|im_end|> ends a turn (the EOS token)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MARKER = "sage-tiny-model.json"
#: architecture of the tiny model; head_dim 64 is one that vLLM's CPU attention takes
ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "head_dim": 64,
    "num_key_value_heads": 1,
    "intermediate_size": 256,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


class TinyModelError(SageError):
    """The tiny model could not be made (missing packages, unusable directory)."""


def _training_text(max_bytes: int) -> Iterator[str]:
    """Source files of the standard library, in a fixed order, up to ``max_bytes``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        total += len(text)
        yield text
        if total >= max_bytes:
            return


def _train_tokenizer(vocab_size: int, max_bytes: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(max_bytes), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = int(ARCHITECTURE["max_position_embeddings"])
    return fast


def is_tiny_model(directory: str | os.PathLike[str]) -> bool:
    """True if ``directory`` holds a complete model made by :func:`make_tiny_model`."""
    path = Path(directory)
    return (path / MARKER).is_file() and (path / "config.json").is_file()


def make_tiny_model(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    vocab_size: int = 4096,
    training_bytes: int = 4_000_000,
    force: bool = False,
) -> Path:
    """Write the tiny model and its tokenizer to ``directory``; returns the path.

    The directory is filled atomically (built next to it, then renamed), so a crash
    leaves no half-written model. An existing model made with the same settings is
    kept unless ``force``.

    Args:
        directory: where the model goes (created; must be empty or a tiny model).
        seed: seed of the random weights.
        vocab_size: size of the BPE vocabulary.
        training_bytes: how much standard-library source text trains the tokenizer.
        force: rebuild even if the directory already holds this model.

    Raises:
        TinyModelError: torch/transformers/tokenizers are missing, or ``directory``
            holds something else.
    """
    path = Path(directory).expanduser().resolve()
    settings = {
        "seed": seed,
        "vocab_size": vocab_size,
        "training_bytes": training_bytes,
        **ARCHITECTURE,
    }
    if is_tiny_model(path) and not force:
        existing = json.loads((path / MARKER).read_text())
        if existing.get("settings") == settings:
            logger.info("tiny model already in %s", path)
            return path
    if path.exists() and any(path.iterdir()) and not is_tiny_model(path):
        raise TinyModelError(
            f"{path} exists and is not a tiny model made by SAGE; choose an empty or "
            f"new directory"
        )
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise TinyModelError(
            f"making the tiny model needs torch, transformers and tokenizers "
            f"({exc}); install them with: pip install 'sage-dask[llm]'"
        ) from exc

    tokenizer = _train_tokenizer(vocab_size, training_bytes)
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=special["<|im_start|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
        torch_dtype="float32",
        **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        marker = {
            "made_by": "sage engine make-tiny-model",
            "note": "random weights: generated text is meaningless",
            "settings": settings,
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.chmod(0o755)
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("tiny model written to %s", path)
    return path
