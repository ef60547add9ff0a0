"""Bad input gets one line ``subnas: error: <problem and fix>`` and exit status 2, never a traceback
(docs/design.md#reliability, issue 11): malformed sub-network files, corrupt weights, out-of-range flags,
missing devices, a Hub name offline, a foreign ``--out`` folder, a corrupt fitness table. Also:
sub-network files from pipes, umask-following training outputs, and training summaries that say
whether they are complete.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from subnas import SubNetwork, SubNetworkError
from subnas.cli import main
from tests._train_helpers import tiny_model_dir, write_text
from tests.conftest import TINY_CONFIGS

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, min_lr=3e-4, progress=False, val_data=None)
TRAIN_FLAGS = ["--seq-len", "32", "--batch-size", "4", "--max-steps", "2", "--progress", "false"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SUBNAS_DEBUG", raising=False)


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    TINY_CONFIGS["llama-gqa"]().to_json_file(path)  # 3 layers, 4 heads in 2 groups
    return path


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run the CLI; assert exit 2 and one ``subnas: error:`` line holding every ``expected`` text."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # Progress bars of loading may come first; the error is one line, the last one.
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("subnas: error: "), err
    assert sum("subnas: error:" in line for line in lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[-1], f"{text!r} not in {lines[-1]!r}"
    return lines[-1]


# ----------------------------------------------------------------------------- sub-network files
@pytest.mark.parametrize("data,expected", [
    ({"n_layers": "four"}, ['n_layers="four"', "takes a whole number such as 4"]),
    ({"n_layers": 4.5}, ["n_layers=4.5", "whole number"]),
    ({"n_layers": 2.0}, ["n_layers=2.0", "whole number"]),
    ({"n_layers": True}, ["n_layers=true", "whole number"]),
    ({"n_layers": [2]}, ["n_layers=[2]", "whole number"]),
    ({"n_embd": None, "n_layers": {"n": 2}}, ['n_layers={"n": 2}']),
    ({"layer_indices": "0,1"}, ['layer_indices="0,1"', "a list of whole-number indices such as [0, 1, 5]"]),
    ({"layer_indices": [[0], [1]]}, ["layer_indices=[[0], [1]]", "a list of whole-number indices"]),
    ({"num_heads": [2, "x"]}, ['num_heads=[2, "x"]', "one per kept layer"]),
    ({"num_heads": [2, [2]]}, ["num_heads=[2, [2]]", "one per kept layer"]),
    ({"head_indices": [[0, 1], [True]]}, ["head_indices=[[0, 1], [true]]", "one such list per kept layer"]),
    ({"head_indices": [0, [1]]}, ["head_indices=[0, [1]]", "one such list per kept layer"]),
    ({"intermediate_indices": [[0.5]]}, ["intermediate_indices=[[0.5]]"]),
    # Negative numbers have the right type; the model decides the legal range.
    ({"n_layers": -1}, ["n_layers=-1 is illegal; legal values are 1..3"]),
    ({"intermediate_size": [-4, 8, 8]}, ["intermediate_size=-4", "legal values are 1..96"]),
    ({"layer_indices": [0, -1]}, ["layer_indices: index -1 is out of range; legal indices are 0..2"]),
])
def test_wrong_types_in_a_subnetwork_file(tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str],
                                          data: dict[str, Any], expected: list[str]) -> None:
    path = tmp_path / "subnet.json"
    path.write_text(json.dumps(data))
    fails(["params", str(config_file), "--subnet", str(path)], capsys, *expected)


def test_wrong_types_from_python_name_field_and_value() -> None:
    with pytest.raises(SubNetworkError, match=r'n_layers="four" is not valid: n_layers takes a whole number'):
        SubNetwork.from_dict({"n_layers": "four"})
    with pytest.raises(SubNetworkError, match=r"embd_indices=\[0, 1.5\]"):
        SubNetwork(embd_indices=[0, 1.5])  # type: ignore[list-item]
    # Whole numbers of other integer types are fine (numpy ints from samplers, torch ints).
    import numpy as np

    assert SubNetwork(n_layers=np.int64(2), layer_indices=[np.int32(0), 1]) == SubNetwork(n_layers=2,
                                                                                          layer_indices=(0, 1))
    huge = list(range(100_000))
    with pytest.raises(SubNetworkError) as info:
        SubNetwork(intermediate_indices=huge + ["x"])  # type: ignore[list-item]
    assert len(str(info.value)) < 400  # the value is shown shortened


@pytest.mark.parametrize("text,expected", [
    ('{"n_layers": 2', ["not valid JSON", 'such as {"n_layers": 4']),
    ("[2]", ["holds a JSON list, not an object"]),
    ("", ["not valid JSON"]),
])
def test_malformed_subnetwork_files(tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str],
                                    text: str, expected: list[str]) -> None:
    path = tmp_path / "subnet.json"
    path.write_text(text)
    fails(["params", str(config_file), "--subnet", str(path)], capsys, str(path), *expected)


def test_missing_or_folder_subnetwork_file(tmp_path: Path, config_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fails(["params", str(config_file), "--subnet", str(tmp_path / "nope.json")], capsys, "does not exist")
    fails(["params", str(config_file), "--subnet", str(tmp_path)], capsys, "is a folder")


def test_subnetwork_file_from_a_pipe(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--subnet <(echo '{...}')`` hands over ``/dev/fd/N``, a pipe that can be read only once."""
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"n_layers": 2}')
    os.close(write_end)
    try:
        assert main(["params", str(config_file), "--subnet", f"/dev/fd/{read_end}", "--json"]) == 0
    finally:
        os.close(read_end)
    out = json.loads(capsys.readouterr().out)
    assert out["subnet"] == {"n_layers": 2} and out["parameters"] < out["full_parameters"]


# ----------------------------------------------------------------------------- corrupt weights
@pytest.fixture()
def truncated_model(tmp_path: Path) -> Path:
    good = tiny_model_dir(tmp_path)
    bad = tmp_path / "truncated"
    bad.mkdir()
    for f in good.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-finished copy
    return bad


@pytest.mark.parametrize("verb", ["evaluate", "pretrain", "distill-teacher", "distill-student"])
def test_truncated_safetensors_is_named_with_the_fix(tmp_path: Path, truncated_model: Path, verb: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    weights = str(truncated_model / "model.safetensors")
    data = str(write_text(tmp_path / "train.txt", 50))
    out = ["--out", str(tmp_path / "run"), "--data", data, *TRAIN_FLAGS]
    argv = {"evaluate": ["evaluate", str(truncated_model), "--data", data],
            "pretrain": ["pretrain", str(truncated_model), *out],
            "distill-teacher": ["distill", str(truncated_model), "--subnet", "/dev/null", *out],
            "distill-student": ["distill", str(tiny_model_dir(tmp_path)), "--student", str(truncated_model), *out],
            }[verb]
    if verb == "distill-teacher":  # a real sub-network file: /dev/null would fail on its own
        (tmp_path / "s.json").write_text('{"n_layers": 1}')
        argv[argv.index("/dev/null")] = str(tmp_path / "s.json")
    fails(argv, capsys, weights, "truncated or corrupt", "re-export", "download the model again")


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("argv,expected", [
    (["evaluate", "m", "--batch-size", "0"], "--batch-size 0 is out of range: give an integer >= 1"),
    (["evaluate", "m", "--batch-size", "-3"], "--batch-size -3 is out of range"),
    (["evaluate", "m", "--seq-len", "0"], "--seq-len 0 is out of range: give an integer >= 2"),
    (["evaluate", "m", "--num-seqs", "0"], "--num-seqs 0 is out of range: give an integer >= 1"),
    (["search", "m", "--trials", "0"], "--trials 0 is out of range: give an integer >= 1"),
    (["search", "m", "--trials", "-1"], "--trials -1 is out of range"),
    (["search", "m", "--workers", "0"], "--workers 0 is out of range: give an integer >= 1"),
    (["search", "m", "--epochs", "0"], "--epochs 0 is out of range: give an integer >= 1"),
    (["search", "m", "--num-seqs", "0"], "--num-seqs 0 is out of range"),
    (["benchmark", "--evaluations", "0"], "--evaluations 0 is out of range"),
    (["benchmark", "--seconds", "0"], "--seconds 0.0 is out of range: give a number > 0"),
    (["pretrain", "m", "--out", "o", "--batch-size", "0"], "--batch-size 0 is out of range"),
    (["pretrain", "m", "--out", "o", "--max-tokens", "0"], "--max-tokens 0: give an integer >= 1"),
    (["pretrain", "m", "--out", "o", "--seq-len", "1"], "--seq-len 1 is out of range: give an integer >= 2"),
    (["pretrain", "m", "--out", "o", "--batch-size", "4", "--micro-batch-size", "8"],
     "--micro-batch-size 8: give an integer from 1 to the batch size (4)"),
    (["pretrain", "m", "--out", "o", "--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr 0.001: give a number from 0 to lr"),
    (["distill", "m", "--out", "o", "--alpha", "0", "--beta", "0"],
     "--alpha 0.0 and --beta 0.0: the distillation loss alpha*CE + beta*KL would be 0"),
    (["distill", "m", "--out", "o", "--alpha", "-0.5"], "--alpha -0.5: give a number >= 0"),
    (["distill", "m", "--out", "o", "--beta", "-1"], "--beta -1.0: give a number >= 0"),
    (["distill", "m", "--out", "o", "--temperature", "0"], "--temperature 0.0: give a number > 0"),
    (["distill", "m", "--out", "o", "--temperature", "-2"], "--temperature -2.0: give a number > 0"),
])
def test_flags_out_of_range_are_rejected_before_loading(argv: list[str], expected: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # The model "m" does not exist: the flag is rejected before anything is loaded.
    fails(argv, capsys, expected)


def test_flags_checked_from_a_config_file_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("trials: 0\n")
    fails(["search", "m", "--config", str(config)], capsys, "--trials 0 is out of range")


def test_alpha_zero_beta_zero_rejected_from_python(tmp_path: Path) -> None:
    from subnas.training import TrainConfigError, distill

    with pytest.raises(TrainConfigError, match="alpha=0 and beta=0: the distillation loss"):
        distill("m", "default", tmp_path / "run", student="s", alpha=0, beta=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device,expected", [
    ("cuda:99", "device 'cuda:99' is not available"),
    ("garbage", "device 'garbage' is not a device name; available here: cpu"),
    ("mps", "device 'mps' is not available on this machine; available here: cpu"),
])
@pytest.mark.parametrize("verb", ["evaluate", "pretrain"])
def test_unavailable_device(device: str, expected: str, verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "m"] if verb == "evaluate" else ["pretrain", "m", "--out", "o"]
    fails([*argv, "--device", device], capsys, expected)


def test_cuda_on_a_cpu_build_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    fails(["evaluate", "m", "--device", "cuda"], capsys, "device 'cuda' is not available",
          "no CUDA support (a CPU build)", "Available here: cpu")


# ----------------------------------------------------------------------------- --out
def test_out_folder_of_unrelated_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 50)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("...")
    (out / "figures").mkdir()
    fails(["pretrain", str(model), "--out", str(out), "--data", str(data), *TRAIN_FLAGS], capsys,
          "holds files that no subnas training run wrote (chapter1.tex, figures/)", "give a new or empty folder")
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex", "figures"]  # nothing written there
    (out / "chapter1.tex").unlink()
    (out / "figures").rmdir()
    assert main(["pretrain", str(model), "--out", str(out), "--data", str(data), *TRAIN_FLAGS]) == 0  # empty: fine
    fails(["pretrain", str(model), "--out", str(data), "--data", str(data), *TRAIN_FLAGS], capsys, "is a file")


def test_own_run_folder_is_accepted(tmp_path: Path) -> None:
    from subnas.training._run import RUN_ENTRIES, check_run_folder

    run = tmp_path / "run"
    run.mkdir()
    for name in RUN_ENTRIES:
        (run / name).mkdir()
    (run / ".summary.json.x1y2").write_text("")  # a temporary file of an interrupted atomic write
    check_run_folder(run)
    check_run_folder(tmp_path / "missing")


# ----------------------------------------------------------------------------- Hub names offline
@pytest.fixture()
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.mark.parametrize("verb", ["evaluate", "params", "pretrain"])
def test_hub_name_fails_fast_when_the_hub_is_unreachable(verb: str, closed_port: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import subnas.data._assets

    # Never touch the real Hub from a test: point the probe at a closed local port.
    monkeypatch.setattr(subnas.data._assets, "_hub_address", lambda: ("127.0.0.1", closed_port))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    argv = [verb, "subnas-tests/no-such-model"] + (["--out", str(tmp_path / "run")] if verb == "pretrain" else [])
    began = time.perf_counter()
    fails(argv, capsys, "cannot download 'subnas-tests/no-such-model' from the Hugging Face Hub (127.0.0.1",
          "not in the local Hugging Face cache", "pass a local model folder, or 'default'")
    assert time.perf_counter() - began < 5


def test_hub_name_with_hf_hub_offline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import subnas.data._assets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(subnas.data._assets, "_probe", lambda *a: pytest.fail("offline mode must not probe the Hub"))
    fails(["evaluate", "subnas-tests/no-such-model"], capsys, "(HF_HUB_OFFLINE is set)", "'default'")


def test_unreachable_hub_uses_a_cached_snapshot(tmp_path: Path, closed_port: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import subnas.data._assets
    from subnas.data._assets import locate_model

    monkeypatch.setattr(subnas.data._assets, "_hub_address", lambda: ("127.0.0.1", closed_port))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(subnas.data._assets, "_cached_snapshot", lambda name: str(tmp_path / "snapshot"))
    assert locate_model("org/model") == str(tmp_path / "snapshot")
    assert locate_model(str(tmp_path)) == str(tmp_path)  # local paths never probe


# ----------------------------------------------------------------------------- fitness tables
def test_corrupt_fitness_table_is_named_and_never_appended_to(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from subnas import SubnasConfig
    from subnas.benchmark._samplers import record_table
    from subnas.interfaces import Fitness

    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "smollm2_coarse.json"
    broken = tmp_path / "table.json"
    broken.write_bytes(shipped.read_bytes()[:3000])  # killed mid-copy
    before = broken.read_bytes()
    fails(["benchmark", "--table", str(broken), "--evaluations", "2", "--seeds", "0", "--samplers", "random",
           "--out", str(tmp_path / "bench")], capsys, str(broken), "is corrupt: invalid JSON at line", "restore it")

    class Width(Fitness):
        def __call__(self, subnet: SubNetwork) -> float:
            return 1.0

    cfg = SubnasConfig(vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=128)
    with pytest.raises(ValueError, match="is corrupt.*never appended to while broken"):
        record_table(cfg, "coarse-uniform", Width(), n=3, out_path=broken, progress=False)
    assert broken.read_bytes() == before

    rows = tmp_path / "rows.json"
    rows.write_text('{"metadata": {}, "rows": [{"key": "k"}]}')
    fails(["benchmark", "--table", str(rows), "--evaluations", "2", "--out", str(tmp_path / "b2")], capsys,
          "row 0 lacks subnet, fitness, parameters")


# ----------------------------------------------------------------------------- training outputs
def test_training_outputs_follow_the_umask_and_say_whether_complete(tmp_path: Path) -> None:
    from subnas.training import pretrain

    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 300)
    out = tmp_path / "run"
    kwargs = dict(**FAST, max_steps=4, checkpoint_every=1)

    def stop_at_2(info: dict[str, Any]) -> None:
        if info["step"] == 2:
            raise KeyboardInterrupt

    old = os.umask(0o027)
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(str(model), str(data), out, on_step=stop_at_2, **kwargs)
        partial = json.loads((out / "summary.json").read_text())
        assert partial["complete"] is False and partial["stopped"] == "interrupted"
        assert partial["steps"] == 2 and partial["total_steps"] == 4 and partial["model_dir"] is None

        summary = pretrain(str(model), str(data), out, **kwargs)  # resumes and finishes
        assert summary["complete"] is True and summary["resumed_from"].endswith("step-00000002")
        assert json.loads((out / "summary.json").read_text())["complete"] is True
        again = pretrain(str(model), str(data), out, **kwargs)  # finished: a no-op
        assert again == json.loads(json.dumps(summary, default=str))
    finally:
        os.umask(old)

    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [out, *out.rglob("*")] if "tensorboard" not in p.parts}
    wrong = {p: oct(m) for p, m in modes.items()
             if m != (0o750 if (out / p).is_dir() else 0o640)}
    assert not wrong, wrong
    assert {"model/model.safetensors", "run.json", "summary.json", "log.csv"} <= set(modes)


def test_unfinished_summary_is_not_taken_for_a_finished_run(tmp_path: Path) -> None:
    from subnas.training import pretrain

    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 300)
    out = tmp_path / "run"
    pretrain(str(model), str(data), out, **FAST, max_steps=2)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "complete": False,
                                        "final_loss": "stale"}))
    redone = pretrain(str(model), str(data), out, **FAST, max_steps=2)
    assert redone["complete"] is True and redone["final_loss"] != "stale"


# ----------------------------------------------------------------------------- bugs stay visible
def test_unexpected_exceptions_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import subnas.cli

    def buggy(args: Any) -> dict[str, Any]:
        raise KeyError("a bug")

    monkeypatch.setitem(subnas.cli.COMMANDS, "plugins", buggy)
    with pytest.raises(KeyError, match="a bug"):
        main(["plugins"])


def test_subnas_debug_shows_the_traceback_of_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_DEBUG", "1")
    with pytest.raises(ValueError, match="--batch-size 0"):
        main(["evaluate", "m", "--batch-size", "0"])


def test_multi_line_messages_become_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import subnas.cli

    def chatty(args: Any) -> dict[str, Any]:
        raise OSError("first line\n  second line")

    monkeypatch.setitem(subnas.cli.COMMANDS, "plugins", chatty)
    fails(["plugins"], capsys, "first line second line")


def test_hub_dataset_fails_fast_when_the_hub_is_unreachable(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    import subnas.data._assets
    from subnas.data import DataSourceError, resolve_text_source

    monkeypatch.setattr(subnas.data._assets, "_hub_address", lambda: ("127.0.0.1", closed_port))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the Hub"))
    with pytest.raises(DataSourceError, match=r"'wikitext:wikitext-2-raw-v1'.*unreachable.*HF_DATASETS_OFFLINE=1"):
        resolve_text_source("wikitext:wikitext-2-raw-v1")
    # In offline mode `datasets` reads its own cache: no probe, the loader is called.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": ["cached"]}))
    assert resolve_text_source("wikitext:wikitext-2-raw-v1:test") == ["cached"]


@pytest.mark.parametrize("argv,expected", [
    (["evaluate", "m", "--batch-size", "abc"], ["--batch-size abc is not a whole number", "see: subnas evaluate --help"]),
    (["evaluate"], ["missing MODEL (required)", "see: subnas evaluate --help"]),
    (["evaluat"], ["invalid choice: 'evaluat'", "see: subnas --help"]),
    (["pretrain", "m", "--out", "o", "--init", "foo"], ["--init foo is not one of: pretrained, random"]),
    (["evaluate", "m", "--bogus", "1"], ["unrecognized arguments: --bogus 1"]),
])
def test_malformed_command_lines_are_one_line(argv: list[str], expected: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fails(argv, capsys, *expected)


def test_missing_gpu_index_on_a_gpu_machine(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from subnas.evaluation._perplexity import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    fails(["evaluate", "m", "--device", "cuda:3"], capsys,
          "device 'cuda:3' is not available on this machine; available here: cpu, cuda:0, cuda:1")


def test_python_api_reads_a_subnetwork_pipe_once(tmp_path: Path) -> None:
    from subnas.training import pretrain

    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 100)
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"n_layers": 1}')
    os.close(write_end)
    try:
        summary = pretrain(str(model), str(data), tmp_path / "run", subnet=f"/dev/fd/{read_end}", **FAST, max_steps=1)
    finally:
        os.close(read_end)
    assert summary["sources"]["subnet"] == {"n_layers": 1} and summary["complete"] is True


@pytest.mark.parametrize("broken,expected", [
    ("config.json", ["the model config", "config.json' is truncated or corrupt", "download the model again"]),
    ("tokenizer.json", ["the tokenizer in", "tokenizer.json", "cannot be loaded", "save the tokenizer there again"]),
])
@pytest.mark.parametrize("verb", ["evaluate", "pretrain"])
def test_corrupt_config_or_tokenizer_is_named(tmp_path: Path, broken: str, expected: list[str], verb: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model_dir(tmp_path)
    text = (model / broken).read_text()
    (model / broken).write_text(text[: len(text) // 2])  # cut mid-write
    argv = ["evaluate", str(model)] if verb == "evaluate" else ["pretrain", str(model), "--out",
                                                                  str(tmp_path / "run"), *TRAIN_FLAGS]
    fails(argv, capsys, *expected)


def test_hub_probe_is_reused_for_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    import subnas.data._assets

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(subnas.data._assets, "_hub_address", lambda: ("probe.invalid", 1))
    monkeypatch.setattr(subnas.data._assets, "_probe", lambda host, port: calls.append((host, port)) or "down")
    monkeypatch.setattr(subnas.data._assets, "_probed", {})
    assert subnas.data._assets.hub_unreachable_reason() == subnas.data._assets.hub_unreachable_reason() == "down"
    assert len(calls) == 1
    monkeypatch.setattr(subnas.data._assets, "_PROBE_TTL", -1.0)  # expired: probe again
    subnas.data._assets.hub_unreachable_reason()
    assert len(calls) == 2


# ----------------------------------------------------------------------------- search storage
SEARCH_FAST = ["--fitness", "importance", "--fitness-options", '{"method": "magnitude"}', "--calibration", "weights",
               "--trials", "3"]


def _search(tmp_path: Path, *extra: str) -> list[str]:
    return ["search", str(tiny_model_dir(tmp_path)), "--bins", "12K-50K", *SEARCH_FAST, *extra]


def test_sqlite_storage_in_a_missing_folder_is_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "missing" / "folder" / "x.db"
    assert main(_search(tmp_path, "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "out"), "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert db.exists() and result["complete"] is True and result["bins"][0]["finished"] is True


@pytest.mark.parametrize("storage,expected", [
    # No server on port 1 (or, where CI lacks the driver, none installed): either way named, with the fix.
    ("postgresql://u:secret@127.0.0.1:1/db", ["--storage postgresql://u:***@127.0.0.1:1/db"]),
    ("nosuchdb://x", ["--storage nosuchdb://x", "unknown database kind 'nosuchdb'"]),
    ("mysql://u:secret@127.0.0.1:1/db", ["--storage mysql://u:***@127.0.0.1:1/db"]),
])
def test_unusable_database_url_is_one_line_without_the_password(tmp_path: Path, storage: str, expected: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(_search(tmp_path, "--storage", storage, "--out", str(tmp_path / "out")), capsys, *expected)
    assert "secret" not in line
    if storage.startswith(("postgresql", "mysql")):
        assert ("cannot open the database" in line and "check that the server is running" in line) or (
            "no database driver" in line and "pip install" in line), line


def test_unknown_fitness_options_list_the_accepted_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _search(tmp_path, "--out", str(tmp_path / "out"))
    argv[argv.index('{"method": "magnitude"}')] = '{"nope": 1}'
    fails(argv, capsys, "--fitness-options: 'importance' has no option 'nope'", "its options are method, data,")


@pytest.mark.parametrize("damage,expected", [
    (lambda text: text + "this is not json\n", ["is corrupt: line", "is not an Optuna journal record",
                                                "Move it aside (mv"]),
    (lambda text: "garbage\x00\x01" * 10, ["is corrupt: line 1 is not an Optuna journal record"]),
    (lambda text: text + '{"op_code": 5, "worker_id"', ["ends in an incomplete record", "a writer was killed",
                                                        "truncate -s"]),
])
def test_corrupt_journal_is_named_and_never_appended_to(tmp_path: Path, damage: Any, expected: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_search(tmp_path, "--out", str(out))) == 0
    journal = out / "search.journal"
    journal.write_text(damage(journal.read_text()))
    broken = journal.read_bytes()
    line = fails(_search(tmp_path, "--out", str(out), "--trials", "5"), capsys, str(journal), *expected)
    assert journal.read_bytes() == broken  # nothing appended
    if "truncate -s" in line:  # the printed fix recovers the search: every complete record is kept
        keep = int(line.split("truncate -s ")[1].split()[0])
        os.truncate(journal, keep)
        assert main(_search(tmp_path, "--out", str(out), "--trials", "5", "--json")) == 0
        assert json.loads(capsys.readouterr().out)["bins"][0]["evaluations"] == 5
