"""What a new user meets in the first hour (issue #19): options that reach every worker, shared
folders that carry no path of the writer's machine, and a command line that says what it means."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

import subnas
from subnas.cli import main
from subnas.export._extract import extract
from subnas.training import pretrain
from tests._train_helpers import tiny_model_dir, write_text

# The search driver module (`subnas.search` is the function it defines).
search_module = importlib.import_module("subnas.search_driver")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------- --workers
def test_every_search_parameter_reaches_the_workers_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spawned workers and this process's own worker get every parameter of `search()` as
    given (``workers`` set to 1): nothing is dropped by a hand-kept list of names."""
    spawned: list[dict[str, Any]] = []
    ran: list[dict[str, Any]] = []

    class FakeProcess:
        exitcode = 0

        def __init__(self, target: Any, kwargs: dict[str, Any]) -> None:
            spawned.append(kwargs)

        def start(self) -> None:
            pass

        def join(self) -> None:
            pass

    class FakeContext:
        Process = FakeProcess

    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: FakeContext())
    real = search_module.search

    @functools.wraps(real)
    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        ran.append(kwargs)
        return {"bins": []}

    monkeypatch.setattr(search_module, "search", recording)
    params = inspect.signature(real).parameters
    # A value for every parameter that differs from its default, so a dropped one shows.
    given = {"model": "some-model", "space": "fine-layerwise", "bins": ["1M-2M"], "fitness": "importance",
             "data": "file.txt", "seq_len": 64, "num_seqs": 3, "order": "natural", "calibration": "weights",
             "pruner": "median", "confirm": 0, "sampler": "random", "storage": str(tmp_path / "s.journal"),
             "study_name": "x", "epochs": None, "trials": 5, "out_dir": str(tmp_path / "out"), "seed": 7,
             "space_choices": {"n_embd": [8]}, "sampler_options": {"a": 1}, "fitness_options": {"b": 2},
             "workers": 3, "progress": True, "dtype": "bfloat16", "objectives": "perplexity,params",
             "bin_metric": "flops", "device": "cuda"}
    assert set(given) == set(params), "the test must give every parameter of search()"
    search_module._run_workers(3, given)
    assert len(spawned) == 2 and len(ran) == 2  # this process's worker, then the final results pass
    for kwargs in spawned:
        got = {k: v for k, v in kwargs.items() if k != "threads"}
        assert got == {**given, "workers": 1, "progress": False}
    assert ran[0] == {**given, "workers": 1}


# ---------------------------------------------------------------------------- no paths of the writer
def _texts(folder: Path) -> dict[Path, str]:
    """Every text file under ``folder`` (weights and plots excluded)."""
    return {p: p.read_text(errors="replace") for p in folder.rglob("*")
            if p.is_file() and p.suffix not in (".safetensors", ".png", ".bin", ".pt")}


def _leaks(folder: Path, *paths: Path) -> list[str]:
    return [f"{p.relative_to(folder)} names {root}" for p, text in _texts(folder).items()
            for root in map(str, paths) if root in text]


def test_shared_folders_name_no_path_of_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exported model, a trained model and a search's sub-network files are made to be shared:
    with absolute paths given, none of them names the writer's folders (the source is recorded by
    name and fingerprint; loading instructions name the folder itself)."""
    home = tmp_path / "home" / "someone"
    model_dir = tiny_model_dir(home / "models")
    supernet = subnas.Supernet.from_pretrained(str(model_dir))
    out = home / "exports" / "small"
    extract(supernet, subnas.SubNetwork(n_layers=1), out)
    assert not _leaks(out, home, tmp_path)
    record = json.loads((out / "subnas_extract.json").read_text())
    assert record["source"] == model_dir.name and len(record["source_fingerprint"]) == 32
    assert f"from_pretrained('{out.name}')" in (out / "README.md").read_text()

    run = home / "runs" / "ce"
    pretrain(str(model_dir), str(write_text(home / "train.txt", 200)), run, seq_len=32, batch_size=4,
             max_steps=2, progress=False, val_data=None)
    assert not _leaks(run / "model", home, tmp_path)

    result = subnas.search(supernet, bins=[(1, 10**9)], fitness="importance", fitness_options={"method": "magnitude"},
                           calibration="weights", sampler="random", trials=2, out_dir=home / "search", progress=False)
    assert result["bins"][0]["best_subnet_file"].endswith("bin0_best_subnet.json")
    for subnet_file in (home / "search").glob("*_subnet.json"):
        assert str(tmp_path) not in subnet_file.read_text()


def test_run_records_name_only_what_the_user_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given relative paths, nothing a run writes (records included) holds an absolute path: no
    path is resolved against this machine behind the user's back."""
    monkeypatch.chdir(tmp_path)
    model_dir = tiny_model_dir(Path("models"))
    write_text(Path("train.txt"), 200)
    assert main(["extract", str(model_dir), "--subnet", str(_subnet_file(Path("s.json"))), "--out", "ex"]) == 0
    assert main(["pretrain", str(model_dir), "--data", "train.txt", "--out", "run", "--seq-len", "32",
                 "--batch-size", "4", "--max-steps", "2", "--progress", "false"]) == 0
    for folder in (Path("ex"), Path("run")):
        assert not _leaks(folder.resolve(), tmp_path), _leaks(folder.resolve(), tmp_path)


def _subnet_file(path: Path) -> Path:
    path.write_text(json.dumps({"n_layers": 1}))
    return path


# ---------------------------------------------------------------------------- the command line
def test_counts_take_suffixes_and_errors_speak_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from subnas.cli import _parser

    parsed = _parser().parse_args(["demo", "--train-tokens", "16k"])
    assert parsed.demo.train_tokens == 16_000
    parsed = _parser().parse_args(["distill", "default", "--out", "x", "--max-tokens", "1.5M"])
    assert parsed.distill.max_tokens == 1_500_000
    for argv, expected in ((["demo", "--train-tokens", "16q"], "--train-tokens 16q is not a count"),
                           (["demo", "--seed", "abc"], "--seed abc is not a whole number"),
                           (["distill", "default", "--out", "x", "--lr", "fast"], "--lr fast is not a number"),
                           (["search", "default", "--order", "foo"], "--order foo is not one of: importance"),
                           (["extract", "default"], "missing --subnet, --out (required)"),
                           (["evaluate"], "missing MODEL (required)")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err, err
        assert "Parser key" not in err and "<class" not in err and "train_tokens" not in err


def test_abbreviations_are_typos_and_print_config_has_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "default", "--num-seq", "4"]) == 2
    assert "unrecognized arguments: --num-seq 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = capsys.readouterr().out
    assert "--print-config" in help_text and "--print_config" not in help_text
    # --epochs and --trials say what happens when neither is given.
    flat = " ".join(help_text.split())
    assert "with neither" in flat and "asks for one" in flat


def test_a_subnet_file_where_the_model_goes_gets_the_command_meant(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    subnet = _subnet_file(tmp_path / "subnet.json")
    for verb in ("evaluate", "params"):
        assert main([verb, str(subnet)]) == 2
        assert f"did you mean `subnas {verb} default --subnet {subnet}`" in capsys.readouterr().err


def test_an_unreachable_bin_is_reported_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tiny_models: dict) -> None:
    """Bins depend on counts alone: no weights are loaded (nor calibration run) to refuse one."""
    from subnas.bins import InfeasibleBinError
    from subnas.supernet import Supernet

    folder = tiny_model_dir(tmp_path)
    monkeypatch.setattr(Supernet, "from_pretrained", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    with pytest.raises(InfeasibleBinError, match="is unreachable"):
        subnas.search(str(folder), bins=["10B-11B"], trials=1, out_dir=tmp_path / "s", progress=False)


def test_a_winner_worse_than_a_unigram_model_says_so(tmp_path: Path) -> None:
    """A tiny random-weight model cannot beat a unigram model of the text: the result says so."""
    folder = tiny_model_dir(tmp_path)
    write_text(tmp_path / "text.txt", 300)
    supernet = subnas.Supernet.from_pretrained(str(folder))
    result = subnas.search(supernet, bins=[(1, 10**9)], data=str(tmp_path / "text.txt"), seq_len=16, num_seqs=2,
                           order="natural", confirm=0, sampler="random", trials=2, out_dir=tmp_path / "s",
                           progress=False)
    entry = result["bins"][0]
    assert "no better than a unigram model" in entry["warning"]
    assert json.loads((tmp_path / "s" / "results.json").read_text())["bins"][0]["warning"] == entry["warning"]


def test_loading_and_extracting_show_no_transformers_bars(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Inside subnas's own steps transformers' "Loading weights" / "Writing model shards" bars are
    off (subnas's own bars stay), and the user's setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    folder = tiny_model_dir(tmp_path)
    capfd.readouterr()
    supernet = subnas.Supernet.from_pretrained(str(folder))
    extract(supernet, subnas.SubNetwork(n_layers=1), tmp_path / "out")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert hf_logging.is_progress_bar_enabled()
