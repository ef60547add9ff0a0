"""Training data, pretraining, distillation, checkpoints and resume on tiny random-weight models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

from subnas.data._assets import DataSourceError
from subnas.training._checkpoints import CheckpointMismatchError, list_checkpoints
from subnas.data._sources import parse_text_source
from subnas.data._tokens import BlockOrder, load_token_blocks, shard
from subnas.training import TrainConfig, VocabularyMismatchError, distill, make_config, pretrain
from subnas.training._loop import NonFiniteLossError, lr_at
from subnas.training._log import read_log
from tests._train_helpers import char_tokenizer, sentences, tiny_model_dir, write_jsonl, write_text

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, min_lr=3e-4, progress=False, val_data=None)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    return {"model": tiny_model_dir(tmp_path), "data": write_text(tmp_path / "train.txt", 300),
            "val": write_text(tmp_path / "val.txt", 60, seed=1)}


def losses_of(calls: list[dict[str, Any]]) -> list[float]:
    return [c["loss"] for c in calls]


def recorder(calls: list[dict[str, Any]], kill_at: int | None = None) -> Any:
    def on_step(info: dict[str, Any]) -> None:
        calls.append({"step": info["step"], "loss": info["loss"]})
        if info["step"] == kill_at:
            raise KeyboardInterrupt  # what Ctrl-C or a scheduler's SIGINT does mid-run
    return on_step


# ---------------------------------------------------------------------------- data
def test_blocks_pack_documents_with_eos_and_optional_bos(tmp_path: Path) -> None:
    tok = char_tokenizer()
    docs = write_jsonl(tmp_path / "d.jsonl", ["abc", "de", "fghij"])
    ids = tok("abc", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] + \
        tok("de", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    blocks = load_token_blocks(str(docs), tok, seq_len=3)
    assert len(blocks) == 4 and blocks.batch([0, 1]).flatten().tolist() == ids[:6]
    with_bos = load_token_blocks(str(docs), tok, seq_len=3, add_bos=True)
    assert with_bos[0].tolist() == [tok.bos_token_id] + ids[:2]
    streamed = load_token_blocks(str(docs), tok, seq_len=3, streaming=True)
    assert streamed.batch(range(4)).tolist() == blocks.batch(range(4)).tolist()
    assert load_token_blocks(str(docs), tok, seq_len=3).key == blocks.key  # served from the cache
    assert len(load_token_blocks(str(docs), tok, seq_len=3, streaming=True, max_tokens=7)) == 2


def test_block_order_is_a_function_of_seed_and_step() -> None:
    order = BlockOrder(10, batch_size=4, seed=3)
    first = [order.batch(s) for s in range(5)]
    assert [BlockOrder(10, batch_size=4, seed=3).batch(s) for s in (4, 0, 2)] == [first[4], first[0], first[2]]
    assert sorted(sum(first[:2], []) + first[2][:2]) == list(range(10))  # one epoch is a permutation
    assert BlockOrder(10, batch_size=4, seed=4).batch(0) != first[0]
    assert sorted(shard(first[0], 0, 2) + shard(first[0], 1, 2)) == sorted(first[0])
    assert parse_text_source("default").with_default_split("train").spec == "default:train"


def test_data_errors_are_precise(tmp_path: Path, setup: dict[str, Path]) -> None:
    tok = char_tokenizer()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataSourceError, match="empty"):
        load_token_blocks(str(tmp_path / "empty.jsonl"), tok, seq_len=8, streaming=True)
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "  "])
    with pytest.raises(DataSourceError, match="no text"):
        load_token_blocks(str(blank), tok, seq_len=8)
    docs = write_jsonl(tmp_path / "d.jsonl", sentences(5), column="body")
    for streaming in (False, True):
        with pytest.raises(DataSourceError, match=r"no column 'text'.*\['body'\]"):
            load_token_blocks(str(docs), tok, seq_len=8, streaming=streaming)
    assert len(load_token_blocks(f"{docs}:body", tok, seq_len=8)) > 0
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "run", **{**FAST, "seq_len": 256}, max_steps=1)
    short = write_jsonl(tmp_path / "short.jsonl", ["a few words only"])
    with pytest.raises(DataSourceError, match="fewer than one batch"):
        pretrain(str(setup["model"]), str(short), tmp_path / "run", **{**FAST, "seq_len": 8}, max_steps=1)


# ---------------------------------------------------------------------------- training
def test_pretraining_lowers_the_loss_and_writes_a_loadable_model(tmp_path: Path, setup: dict[str, Path]) -> None:
    calls: list[dict[str, Any]] = []
    out = tmp_path / "run"
    summary = pretrain(str(setup["model"]), str(setup["data"]), out, **{**FAST, "val_data": str(setup["val"])},
                       max_steps=20, eval_every=10, eval_seqs=4, checkpoint_every=5, keep_checkpoints=2,
                       keep_final_checkpoint=True, on_step=recorder(calls))
    losses = losses_of(calls)
    assert len(losses) == 20 and sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 4 * 32
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (out / "model" / "tokenizer.json").is_file() and (out / "training_curve.png").is_file()
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 21  # header, step 0 (validation only), 20 steps
    val = [r["val_perplexity"] for r in read_log(out / "log.csv") if r["val_perplexity"] is not None]
    assert len(val) == 3 and val[-1] < val[0] and summary["val_perplexity"] == pytest.approx(val[-1], rel=1e-5)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000015", "step-00000020"]
    ckpt = list_checkpoints(out)[-1]
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)  # no pickle code in checkpoints
    assert state["param_groups"][0]["betas"] == (0.9, 0.95)
    assert pretrain(str(setup["model"]), str(setup["data"]), out, **{**FAST, "val_data": str(setup["val"])},
                    max_steps=20, eval_every=10, eval_seqs=4, checkpoint_every=5)["steps"] == 20  # done: no-op


def test_a_finished_run_keeps_its_model_not_its_optimizer_state(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = dict(**{**FAST, "val_data": str(setup["val"])}, max_steps=6, eval_every=0, eval_seqs=2, checkpoint_every=2)
    summary = pretrain(str(setup["model"]), str(setup["data"]), out, **args)
    assert summary["complete"] and list_checkpoints(out) == [] and not (out / "checkpoints").exists()
    model_bytes = (out / "model" / "model.safetensors").read_bytes()
    again = pretrain(str(setup["model"]), str(setup["data"]), out, **args)  # finished: a no-op, not a retrain
    assert again["steps"] == 6 and (out / "model" / "model.safetensors").read_bytes() == model_bytes


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path: Path, setup: dict[str, Path]) -> None:
    kw = dict(**FAST, micro_batch_size=2, max_steps=6, checkpoint_every=3)
    straight: list[dict[str, Any]] = []
    pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "a", on_step=recorder(straight), **kw)

    first: list[dict[str, Any]] = []
    with pytest.raises(KeyboardInterrupt):  # killed after step 4: the checkpoint of step 3 survives
        pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "b", on_step=recorder(first, kill_at=4), **kw)
    second: list[dict[str, Any]] = []
    summary = pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "b", on_step=recorder(second), **kw)
    assert summary["resumed_from"].endswith("step-00000003")
    assert [c["step"] for c in second] == [4, 5, 6]
    assert losses_of(first[:3]) + losses_of(second) == losses_of(straight)  # bit-for-bit, not approx
    a, b = load_file(tmp_path / "a" / "model" / "model.safetensors"), load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_steps = [line.split(",")[0] for line in (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == ["1", "2", "3", "4", "5", "6"]  # step 4 was redone, and is logged once


def test_mismatched_checkpoint_is_refused(tmp_path: Path, setup: dict[str, Path]) -> None:
    pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "run", **FAST, max_steps=2)
    with pytest.raises(CheckpointMismatchError, match=r"lr: checkpoint has 0.003, this run has 0.001"):
        pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "run", **{**FAST, "lr": 1e-3, "min_lr": 1e-4},
                 max_steps=2)
    other = tiny_model_dir(tmp_path, "qwen2")
    with pytest.raises(CheckpointMismatchError, match="model: checkpoint has"):
        pretrain(str(other), str(setup["data"]), tmp_path / "run", **FAST, max_steps=2)


def test_nan_loss_stops_with_the_step_number(tmp_path: Path, setup: dict[str, Path]) -> None:
    def poison(info: dict[str, Any]) -> None:
        if info["step"] == 2:  # corrupt the weights after step 2: step 3's loss is NaN
            with torch.no_grad():
                next(info["model"].parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="loss nan at step 3 of 5"):
        pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "run", **FAST, max_steps=5, on_step=poison)


def test_distill_from_a_sub_network_top_k_and_full_logits(tmp_path: Path, setup: dict[str, Path]) -> None:
    kw = dict(**FAST, max_steps=3)
    subnet = {"n_layers": 2, "intermediate_size": 48}
    top = distill(str(setup["model"]), str(setup["data"]), tmp_path / "topk", subnet=subnet, top_k=8, **kw)
    assert (tmp_path / "topk" / "init" / "subnet.json").is_file()  # extracted first, then trained
    student = AutoModelForCausalLM.from_pretrained(top["model_dir"])
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 48
    assert 0 < top["final_loss"] < 10
    full = distill(str(setup["model"]), str(setup["data"]), tmp_path / "full", student=str(tmp_path / "topk" / "init"),
                   top_k=None, kl="reverse", **kw)
    assert full["final_loss"] != top["final_loss"]
    rand = distill(str(setup["model"]), str(setup["data"]), tmp_path / "rand", subnet=subnet, init="random", **kw)
    assert rand["final_loss"] != top["final_loss"]


def test_random_init_is_the_same_architecture_with_fresh_seeded_weights(tmp_path: Path, setup: dict[str, Path]) -> None:
    kw = {**FAST, "max_steps": 1, "lr": 1e-9, "min_lr": 0.0}
    pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "r1", init="random", **kw)
    pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "r2", init="random", **kw)
    r1, r2 = (load_file(tmp_path / r / "model" / "model.safetensors") for r in ("r1", "r2"))
    original = load_file(setup["model"] / "model.safetensors")
    assert r1.keys() == original.keys() and all(r1[k].shape == original[k].shape for k in r1)
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert not torch.allclose(r1["model.embed_tokens.weight"], original["model.embed_tokens.weight"], atol=1e-3)


def test_vocabulary_mismatch_is_a_clear_error(tmp_path: Path, setup: dict[str, Path]) -> None:
    other = tmp_path / "big-vocab"
    AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32)).save_pretrained(other)
    with pytest.raises(VocabularyMismatchError, match="vocabulary of 128 tokens, the student 200"):
        distill(str(setup["model"]), str(setup["data"]), tmp_path / "run", student=str(other), **FAST, max_steps=1)


def test_config_errors_and_schedule() -> None:
    with pytest.raises(TypeError, match="unknown training option.*'lr_max'"):
        make_config(lr_max=1.0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    cfg = TrainConfig(lr=3e-4, min_lr=3e-5)
    assert lr_at(1, cfg, 10) == pytest.approx(3e-4) and lr_at(10, cfg, 10) == pytest.approx(3e-5)
    assert TrainConfig(max_tokens=10_000, batch_size=2, seq_len=100).total_steps() == 50
