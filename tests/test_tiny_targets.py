"""benchmarks/tiny_targets.py: equal bytes for every vocabulary, and the report's spread (no model)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

_SPEC = importlib.util.spec_from_file_location(
    "tiny_targets", Path(__file__).resolve().parents[1] / "benchmarks" / "tiny_targets.py")
assert _SPEC is not None and _SPEC.loader is not None
tiny = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tiny)


class Chars:
    """One token per character (``group`` characters per token: a "larger vocabulary"); BOS 0."""

    bos_token_id, eos_token_id = 0, 1

    def __init__(self, group: int) -> None:
        self.group = group

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + i % 5 for i in range(math.ceil(len(text) / self.group))]


def uniform(vocab: int) -> Any:
    return lambda ids: SimpleNamespace(logits=torch.zeros(*ids.shape, vocab))


def test_every_vocabulary_is_scored_on_the_same_bytes() -> None:
    docs = ["abcdefgh", "héllo wörld"]  # bytes, not characters: 8 + 13
    fine = tiny.score_documents(uniform(16), Chars(1), docs, max_length=4)
    coarse = tiny.score_documents(uniform(16), Chars(2), docs, max_length=4)
    assert fine["bytes"] == coarse["bytes"] == 21 and fine["documents"] == 2
    # A uniform model pays log2(16) = 4 bits per token: more tokens for the same bytes cost more.
    assert fine["per_document"][0] == pytest.approx(4 * 8 / 8) and coarse["per_document"][0] == pytest.approx(4 * 4 / 8)
    assert fine["bits_per_byte"] == pytest.approx(4 * (8 + 11) / 21)


def test_report_states_each_gap_with_its_spread_over_documents() -> None:
    def row(variant: str, vocab: int, per: list[float]) -> dict[str, Any]:
        return {"variant": variant, "subnet": {"n_layers": 2, "n_embd": 64, "num_heads": 9, "query_groups": 3,
                                              "head_size": 64, "intermediate_size": 128},
                "equal_bytes": {"bits_per_byte": sum(per) / len(per), "per_document": per, "vocab_size": vocab,
                                "parameters": 1000}}

    data = {"equal_bytes_setup": {"eval_data": "default:test", "max_length": 256},
            "runs": {"10M/full": row("full", 49152, [2.0, 2.0, 3.0]),
                     "10M/pruned": row("pruned", 8192, [2.5, 1.9, 3.2])},
            "teacher_vocab": {"49152": {"bits_per_byte": 0.8}, "8192": {"bits_per_byte": 1.4}}}
    text = tiny.report(data)
    assert "| 10M | +0.200 | -0.100 … +0.500 | 2 of 3 |" in text
    assert "not measured on equal bytes" in text and "| bits per byte | 1.400 | 0.800 |" in text
