"""Token packing for evaluation and perplexity (the fitness search uses)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

from subnas import SubnasConfig, SubnasForCausalLM, SubNetwork
from subnas.evaluation import _perplexity as evaluate
from subnas.data._assets import DataSourceError
from subnas.evaluation._perplexity import check_sequence_length, mean_token_nll, perplexity, requires_bos, tokenize_for_eval


class CharTokenizer:
    """One token per character (id = ord - 94 for lowercase letters); BOS 1, EOS 2."""

    bos_token_id = 1
    eos_token_id = 2
    name_or_path = "char"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert not add_special_tokens
        self.calls += 1
        return [ord(c) - 94 for c in text]

    def get_vocab(self) -> dict[str, int]:
        return {chr(i + 94): i for i in range(3, 29)}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    # Integration tests share the real cache (its converted model); unit tests get their own.
    if "integration" not in request.keywords:
        monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


def ids(text: str) -> list[int]:
    return [ord(c) - 94 for c in text]


def test_packing_joins_documents_with_eos_and_cuts_blocks() -> None:
    tokens = tokenize_for_eval(["abc", "", "de", "fghij"], CharTokenizer(), seq_len=3, num_seqs=3)
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [ids("abc"), [2] + ids("de"), [2] + ids("fg")]


def test_packing_with_bos_starts_every_block_with_bos() -> None:
    tokens = tokenize_for_eval(["abc", "de"], CharTokenizer(), seq_len=3, num_seqs=3, add_bos=True)
    assert tokens.tolist() == [[1] + ids("ab"), [1] + ids("c") + [2], [1] + ids("de")]


def test_num_seqs_none_scores_every_whole_block() -> None:
    """``num_seqs=None`` is all of a split (the tail shorter than a block is left out), the same
    blocks a fixed count takes first."""
    docs = ["abcde", "fghij", "kl"]  # 5 + 1 + 5 + 1 + 2 = 14 tokens: four blocks of 3, two left over
    every = tokenize_for_eval(docs, CharTokenizer(), seq_len=3, num_seqs=None)
    assert every.shape == (4, 3)
    assert torch.equal(every[:2], tokenize_for_eval(docs, CharTokenizer(), seq_len=3, num_seqs=2))
    assert tokenize_for_eval(docs, CharTokenizer(), seq_len=3, num_seqs=None, add_bos=True).shape == (7, 3)
    with pytest.raises(DataSourceError, match=r"has 2 tokens.*holds 0 sequence\(s\)"):
        tokenize_for_eval(["ab"], CharTokenizer(), seq_len=5, num_seqs=None)


def test_too_little_data_says_how_many_sequences_fit() -> None:
    with pytest.raises(DataSourceError, match=r"has 11 tokens.*holds 2 sequence\(s\) of 5 tokens.*--num-seqs 2"):
        tokenize_for_eval(["abcde", "fghij"], CharTokenizer(), seq_len=5, num_seqs=3)
    with pytest.raises(DataSourceError, match=r"holds 0 sequence\(s\).*smaller --seq-len"):
        tokenize_for_eval(["ab"], CharTokenizer(), seq_len=5, num_seqs=1)
    with pytest.raises(ValueError, match="seq_len >= 2"):
        tokenize_for_eval(["ab"], CharTokenizer(), seq_len=1, num_seqs=1)


def test_bos_needed_but_missing() -> None:
    tokenizer = CharTokenizer()
    tokenizer.bos_token_id = None  # type: ignore[assignment]
    with pytest.raises(ValueError, match="no BOS"):
        tokenize_for_eval(["abcdef"], tokenizer, seq_len=3, num_seqs=1, add_bos=True)


def test_cache_returns_identical_tensor_without_tokenizing(tmp_path: Path) -> None:
    tokenizer = CharTokenizer()
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    first = tokenize_for_eval(texts, tokenizer, seq_len=8, num_seqs=4)
    calls = tokenizer.calls
    second = tokenize_for_eval(texts, tokenizer, seq_len=8, num_seqs=4)
    assert tokenizer.calls == calls and torch.equal(first, second)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 1
    # Every part of the key matters.
    assert torch.equal(tokenize_for_eval(texts, tokenizer, seq_len=8, num_seqs=3), first[:3])
    assert not torch.equal(tokenize_for_eval(texts, tokenizer, seq_len=8, num_seqs=4, add_bos=True), first)
    assert not torch.equal(tokenize_for_eval(["the quick brown fo", "xjumps over the lazy dog"], tokenizer,
                                             seq_len=8, num_seqs=4), first)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 4


def test_unreadable_cache_is_recomputed(tmp_path: Path) -> None:
    tokenizer = CharTokenizer()
    first = tokenize_for_eval(["abcdefgh"], tokenizer, seq_len=4, num_seqs=2)
    (cached,) = (tmp_path / "cache" / "tokens").glob("*.bin")
    cached.write_bytes(b"garbage")
    assert torch.equal(tokenize_for_eval(["abcdefgh"], tokenizer, seq_len=4, num_seqs=2), first)
    tokenize_for_eval(["abcdefgh"], CharTokenizer(), seq_len=4, num_seqs=2, cache=False)


def test_evaluation_tokens_are_the_first_training_blocks(tmp_path: Path) -> None:
    from subnas.data import load_token_blocks, pack_texts

    texts = ["the quick brown fox", "", "jumps over", "the lazy dog"]
    (tmp_path / "docs.jsonl").write_text("\n".join(f'{{"text": "{t}"}}' for t in texts))
    for add_bos in (False, True):
        tokens = tokenize_for_eval(texts, CharTokenizer(), seq_len=6, num_seqs=5, add_bos=add_bos)
        blocks = load_token_blocks(str(tmp_path / "docs.jsonl"), CharTokenizer(), seq_len=6, add_bos=add_bos)
        assert torch.equal(tokens, blocks.batch(range(5)))
        assert torch.equal(tokens, pack_texts(texts, CharTokenizer(), seq_len=6, add_bos=add_bos).head(5))
    # One on-disk cache serves both.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tokens"]


def uniform_model(vocab: int) -> Any:
    return lambda input_ids: SimpleNamespace(logits=torch.zeros(*input_ids.shape, vocab))


def test_uniform_model_has_perplexity_vocab_size() -> None:
    tokens = torch.randint(0, 37, (5, 9))
    assert perplexity(uniform_model(37), tokens, batch_size=2, progress=False) == pytest.approx(37.0, rel=1e-6)
    assert mean_token_nll(uniform_model(37), tokens, progress=False) == pytest.approx(math.log(37))


def test_chunked_loss_equals_full_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 11, 13)
    tokens = torch.randint(0, 13, (3, 11))

    def model(input_ids: torch.Tensor) -> Any:
        return SimpleNamespace(logits=logits[: input_ids.shape[0]])

    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 13), tokens[:, 1:].reshape(-1)).item()
    monkeypatch.setattr(evaluate, "_CE_CHUNK_ELEMENTS", 13 * 3)  # 3 rows per chunk
    assert mean_token_nll(model, tokens, batch_size=3, progress=False) == pytest.approx(expected, rel=1e-6)


def tiny_llama() -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                         attention_dropout=0.0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def manual_perplexity(model: Any, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(tokens).logits
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    return math.exp(nll.item())


def test_perplexity_matches_manual_computation_on_a_transformers_model() -> None:
    model = tiny_llama().train()  # evaluation must switch to eval mode and back
    torch.manual_seed(1)
    tokens = torch.randint(0, 97, (7, 16))
    expected = manual_perplexity(model.eval(), tokens)
    model.train()
    got = perplexity(model, tokens, batch_size=3, progress=False)  # batches of 3, 3, 1
    assert got == pytest.approx(expected, rel=1e-5)
    assert model.training
    assert 50 < got < 200  # random weights: near the vocabulary size


def test_perplexity_of_a_subnetwork_in_the_supernet() -> None:
    torch.manual_seed(0)
    model = SubnasForCausalLM(SubnasConfig(vocab_size=61, hidden_size=32, num_hidden_layers=3,
                                           num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                           max_position_embeddings=64)).eval()
    model.set_sub_network(SubNetwork(n_layers=2, n_embd=16, num_heads=2))
    tokens = torch.randint(0, 61, (4, 12))
    assert perplexity(model, tokens, batch_size=3, progress=False) == pytest.approx(
        manual_perplexity(model, tokens), rel=1e-5)


def test_sequence_longer_than_the_context_is_rejected() -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"sequence length 33 exceeds the model's context of 32 tokens"):
        perplexity(model, torch.zeros(1, 33, dtype=torch.long), progress=False)
    check_sequence_length(model, 32)
    check_sequence_length(uniform_model(3), 10_000)  # no config: nothing to check


def test_broken_models_give_inf_or_nan_instead_of_raising() -> None:
    tokens = torch.zeros(2, 4, dtype=torch.long)

    def confident_and_wrong(input_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*input_ids.shape, 5)
        logits[..., 1] = 1e4
        return logits  # a bare tensor is accepted as the logits

    def nan_model(input_ids: torch.Tensor) -> Any:
        return SimpleNamespace(logits=torch.full((*input_ids.shape, 5), float("nan")))

    assert perplexity(confident_and_wrong, tokens, progress=False) == math.inf
    assert math.isnan(perplexity(nan_model, tokens, progress=False))
    with pytest.raises(ValueError, match="seq_len >= 2"):
        perplexity(nan_model, torch.zeros(2, 1, dtype=torch.long), progress=False)


def test_requires_bos() -> None:
    assert requires_bos(SubnasConfig(require_bos=True))
    assert not requires_bos(SubnasConfig())
    assert requires_bos(Gemma3TextConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=1, num_key_value_heads=1, head_dim=16))
    assert not requires_bos(tiny_llama())


@pytest.mark.integration
def test_default_model_perplexity_on_default_validation_split() -> None:
    from transformers import AutoTokenizer

    from subnas.data import default_model_dir, resolve_text_source

    folder = default_model_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = tokenize_for_eval(resolve_text_source("default"), tokenizer, seq_len=256, num_seqs=8)
    assert tokens.shape == (8, 256)
    assert torch.equal(tokens, tokenize_for_eval(resolve_text_source("default"), tokenizer, seq_len=256, num_seqs=8))
    ppl = perplexity(model, tokens, batch_size=4, progress=False)
    print(f"SmolLM2-135M-Instruct (Q4_1) perplexity, default validation, 8 x 256 tokens: {ppl:.3f}")
    assert 5.0 < ppl < 40.0  # a real LM on real text (docs/design.md#offline-model-and-text)


def test_cli_num_seqs_null_scores_the_whole_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``subnas evaluate --num-seqs null`` reaches `evaluate` as ``num_seqs=None`` (every whole
    sequence of the text, as the benchmarks score a whole split); a count still arrives as one."""
    from subnas.cli import main

    seen: list[Any] = []
    real = evaluate.evaluate

    @functools.wraps(real)  # the CLI calls the API by its signature
    def fake(model: Any, **options: Any) -> dict[str, Any]:
        seen.append(options["num_seqs"])
        return {"perplexity": 1.0, "bits_per_byte": None, "tokens": 1, "parameters": 1, "vocab_size": 1}

    monkeypatch.setattr(evaluate, "evaluate", fake)
    for given, expected in (("null", None), ("7", 7)):
        main(["evaluate", "m", "--data", "default:test", "--num-seqs", given])
        assert seen[-1] == expected
    assert "perplexity 1.0000 on 1 tokens" in capsys.readouterr().out
