"""Helpers for the training tests: a real (fast) character tokenizer, tiny model folders, text."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from tests.conftest import tiny_hf_model

# 0..2 special, then printable ASCII: 3 + 95 = 98 ids, under the tiny configs' vocabulary of 128.
_CHARS = [chr(c) for c in range(32, 127)]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level `transformers` fast tokenizer (BPE without merges): saves and reloads."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(_CHARS)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_model_dir(root: Path, name: str = "llama-gqa", seed: int = 0) -> Path:
    """A tiny random-weight model folder (stock `transformers` format) with the char tokenizer."""
    out = root / f"model-{name}-{seed}"
    if not out.exists():
        model = tiny_hf_model(name, seed=seed)
        model.save_pretrained(out)
        char_tokenizer().save_pretrained(out)
    return out


_WORDS = ("the cat dog bird sat ran on under a mat tree house quickly slowly red blue small big and "
          "then saw it").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` short, repetitive pseudo-English documents: learnable in a few steps."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))) + "." for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], column: str = "text") -> Path:
    import json

    path.write_text("".join(json.dumps({column: d}) + "\n" for d in docs))
    return path


def write_text(path: Path, n: int = 200, seed: int = 0) -> Path:
    path.write_text("\n".join(sentences(n, seed)))
    return path


def state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def wait_for_completed_trials(journal: Path, completed: Any, at_least: int, timeout: float) -> None:
    """Poll until a worker's study in ``journal`` holds ``at_least`` completed trials (``completed()``
    counts them), or ``timeout`` seconds pass: what the kill-and-resume tests wait for before the kill.
    The journal exists a moment before the worker's study is written into it (a KeyError then)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if journal.exists() and completed() >= at_least:
                return
        except KeyError:
            continue
