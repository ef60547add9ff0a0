"""Workflows on a vocabulary-pruned sub-network (issue #13), on a tiny random-weight Llama with a real
BPE tokenizer: distillation from the teacher restricted to the kept tokens, pretraining, the CLI,
and `subnas evaluate` on its export as a stock `MistralForCausalLM`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from subnas import Supernet, SubNetwork, count_parameters
from subnas.training import VocabularyMismatchError, distill, pretrain, teacher_for_student
from subnas.vocab import pruned_tokenizer
from tests.test_vocab import CORPUS, order_for, tiny_llama, tokenizer_for

FAST = dict(seq_len=16, batch_size=4, lr=3e-3, min_lr=3e-4, progress=False, val_data=None, tensorboard=False)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Any]:
    full = tokenizer_for("byte_level")
    tiny_llama(len(full), tokenizer=full).save_pretrained(tmp_path / "model")
    full.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text("\n\n".join(CORPUS * 6))
    order = order_for(full)
    subnet = SubNetwork(n_layers=1, vocab_indices=order.kept(order.min_size + 40))
    subnet.save(tmp_path / "subnet.json")
    return {"model": tmp_path / "model", "data": tmp_path / "text.txt", "full": full, "subnet": subnet}


def test_distill_a_vocab_pruned_subnetwork(tmp_path: Path, setup: dict[str, Any]) -> None:
    """The student reads text through its pruned tokenizer, the teacher (the supernet with only the
    vocabulary pruned) speaks the same tokens; the loss is finite and falls; the model loads with
    stock Auto classes; the caller's supernet comes back with its full vocabulary."""
    full, subnet = setup["full"], setup["subnet"]
    supernet = Supernet.from_pretrained(str(setup["model"]))
    calls: list[dict[str, Any]] = []
    result = distill(supernet, str(setup["data"]), tmp_path / "kd", subnet=subnet, max_steps=8,
                     on_step=lambda info: calls.append({"loss": info["loss"]}), **FAST)
    losses = [c["loss"] for c in calls]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert supernet.active.vocab is None  # restored
    run = json.loads((tmp_path / "kd" / "run.json").read_text())
    assert run["sources"]["teacher_subnet"]["vocab_indices"] == list(subnet.vocab_indices)

    model = AutoModelForCausalLM.from_pretrained(result["model_dir"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(result["model_dir"])
    kept = len(subnet.vocab_indices)
    assert len(tok) == model.get_input_embeddings().weight.shape[0] == kept
    assert sum(p.numel() for p in model.parameters()) == count_parameters(supernet, subnet)
    text = "The lazy dog sleeps; the fox does not."
    assert tok.encode(text, add_special_tokens=False) == \
        pruned_tokenizer(full, subnet.vocab_indices).encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_teacher_is_restricted_to_the_students_tokens(setup: dict[str, Any]) -> None:
    supernet = Supernet.from_pretrained(str(setup["model"]))
    subnet = setup["subnet"]
    assert teacher_for_student(supernet, SubNetwork(n_layers=1)) is None
    assert teacher_for_student(supernet, subnet) == SubNetwork(vocab_indices=subnet.vocab_indices)
    both = teacher_for_student(supernet, subnet, SubNetwork(n_layers=2, intermediate_size=32))
    assert both == SubNetwork(n_layers=2, intermediate_size=32, vocab_indices=subnet.vocab_indices)
    # The restricted teacher's logits are the full model's logits at the kept rows, on the same input.
    ids = torch.tensor([list(range(0, 40, 3))])
    original = torch.tensor(subnet.vocab_indices)[ids]
    with torch.no_grad():
        whole = supernet(original).logits
        with supernet.sub_network(teacher_for_student(supernet, subnet)):
            restricted = supernet(ids).logits
    torch.testing.assert_close(restricted, whole[..., list(subnet.vocab_indices)])
    dropped = next(i for i in range(len(setup["full"])) if i not in subnet.vocab_indices)
    other = SubNetwork(vocab_indices=sorted(subnet.vocab_indices[:-1] + (dropped,)))
    with pytest.raises(VocabularyMismatchError, match="different ones"):
        teacher_for_student(supernet, subnet, other)


def test_pretrain_a_vocab_pruned_subnetwork(tmp_path: Path, setup: dict[str, Any]) -> None:
    result = pretrain(str(setup["model"]), str(setup["data"]), tmp_path / "ce", subnet=setup["subnet"],
                      tokenizer=setup["full"], max_steps=3, **FAST)
    assert math.isfinite(result["final_loss"])
    assert len(AutoTokenizer.from_pretrained(result["model_dir"])) == len(setup["subnet"].vocab_indices)


def test_cli_distills_a_vocab_pruned_subnetwork(tmp_path: Path, setup: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from subnas.cli import main

    out = tmp_path / "cli-kd"
    assert main(["distill", str(setup["model"]), "--subnet", str(tmp_path / "subnet.json"), "--data",
                 str(setup["data"]), "--out", str(out), "--seq-len", "16", "--batch-size", "4", "--max-steps", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and math.isfinite(result["final_loss"])
    assert len(AutoTokenizer.from_pretrained(out / "model")) == len(setup["subnet"].vocab_indices)


def test_a_pruned_student_folder_against_the_full_teacher_is_a_clear_error(tmp_path: Path,
                                                                            setup: dict[str, Any]) -> None:
    from subnas import extract
    extract(Supernet.from_pretrained(str(setup["model"])), setup["subnet"], tmp_path / "student")
    with pytest.raises(VocabularyMismatchError, match=r"the student 298.*pruned vocabulary.*--subnet"):
        distill(str(setup["model"]), str(setup["data"]), tmp_path / "run", student=str(tmp_path / "student"),
                max_steps=1, **FAST)
    # Restricting the teacher to the student's tokens makes the same folder a legal student.
    result = distill(str(setup["model"]), str(setup["data"]), tmp_path / "ok", student=str(tmp_path / "student"),
                     teacher_subnet={"vocab_indices": list(setup["subnet"].vocab_indices)}, max_steps=1, **FAST)
    assert math.isfinite(result["final_loss"])


def test_cli_evaluates_a_vocab_pruned_export_written_as_mistral(tmp_path: Path, setup: dict[str, Any],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The 10M case of the tiny-targets benchmark: n_embd not divisible by the heads, which
    `LlamaConfig` refuses, so the export is a stock `MistralForCausalLM`; `subnas evaluate` loads it
    (family ``mistral``) and measures what the sub-network measured in place."""
    from subnas import extract
    from subnas.cli import main
    from subnas.evaluation._perplexity import evaluate

    supernet = Supernet.from_pretrained(str(setup["model"]))
    subnet = SubNetwork(n_layers=1, n_embd=18, vocab_indices=setup["subnet"].vocab_indices)
    extract(supernet, subnet, tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["model_type"] == "mistral"
    in_place = evaluate(supernet, data=str(setup["data"]), subnet=subnet, seq_len=16, num_seqs=2, progress=False)
    assert main(["evaluate", str(tmp_path / "export"), "--data", str(setup["data"]), "--seq-len", "16",
                 "--num-seqs", "2", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["parameters"] == in_place["parameters"] == count_parameters(supernet, subnet)
    assert exported["vocab_size"] == len(subnet.vocab_indices)
    assert exported["bits_per_byte"] == pytest.approx(in_place["bits_per_byte"], rel=1e-5)
