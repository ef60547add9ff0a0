"""The command line's behaviour, recorded: ~150 cheap ``subnas`` invocations run in one process.

Not a test and not a benchmark of speed: a tool to show that a refactoring left what users see
unchanged. Every verb's ``--help``, the plugin list, ``params`` on the default model and on tiny
configs of each family, a few very short evaluations and one extraction of a tiny random model,
and many bad inputs (unknown model, bad bins, out-of-range flags, unknown space, sampler or
fitness, missing or malformed sub-network files, ...). No search, training or long evaluation.
Each command runs through the CLI's entry function (`subnas.cli.main`) with stdout and stderr
captured and its exit code recorded; temporary paths and the repository root are replaced by
``<TMP>`` and ``<REPO>`` so two checkouts compare.

Usage:
    python benchmarks/cli_behaviour.py --out after.json
    PYTHONPATH=... python benchmarks/cli_behaviour.py --out before.json   # another checkout's code
    python benchmarks/cli_behaviour.py --compare before.json after.json

For another checkout, put it first on ``PYTHONPATH`` and its ``plugins/`` folder under the name
``subnas_plugins`` (a folder holding a ``subnas_plugins`` link to it), since the editable install
maps that package to this checkout; the script prints which files it imported.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

# Before anything imports transformers or jsonargparse: no network, one help width, no colours.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COLUMNS"] = "100"
os.environ["NO_COLOR"] = "1"
os.environ.pop("SUBNAS_DEBUG", None)

VERBS = ["params", "extract", "evaluate", "search", "pretrain", "distill", "train-supernet", "benchmark", "demo",
         "plugins"]
TRAIN = ["--seq-len", "32", "--batch-size", "4", "--max-steps", "2", "--progress", "false"]


def write_fixtures(tmp: Path) -> dict[str, str]:
    """Tiny configs of every family, sub-network files good and bad, a tiny model with weights."""
    import torch
    from transformers import (AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig,
                              Qwen2Config)

    small = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 2}
    configs = {
        "llama": LlamaConfig(**small),
        "mistral": MistralConfig(**small),
        "qwen2": Qwen2Config(**small),
        "gpt2": GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4),
        "gpt_neox": GPTNeoXConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4),
    }
    files: dict[str, str] = {}
    for name, config in configs.items():
        path = tmp / f"{name}.json"
        config.to_json_file(path)
        files[name] = str(path)
    subnets: dict[str, Any] = {
        "two_layers": {"n_layers": 2},
        "narrow": {"n_layers": 2, "n_embd": 16, "intermediate_size": 32},
        "heads": {"num_heads": 2},
        "indices": {"layer_indices": [0, 2]},
        "too_deep": {"n_layers": 9},
        "half_layer": {"n_layers": 2.5},
        "negative": {"n_layers": -1},
        "bad_index": {"layer_indices": [0, 7]},
        "unknown_key": {"n_layerz": 2},
        "wrong_shape": {"head_indices": [0, [1]]},
    }
    for name, subnet in subnets.items():
        (tmp / f"subnet_{name}.json").write_text(json.dumps(subnet))
        files[f"subnet_{name}"] = str(tmp / f"subnet_{name}.json")
    raw = {"malformed": '{"n_layers": 2', "list": "[2]", "empty": "", "text": "hello"}
    for name, text in raw.items():
        (tmp / f"raw_{name}.json").write_text(text)
        files[f"raw_{name}"] = str(tmp / f"raw_{name}.json")
    (tmp / "config_trials0.yaml").write_text("trials: 0\n")
    files["config_trials0"] = str(tmp / "config_trials0.yaml")
    (tmp / "text.txt").write_text("Some text to read. " * 50)
    files["text"] = str(tmp / "text.txt")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(configs["llama"])
    model.save_pretrained(tmp / "tiny_model", safe_serialization=True)
    files["tiny_model"] = str(tmp / "tiny_model")
    (tmp / "occupied").mkdir()
    (tmp / "occupied" / "keep.txt").write_text("mine")
    files["occupied"] = str(tmp / "occupied")
    files["missing"] = str(tmp / "no_such_file.json")
    files["folder"] = str(tmp)
    return files


def commands(f: dict[str, str], tmp: Path) -> list[list[str]]:
    """The invocations, each an argv for `subnas.cli.main`."""
    out = str(tmp / "out")
    cmds: list[list[str]] = [["--help"], ["-h"], ["--version"], []]
    cmds += [[verb, "--help"] for verb in VERBS]
    cmds += [["plugins"], ["plugins", "--json"], ["plugins", "--bogus"]]
    # params: the default model and every family, with and without sub-networks
    cmds += [["params", "default"], ["params", "default", "--json"],
             ["params", "default", "--subnet", f["subnet_two_layers"]],
             ["params", "default", "--subnet", f["subnet_narrow"], "--json"],
             ["params", "default", "--subnet", f["subnet_indices"]]]
    for family in ("llama", "mistral", "qwen2", "gpt2", "gpt_neox"):
        cmds += [["params", f[family]], ["params", f[family], "--subnet", f["subnet_two_layers"], "--json"]]
    cmds += [["params", f["llama"], "--subnet", f["subnet_heads"]],
             ["params", f["llama"], "--subnet", f["subnet_narrow"]],
             ["params", f["tiny_model"]], ["params", f["tiny_model"], "--subnet", f["subnet_indices"]]]
    # params: bad sub-networks and files
    for name in ("too_deep", "half_layer", "negative", "bad_index", "unknown_key", "wrong_shape"):
        cmds.append(["params", f["llama"], "--subnet", f[f"subnet_{name}"]])
    for name in ("malformed", "list", "empty", "text"):
        cmds.append(["params", f["llama"], "--subnet", f[f"raw_{name}"]])
    cmds += [["params", f["llama"], "--subnet", f["missing"]], ["params", f["llama"], "--subnet", f["folder"]],
             ["params", f["llama"], "--subnet", f["missing"] + "#2"],
             ["params", f["subnet_two_layers"]],  # a sub-network file where the model goes
             ["params", "subnas-tests/no-such-model"], ["params", f["missing"]], ["params"],
             ["params", "default", "--bogus", "1"], ["params", "default", "--subnet"]]
    # evaluate: a few very short measurements, then bad input
    ev = ["--seq-len", "16", "--num-seqs", "1", "--device", "cpu"]
    cmds += [["evaluate", "default", *ev], ["evaluate", "default", *ev, "--json"],
             ["evaluate", "default", *ev, "--subnet", f["subnet_two_layers"]],
             ["evaluate", "default", *ev, "--data", f["text"]]]
    cmds += [["evaluate"], ["evaluat"], ["evaluate", "m", "--batch-size", "abc"],
             ["evaluate", "m", "--batch-size", "0"], ["evaluate", "m", "--batch-size", "-3"],
             ["evaluate", "m", "--seq-len", "0"], ["evaluate", "m", "--num-seqs", "0"],
             ["evaluate", "m", "--num-seqs", "-1"], ["evaluate", "m", "--num-seqs", "abc"],
             ["evaluate", "m", "--num-seqs", "1.5"], ["evaluate", "m", "--bogus", "1"],
             ["evaluate", "m", "--device", "cuda:7"], ["evaluate", "m", "--device", "tpu"],
             ["evaluate", "subnas-tests/no-such-model"], ["evaluate", f["missing"]],
             ["evaluate", "default", *ev, "--data", f["missing"]],
             ["evaluate", "default", *ev, "--subnet", f["subnet_too_deep"]],
             ["evaluate", "default", *ev, "--subnet", f["raw_malformed"]],
             ["evaluate", f["subnet_two_layers"]]]
    # extract: one tiny model, then bad input
    cmds += [["extract", f["tiny_model"], "--subnet", f["subnet_two_layers"], "--out", out + "/tiny"],
             ["extract", f["tiny_model"], "--subnet", f["subnet_two_layers"], "--out", f["occupied"]],
             ["extract", f["tiny_model"], "--subnet", f["subnet_too_deep"], "--out", out + "/deep"],
             ["extract", f["tiny_model"], "--subnet", f["missing"], "--out", out + "/missing"],
             ["extract", f["tiny_model"], "--out", out + "/x", "--format", "bogus"],
             ["extract", f["tiny_model"], "--out", out + "/x", "--extractor", "bogus"],
             ["extract", "default"], ["extract"]]
    # search: everything checked before a model loads, and names no plugin registered
    cmds += [["search"], ["search", "m", "--trials", "0"], ["search", "m", "--trials", "-1"],
             ["search", "m", "--workers", "0"], ["search", "m", "--epochs", "0"], ["search", "m", "--num-seqs", "0"],
             ["search", "m", "--trials", "abc"], ["search", "m", "--seed", "abc"],
             ["search", "m", "--order", "bogus"], ["search", "m", "--pruner", "bogus"],
             ["search", "m", "--dtype", "bogus"], ["search", "m", "--config", f["config_trials0"]],
             ["search", "m", "--config", f["missing"]], ["search", "m", "--bogus"],
             ["search", "subnas-tests/no-such-model", "--out", out + "/s0"],
             ["search", f["subnet_two_layers"], "--out", out + "/s1"]]
    for flags in (["--bins", "foo"], ["--bins", "10M-5M"], ["--bins", "1k-2k"], ["--space", "nope"],
                  ["--sampler", "nope"], ["--fitness", "nope"], ["--objectives", "bogus"],
                  ["--bin-metric", "bogus"], ["--space-choices", "{n_layers: [99]}"],
                  ["--sampler-options", "{nope: 1}"], ["--storage", "bogus://x"]):
        cmds.append(["search", f["tiny_model"], "--fitness", "importance", "--order", "natural", "--trials", "1",
                     "--out", out + "/s2", *flags])
    # training verbs: range checks before any model loads, and missing arguments
    cmds += [["pretrain"], ["pretrain", "m"], ["pretrain", "m", "--out", "o", "--batch-size", "0"],
             ["pretrain", "m", "--out", "o", "--max-tokens", "0"], ["pretrain", "m", "--out", "o", "--seq-len", "1"],
             ["pretrain", "m", "--out", "o", "--batch-size", "4", "--micro-batch-size", "8"],
             ["pretrain", "m", "--out", "o", "--lr", "1e-4", "--min-lr", "1e-3"],
             ["pretrain", "m", "--out", "o", "--init", "foo"], ["pretrain", "m", "--out", "o", "--lr", "abc"],
             ["pretrain", "subnas-tests/no-such-model", "--out", out + "/p0", *TRAIN],
             ["pretrain", f["tiny_model"], "--out", f["text"], "--data", f["text"], *TRAIN],
             ["distill"], ["distill", "m", "--out", "o", "--alpha", "0", "--beta", "0"],
             ["distill", "m", "--out", "o", "--alpha", "-0.5"], ["distill", "m", "--out", "o", "--beta", "-1"],
             ["distill", "m", "--out", "o", "--temperature", "0"], ["distill", "m", "--out", "o", "--kl", "sideways"],
             ["distill", "m", "--out", "o", "--top-k", "abc"],
             ["train-supernet"], ["train-supernet", "m", "--out", "o", "--batch-size", "0"],
             ["train-supernet", "m", "--out", "o", "--strategy", "nope"]]
    # benchmark and demo: range checks and bad tables
    cmds += [["benchmark", "--evaluations", "0"], ["benchmark", "--seconds", "0"], ["benchmark", "--seconds", "-1"],
             ["benchmark", "--table", f["missing"], "--evaluations", "2", "--out", out + "/b0"],
             ["benchmark", "--table", f["raw_malformed"], "--evaluations", "2", "--out", out + "/b1"],
             ["benchmark", "--samplers", "nope", "--evaluations", "2", "--out", out + "/b2"],
             ["benchmark", "--fitness", "nope", "--evaluations", "2", "--out", out + "/b3"],
             ["benchmark", "--bins", "foo", "--evaluations", "2", "--out", out + "/b4"],
             ["demo", "--eval-seqs", "0"], ["demo", "--warmup-steps", "-1"], ["demo", "--lr-random-init", "0"],
             ["demo", "--bogus"]]
    return cmds


# Progress bars print their speed and timing, different on every run.
_TIMING = re.compile(r"\[\d\d:\d\d<[^\]]*\]|\d+(?:\.\d+)?(?:it/s|s/it)")


def normalise(text: str, tmp: Path, repo: str) -> str:
    """Output as it compares across runs and checkouts: no temporary or repository paths, no speeds."""
    return _TIMING.sub("<TIMING>", text.replace(str(tmp), "<TMP>").replace(repo, "<REPO>"))


def run_one(argv: list[str]) -> dict[str, Any]:
    """One invocation in this process: exit code, stdout and stderr."""
    from subnas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("always")  # the same warnings whatever ran before
        try:
            code: Any = main(argv)
        except SystemExit as exc:  # --help, --version and argparse's own exits
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - a traceback is behaviour too: record its last line
            code = "exception"
            err.write(f"{type(exc).__name__}: {exc}\n")
            err.write(traceback.format_exc().strip().splitlines()[-1] + "\n")
    return {"exit_code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def record(path: Path) -> None:
    import subnas
    import subnas_plugins

    repo = str(Path(subnas.__file__).resolve().parents[1])
    print(f"subnas from {subnas.__file__}\nsubnas_plugins from {subnas_plugins.__file__}", file=sys.stderr)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cli_behaviour_") as name:
        tmp = Path(name).resolve()
        files = write_fixtures(tmp)
        argvs = commands(files, tmp)
        cwd = os.getcwd()
        os.chdir(tmp)  # relative outputs ("o", "m") land in the temporary folder
        try:
            for i, argv in enumerate(argvs, 1):
                result = run_one(argv)
                key = " ".join(["subnas", *argv]).replace(str(tmp), "<TMP>")
                for field in ("stdout", "stderr"):
                    result[field] = normalise(result[field], tmp, repo)
                results[key] = result
                print(f"[{i}/{len(argvs)}] exit {result['exit_code']}: {key}", file=sys.stderr)
        finally:
            os.chdir(cwd)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(results)} commands -> {path}", file=sys.stderr)


def compare(a_path: Path, b_path: Path) -> int:
    """Print every command whose exit code or output differs, with a unified diff; return the count."""
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (a_path, b_path))
    differing = 0
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        differing += 1
        print(f"=== {key}")
        if key not in a or key not in b:
            print(f"only in {a_path if key in a else b_path}")
            continue
        for field in ("exit_code", "stdout", "stderr"):
            if a[key][field] != b[key][field]:
                lines = difflib.unified_diff(str(a[key][field]).splitlines(), str(b[key][field]).splitlines(),
                                             f"{a_path}:{field}", f"{b_path}:{field}", lineterm="")
                print("\n".join(lines))
    same = len(set(a) & set(b)) - sum(1 for k in set(a) & set(b) if a[k] != b[k])
    print(f"{len(set(a) | set(b))} commands: {same} identical, {differing} differing")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run the commands, write {command: {exit_code, stdout, stderr}}")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="diff two recordings")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.out:
        record(args.out)
    else:
        parser.error("give --out FILE.json or --compare A.json B.json")


if __name__ == "__main__":
    main()
