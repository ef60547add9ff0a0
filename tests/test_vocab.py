"""Vocabulary pruning (issue #13): the kept tokens, the pruned tokenizer, its export and bits per byte.

Tiny tokenizers are trained here with `tokenizers` (no Hub): a byte-level BPE (GPT-2 / SmolLM2
style) and a byte-fallback BPE (Llama 2 / Gemma style, "▁" for spaces).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from subnas import Supernet, SubNetwork, count_parameters, extract
from subnas.subnet import SubNetworkError
from subnas.vocab import (
    BYTE_FALLBACK_TOKENS,
    TokenizerInfo,
    VocabOrder,
    VocabularyError,
    prune_tokenizer_json,
    pruned_tokenizer,
    token_byte_lengths,
    tokenizer_json,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Tokenization of rare words falls back to smaller pieces; frequent words stay whole.",
    "Naïve café owners in Zürich serve crème brûlée — 日本語のテキストも少し。",
    "In 1905 Einstein published four papers; the annus mirabilis changed physics forever.",
    "def main():\n    return 42  # code, with tabs\tand newlines\n",
] * 4
HELD_OUT = ["Photosynthesis converts light into chemical energy.", "  leading spaces, ÜBER-großes Ünïcödé 🚀 ✓",
            "zyzzyva\n\n\ttabs", "The lazy dog sleeps; the fox does not."]
SPECIALS = ["<|endoftext|>", "<|im_start|>"]


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|im_start|>")


def byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """Gemma-style: spaces become "▁", unknown characters become <0xNN> byte tokens."""
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Replace(" ", "▁")
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    data = json.loads(base.to_str())
    learned = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({t: 4 + b for b, t in enumerate(BYTE_FALLBACK_TOKENS)})
    for token, _ in learned:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in data["model"]["merges"]], unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")


TOKENIZERS = {"byte_level": byte_level_tokenizer, "byte_fallback": byte_fallback_tokenizer}
_cache: dict[str, Any] = {}


def tokenizer_for(kind: str) -> PreTrainedTokenizerFast:
    if kind not in _cache:
        _cache[kind] = TOKENIZERS[kind]()
    return _cache[kind]


def order_for(tokenizer: Any) -> VocabOrder:
    from subnas.vocab import token_counts

    return VocabOrder.from_counts(token_counts(tokenizer, CORPUS, len(tokenizer)), TokenizerInfo.of(tokenizer),
                                  source="test")


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_pruned_tokenizer_round_trips_any_text(kind: str) -> None:
    full = tokenizer_for(kind)
    order = order_for(full)
    kept = order.kept(order.min_size + 20)
    assert len(kept) == order.min_size + 20 and order.required <= set(kept)
    pruned = pruned_tokenizer(full, kept)
    assert len(pruned) == len(kept)

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(text=st.text(max_size=40) | st.sampled_from(HELD_OUT))
    def check(text: str) -> None:
        ids = pruned.encode(text, add_special_tokens=False)
        assert all(0 <= i < len(kept) for i in ids)
        assert pruned.decode(ids) == full.decode(full.encode(text, add_special_tokens=False))
        if kind == "byte_level":
            assert pruned.decode(ids) == text
            assert int(token_byte_lengths(pruned)[ids].sum()) == len(text.encode("utf-8"))

    check()


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_rare_words_fall_back_to_kept_smaller_pieces(kind: str) -> None:
    full = tokenizer_for(kind)
    order = order_for(full)
    kept = order.kept(order.min_size + 30)
    pruned = pruned_tokenizer(full, kept)
    text = "The quick brown fox jumps over annus mirabilis"
    full_ids, pruned_ids = full.encode(text, add_special_tokens=False), pruned.encode(text, add_special_tokens=False)
    assert len(pruned_ids) > len(full_ids)  # rarer words are split further...
    assert pruned.decode(pruned_ids) == text  # ...and nothing is lost
    # Every kept non-required token is reachable: its merge's parts are kept too.
    info = TokenizerInfo.of(full)
    for t in set(kept) - order.required:
        if t in info.parents:
            assert set(info.parents[t]) <= set(kept)
    # Special tokens keep their meaning under the new numbering.
    assert pruned.convert_ids_to_tokens(pruned.eos_token_id) == full.eos_token


def test_pruned_merges_keep_only_kept_parts_and_results() -> None:
    full = tokenizer_for("byte_level")
    order = order_for(full)
    kept = order.kept(order.min_size + 10)
    data = prune_tokenizer_json(tokenizer_json(full), kept)
    vocab = data["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    for a, b in data["model"]["merges"]:
        assert a in vocab and b in vocab and a + b in vocab
    assert 0 < len(data["model"]["merges"]) < len(tokenizer_json(full)["model"]["merges"])


def test_unsupported_and_incomplete_vocabularies_are_named() -> None:
    word = Tokenizer(models.WordLevel(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(VocabularyError, match="supports BPE tokenizers.*'WordLevel'"):
        TokenizerInfo.of(PreTrainedTokenizerFast(tokenizer_object=word))
    full = tokenizer_for("byte_level")
    with pytest.raises(VocabularyError, match="drops .* token"):
        prune_tokenizer_json(tokenizer_json(full), list(range(10)))
    order = order_for(full)
    with pytest.raises(VocabularyError, match=f"legal vocabulary sizes are {order.min_size}"):
        order.kept(10)
    with pytest.raises(SubNetworkError, match="vocab_size=0 is illegal"):
        SubNetwork(vocab_size=0).resolve(Supernet.from_model(tiny_llama(64)).subnas_config)
    with pytest.raises(SubNetworkError, match="vocab_indices: index 99 is out of range"):
        SubNetwork(vocab_indices=[1, 99]).resolve(Supernet.from_model(tiny_llama(64)).subnas_config)


def tiny_llama(vocab: int, tie: bool = True, tokenizer: Any = None) -> LlamaForCausalLM:
    torch.manual_seed(0)
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} if tokenizer else {}
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=tie, **ids)
    return LlamaForCausalLM(cfg).eval()


_STOCK_CHECK = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, texts = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
out = {"roundtrip": [tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in texts],
       "ids": tok.encode(texts[0], add_special_tokens=False), "vocab": len(tok),
       "rows": model.get_input_embeddings().weight.shape[0], "subnas": "subnas" in sys.modules,
       "eos": [tok.eos_token, tok.eos_token_id, model.config.eos_token_id]}
with torch.no_grad():
    out["logits"] = model(torch.tensor([out["ids"]])).logits[0, -1, :8].tolist()
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_vocab_pruned_export_loads_without_subnas(kind: str, tmp_path: Path) -> None:
    """The export's tokenizer and model load with stock Auto classes in a process that never imports
    subnas; held-out text round-trips; the export's logits on its own tokens equal the supernet's."""
    full = tokenizer_for(kind)
    supernet = Supernet.from_model(tiny_llama(len(full), tie=kind == "byte_level", tokenizer=full), tokenizer=full)
    order = order_for(full)
    subnet = SubNetwork(n_layers=1, n_embd=24, vocab_indices=order.kept(order.min_size + 40))
    result = extract(supernet, subnet, tmp_path / "m")
    assert result.format == "stock"
    assert result.num_parameters == count_parameters(supernet, subnet)
    texts = HELD_OUT[:3] if kind == "byte_level" else ["Photosynthesis converts light.", "zyzzyva café 🚀"]
    proc = subprocess.run([sys.executable, "-c", _STOCK_CHECK, str(tmp_path / "m"), json.dumps(texts)],
                          capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["subnas"] and all(out["roundtrip"])
    assert out["vocab"] == out["rows"] == order.min_size + 40
    assert out["eos"][0] == full.eos_token and out["eos"][1] == out["eos"][2]
    pruned = pruned_tokenizer(full, subnet.vocab_indices)
    ids = pruned.encode(texts[0], add_special_tokens=False)
    assert ids == out["ids"]
    with torch.no_grad(), supernet.sub_network(subnet):
        evaluated = supernet(torch.tensor([ids])).logits[0, -1, :8]
    torch.testing.assert_close(torch.tensor(out["logits"]), evaluated, rtol=1e-4, atol=1e-4)


def test_vocab_order_keeps_frequent_tokens() -> None:
    full = tokenizer_for("byte_level")
    order = order_for(full)
    kept = set(order.kept(order.min_size + 15))
    the = full.convert_tokens_to_ids("Ġthe")
    assert the in kept  # among the most frequent words of the corpus
    assert order.kept(len(full)) == tuple(range(len(full)))


def test_bits_per_byte_of_pruned_subnetwork_matches_its_export_and_lm_eval(tmp_path: Path) -> None:
    """Bits per byte is the same number in place (pruned tokenizer, gathered rows), on the export,
    and from lm-eval's own ``bits_per_byte`` (a loglikelihood_rolling task, like wikitext) run on
    the stock export; per-token perplexity differs between vocabularies, bits per byte is comparable."""
    from subnas.evaluation._perplexity import document_bits_per_byte, evaluate, target_bytes, tokenize_for_eval
    from subnas.evaluation._lm_eval import evaluate_tasks

    full = tokenizer_for("byte_level")
    supernet = Supernet.from_model(tiny_llama(len(full), tokenizer=full), tokenizer=full)
    order = order_for(full)
    subnet = SubNetwork(n_layers=1, vocab_indices=order.kept(order.min_size + 40))
    pruned = pruned_tokenizer(full, subnet.vocab_indices)
    docs = [d for d in HELD_OUT if d.strip()] + ["The quick brown fox.", "Ünïcödé 🚀 and the lazy dog"]
    with supernet.sub_network(subnet):
        ours = document_bits_per_byte(supernet.model, pruned, docs, max_length=64)
    extract(supernet, subnet, tmp_path / "m")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    theirs_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert document_bits_per_byte(exported, theirs_tok, docs, max_length=64) == pytest.approx(ours, rel=1e-5)

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "bpb.yaml").write_text(
        f"task: subnas_tiny_bpb\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n")
    out = evaluate_tasks(str(tmp_path / "m"), ["subnas_tiny_bpb"], include_path=tasks, include_defaults=False,
                         batch_size=1)
    assert out["results"]["subnas_tiny_bpb"]["bits_per_byte,none"] == pytest.approx(ours, rel=1e-4)
    # In place: lm-eval runs the sub-network inside the supernet through its pruned tokenizer.
    in_place = evaluate_tasks(supernet, ["subnas_tiny_bpb"], subnet=subnet, include_path=tasks,
                              include_defaults=False, batch_size=1)
    assert in_place["results"]["subnas_tiny_bpb"]["bits_per_byte,none"] == pytest.approx(ours, rel=1e-4)

    # The packed evaluation (what `subnas evaluate` and the search report) counts bytes exactly.
    tokens = tokenize_for_eval([d for d in docs if d.isascii()] * 4, pruned, seq_len=16, num_seqs=4, cache=False)
    text = "".join(pruned.decode(row[1:].tolist(), skip_special_tokens=True) for row in tokens)
    assert target_bytes(pruned, tokens) == len(text.encode("utf-8"))
    (tmp_path / "docs.txt").write_text("\n\n".join(docs * 4))
    result = evaluate(supernet, data=str(tmp_path / "docs.txt"), subnet=subnet, seq_len=16, num_seqs=2,
                      progress=False)
    assert result["vocab_size"] == len(pruned) and result["bytes"] > 0
    assert result["bits_per_byte"] == pytest.approx(
        result["nll"] * 2 * 15 / (result["bytes"] * math.log(2)))
    whole = evaluate(supernet, data=str(tmp_path / "docs.txt"), subnet=subnet, seq_len=16, num_seqs=None,
                     progress=False)  # every whole block of the file
    assert whole["num_seqs"] == whole["tokens"] // 16 > 2 and whole["bytes"] > result["bytes"]


@pytest.mark.parametrize("space_name", ["coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise"])
@pytest.mark.parametrize("family", ["smollm2", "gemma3-270m"])
def test_spaces_with_a_vocabulary_choice_stay_legal_and_in_bin(space_name: str, family: str) -> None:
    """A 10M bin of SmolLM2 / Gemma 3 (whose full embedding alone exceeds it) is reachable once the
    vocabulary is a dimension; every candidate is a member, in its bin, counted by the one counter."""
    import random

    from subnas.bins import ParameterBin
    from tests.family_configs import CONFIGS, space_for

    space = space_for(space_name, family, vocab_size="4k,8k,16k,32k,full")
    assert "v" in space.dimensions and space.vocab_choices[-1] == CONFIGS[family].vocab_size
    b = ParameterBin.parse("9M-11M")
    rng = random.Random(0)
    seeds = space.one_shot(b)
    assert seeds and all(count_parameters(CONFIGS[family], s) in b for s in seeds)

    @settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**16))
    def check(seed: int) -> None:
        rng.seed(seed)
        a, b2 = space.sample_in(b, rng), space.sample_in(b, rng)
        assert a is not None and b2 is not None
        children = [a, space.mutate_in(a, b, rng)]
        if not space.layerwise or a.n_layers == b2.n_layers:
            children.append(space.crossover_in(a, b2, b, rng))
        for child in children:
            if child is None:
                continue
            assert space.contains(child)
            n = count_parameters(CONFIGS[family], child)
            assert n == space.count(child) and n in b
            assert child.resolve(CONFIGS[family]).vocab_size(CONFIGS[family]) in space.vocab_choices

    check()


def test_spaces_without_a_vocabulary_choice_are_unchanged() -> None:
    import random

    from subnas import get_search_space
    from tests.family_configs import CONFIGS

    plain = get_search_space("coarse-uniform", CONFIGS["smollm2"])
    assert "v" not in plain.dimensions and plain.vocab_choices == ()
    s = plain.sample(random.Random(3))
    assert s.vocab_size is None and s.vocab_indices is None
    assert not plain.contains(SubNetwork(n_layers=2, vocab_size=4096))  # pruned: not a member here
    with pytest.raises(Exception, match="vocab_size: choices must lie in"):
        get_search_space("coarse-uniform", CONFIGS["smollm2"], vocab_size="4k,64k")


def test_search_over_vocabularies_ranks_by_bits_per_byte(tmp_path: Path) -> None:
    """With a vocabulary choice the search fitness is bits per byte (perplexity recorded beside it);
    the winner's file holds the most frequent tokens explicitly and evaluates to the same number."""
    from subnas.evaluation._perplexity import evaluate
    from subnas.search_driver import search

    full = tokenizer_for("byte_level")
    supernet = Supernet.from_model(tiny_llama(len(full), tokenizer=full), tokenizer=full)
    (tmp_path / "text.txt").write_text("\n\n".join(CORPUS * 6))
    order = order_for(full)
    choices = {"vocab_size": [order.min_size + 20, order.min_size + 80, len(full)], "n_embd": "16:32:8"}
    result = search(supernet, space="coarse-uniform", bins=[(1, 10**6)], data=str(tmp_path / "text.txt"),
                    seq_len=32, num_seqs=4, order="natural", calibration=str(tmp_path / "text.txt"), trials=4,
                    out_dir=tmp_path / "run", space_choices=choices, progress=False)
    entry = result["bins"][0]
    assert entry["metric"] == "bits_per_byte"
    best = SubNetwork.load(entry["best_subnet_file"])
    again = evaluate(supernet, data=str(tmp_path / "text.txt"), subnet=best, seq_len=32, num_seqs=4, progress=False)
    assert again["bits_per_byte"] == pytest.approx(entry["best_fitness"], rel=1e-6)


def test_cli_evaluate_reports_bits_per_byte_for_a_pruned_subnetwork(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from subnas.cli import main

    full = tokenizer_for("byte_level")
    tiny_llama(len(full), tokenizer=full).save_pretrained(tmp_path / "model")
    full.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text("\n\n".join(CORPUS))
    order = order_for(full)
    SubNetwork(n_layers=1, vocab_indices=order.kept(order.min_size + 30)).save(tmp_path / "s.json")
    args = ["--data", str(tmp_path / "text.txt"), "--seq-len", "16", "--num-seqs", "2", "--json"]
    assert main(["evaluate", str(tmp_path / "model"), "--subnet", str(tmp_path / "s.json"), *args]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(tmp_path / "model"), *args]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert pruned["vocab_size"] == order.min_size + 30 and whole["vocab_size"] == len(full)
    assert pruned["bits_per_byte"] > 0 and whole["bits_per_byte"] > 0
    assert pruned["bytes"] < whole["bytes"]  # the same number of tokens covers less text with fewer merges


@pytest.mark.parametrize("tie", [True, False])
def test_importance_fitness_counts_the_kept_vocabulary(tie: bool) -> None:
    """The importance score multiplies the embedding's term by the share of rows kept (its share of
    parameters): 1.0 for the full model however it is written, lower for every pruned vocabulary,
    and falling with the vocabulary at fixed structure."""
    from subnas.evaluation._importance import _mass
    from subnas_plugins.fitness import ImportanceFitness

    supernet = Supernet.from_model(tiny_llama(400, tie=tie))
    fitness = ImportanceFitness(supernet, method="magnitude")
    scorer = fitness.scorer
    assert fitness(SubNetwork()) == fitness(SubNetwork(vocab_size=400)) == 1.0
    scores = [fitness(SubNetwork(vocab_indices=list(range(0, 400, step)))) for step in (1, 2, 4, 8)]
    assert scores[0] == 1.0 and scores == sorted(scores, reverse=True) and len(set(scores)) == 4
    assert scores[1] == pytest.approx(1.0 - scorer.embd_share / 2)  # half the rows: half the embedding term
    structural = SubNetwork(n_layers=1, n_embd=24)  # a quarter of the rows: a quarter of its embedding term
    embedding_term = scorer.embd_share * _mass(scorer.embd, structural.resolve(supernet.subnas_config).embd)
    assert fitness(SubNetwork(n_layers=1, n_embd=24, vocab_size=100)) == pytest.approx(
        fitness(structural) - 0.75 * embedding_term)
