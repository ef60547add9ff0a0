"""The ``subnas`` command line: verbs that mirror the Python API.

``subnas params``   -> `subnas.count_parameters`
``subnas extract``  -> `subnas.extract`
``subnas evaluate`` -> `subnas.evaluation.evaluate`
``subnas search``   -> `subnas.search`
``subnas pretrain`` -> `subnas.training.pretrain`
``subnas distill``  -> `subnas.training.distill`
``subnas benchmark`` -> `subnas.benchmark.benchmark_samplers`
``subnas plugins``  -> `subnas.plugins.plugins_report`
``subnas demo``     -> `subnas.demo.demo` (the README's main job)

Every verb takes ``--config FILE`` (YAML whose keys are the flags, via jsonargparse) and ``--json``
to print exactly one JSON object on stdout. Errors a user can fix are printed as one line
``subnas: error: ...`` with exit status 2 — never a traceback from deep inside torch. Flag values
are checked (`_check_arguments`) before any model or data is loaded. Unexpected exceptions keep
their traceback, since they are bugs; ``SUBNAS_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Literal

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

MODEL_HELP = "model folder, hub name, 'default' (offline SmolLM2-135M) or a config.json"


def _parser() -> ArgumentParser:
    # exit_on_error=False: `main` prints a malformed command line as one `subnas: error:` line too.
    parser = ArgumentParser(prog="subnas", description="Find, extract and train small LMs inside large ones.",
                            exit_on_error=False)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subcommands(dest="command", required=True)

    def verb(name: str, help: str) -> ArgumentParser:
        p = ArgumentParser(description=help, exit_on_error=False)
        p.add_argument("--config", action=ActionConfigFile, help="YAML file whose keys are this command's flags")
        sub.add_subcommand(name, p, help=help)
        return p

    p = verb("params", "Count the parameters of a model or of one of its sub-networks (exact, from the config).")
    p.add_argument("model", type=str, help=MODEL_HELP)
    p.add_argument("--subnet", type=str, default=None, help="sub-network JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("extract", "Write a sub-network as a standalone model folder (safetensors, config, tokenizer).")
    p.add_argument("model", type=str, help=MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--subnet", type=str, required=True, help="sub-network JSON file")
    p.add_argument("--out", type=str, required=True, help="output folder (created atomically)")
    p.add_argument("--format", type=Literal["auto", "stock", "subnas"], default="auto",
                   help="stock transformers architecture, subnas flexible format, or auto (stock when possible)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("evaluate", "Perplexity and bits per byte of a model or sub-network on held-out text (the code path "
                         "search uses; a pruned vocabulary reads the text through its pruned tokenizer).")
    p.add_argument("model", type=str, help=MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--subnet", type=str, default=None, help="sub-network JSON file")
    p.add_argument("--data", type=str, default="default:validation",
                   help="text file, .json/.jsonl/.parquet/.csv file, a datasets name, or 'default[:split]'")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence")
    p.add_argument("--num-seqs", type=int, default=16, help="number of sequences (default:validation holds ~89 x 512)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per forward pass")
    p.add_argument("--device", type=str, default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("search", "Search the best sub-network in each parameter bin (one Optuna study per bin). "
                       "Cost: one fitness evaluation per trial; on SmolLM2-135M with the defaults "
                       "(16 x 256 tokens) ~4-6 s each on 2 CPU cores, so --trials 40 takes ~3-4 min per bin, "
                       "plus one-time calibration passes for the importance order (~2 min, cached).")
    p.add_argument("model", type=str, help=MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--space", type=str, default="coarse-uniform",
                   help="coarse-uniform, coarse-layerwise, fine-uniform, fine-layerwise or a plugin's space")
    p.add_argument("--bins", type=str, nargs="+", default=["85M-100M"],
                   help="parameter bins, e.g. 30M-40M 60M-70M or 135M±5%% (one study each)")
    p.add_argument("--fitness", type=str, default="perplexity",
                   help="perplexity (a forward pass per candidate), importance (microseconds per candidate "
                        "after one calibration pass; ranks worse, see docs/benchmarks/search.md) or a plugin's")
    p.add_argument("--data", type=str, default="default:search",
                   help="text the fitness scores on (default: the corpus's search split, never the validation split)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (perplexity); cost grows linearly")
    p.add_argument("--num-seqs", type=int, default=16,
                   help="sequences (perplexity); cost grows linearly, and fewer make the winner a matter of noise "
                        "between the search and validation text")
    p.add_argument("--order", type=Literal["importance", "block-influence", "natural"], default="importance",
                   help="which units 'the first n' keeps. importance: the n most important — layers by the loss "
                        "of skipping each one, width units by activation (calibration passes, cached; ~2 min "
                        "once for SmolLM2-135M on 2 CPU cores); block-influence: the same but layers by "
                        "ShortGPT's block influence (the literature's one-shot prune; worse, ~15 s); natural: "
                        "the paper's first n (for reproducing it; far worse on real models)")
    p.add_argument("--calibration", type=str, default="default:calibration",
                   help="text for the importance order's calibration passes (default: the corpus's calibration "
                        "split), or 'weights' for a data-free weight-magnitude order")
    p.add_argument("--pruner", type=Literal["none", "median", "successive-halving", "hyperband"], default="none",
                   help="multi-fidelity: stop hopeless candidates after a fraction of their tokens (Optuna pruners)")
    p.add_argument("--confirm", type=int, default=4,
                   help="re-measure the best CONFIRM candidates of each bin on 48 more sequences the search never "
                        "scored and keep the best confirmed one (~15 s each on 2 CPU cores; 0: keep the search's "
                        "ranking, which on 16 sequences is partly luck)")
    p.add_argument("--sampler", type=str, default="evolution", help="evolution, random, tpe, nsga2 or a plugin's")
    p.add_argument("--storage", type=str, default=None,
                   help="Optuna storage URL (sqlite:///x.db, postgresql://...) or journal file; default OUT/search.journal")
    p.add_argument("--study-name", type=str, default="subnas", help="prefix of the per-bin study names")
    p.add_argument("--epochs", type=int, default=None, help="evolution epochs T (Algorithm 1)")
    p.add_argument("--trials", type=int, default=None, help="evaluations per bin (any sampler)")
    p.add_argument("--out", type=str, default="runs/search", help="folder for results.json, best sub-networks, plot")
    p.add_argument("--seed", type=int, default=0, help="seed (same seed, one worker: same trajectory)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the storage")
    p.add_argument("--space-choices", type=dict, default=None,
                   help='per-dimension choices, JSON: {"intermediate_size": "64:1536:64"}; '
                        '{"vocab_size": "4k,8k,16k,32k,full"} (or "default") adds the vocabulary as a dimension '
                        'and ranks candidates by bits per byte')
    p.add_argument("--sampler-options", type=dict, default=None,
                   help='sampler keyword options, JSON: {"population_size": 20, "num_elites": 5}')
    p.add_argument("--fitness-options", type=dict, default=None, help='fitness keyword options, JSON')
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("pretrain", "Train a model or sub-network with cross-entropy (resumes when rerun with the same --out).")
    p.add_argument("model", type=str, help=MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--subnet", type=str, default=None, help="sub-network of MODEL to extract and train")
    p.add_argument("--init", type=Literal["pretrained", "random"], default="pretrained",
                   help="start from the model's weights, or from random init of the same architecture")
    _training_arguments(p)

    p = verb("distill", "Distill a student from a teacher: alpha*CE + beta*KL (resumes when rerun with the same --out).")
    p.add_argument("teacher", type=str, help="teacher: " + MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--student", type=str, default=None, help="student model folder (or give --subnet)")
    p.add_argument("--subnet", type=str, default=None, help="sub-network of the teacher to extract as the student")
    p.add_argument("--init", type=Literal["pretrained", "random"], default="pretrained",
                   help="student weights: pretrained (its own / the teacher's slice) or random init")
    _training_arguments(p)

    p = verb("benchmark", "Compare samplers on one space, bins and fitness with seeds and an equal budget.")
    p.add_argument("--model", type=str, default=None,
                   help="model (default: the one recorded in a replay/surrogate table)")
    p.add_argument("--space", type=str, default="coarse-uniform", help="search space")
    p.add_argument("--bins", type=str, nargs="+", default=["60M-80M"], help="parameter bins")
    p.add_argument("--fitness", type=str, default="replay", help="replay, surrogate, perplexity, importance, ...")
    p.add_argument("--table", type=str, default=None,
                   help="recorded table for replay/surrogate (default: the shipped SmolLM2 coarse table)")
    p.add_argument("--samplers", type=str, nargs="+", default=["evolution", "random", "tpe"],
                   help="samplers to compare (random search is always included)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per sampler")
    p.add_argument("--evaluations", type=int, default=None, help="budget: trials per (sampler, seed, bin)")
    p.add_argument("--seconds", type=float, default=None, help="budget: wall seconds per (sampler, seed, bin)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel")
    p.add_argument("--out", type=str, default="runs/benchmark", help="folder for logs, plots and the table")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("demo", "The main job on the built-in default: search -> extract -> distill/pretrain -> evaluate.")
    p.add_argument("--out", type=str, default="runs/demo", help="run folder (rerun to resume)")
    p.add_argument("--model", type=str, default="default", help=MODEL_HELP.replace(" or a config.json", ""))
    p.add_argument("--data", type=str, default="default", help="training text; validation: its held-out split")
    p.add_argument("--bin", type=str, default="85M-100M", help="parameter bin of the searched sub-network")
    p.add_argument("--epochs", type=int, default=2, help="evolution epochs")
    p.add_argument("--population", type=int, default=6, help="evolution population size")
    p.add_argument("--train-tokens", type=int, default=40_960, help="training tokens per run (equal for all)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step")
    p.add_argument("--eval-seqs", type=int, default=16, help="validation sequences per evaluation")
    p.add_argument("--warmup-steps", type=int, default=8, help="linear warmup steps of every run")
    p.add_argument("--lr-distilled", type=float, default=None, help="peak learning rate of the distilled run "
                   "(default: the swept one, see docs/training.md)")
    p.add_argument("--lr-cross-entropy", type=float, default=None,
                   help="peak learning rate of cross-entropy from the supernet's weights")
    p.add_argument("--lr-random-init", type=float, default=None, help="peak learning rate of the random-init run")
    p.add_argument("--seed", type=int, default=0, help="search and training seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = verb("plugins", "List installed plugins and what each registers.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _training_arguments(p: ArgumentParser) -> None:
    """--data/--out plus one flag per `subnas.training.TrainConfig` field (``lr`` -> ``--lr``)."""
    import dataclasses
    import typing

    from subnas.training._run import TrainConfig

    p.add_argument("--data", type=str, default="default", help="training text (see `evaluate --data`)")
    p.add_argument("--val-data", type=str, default="auto", help="validation text ('auto': default:validation "
                   "when training on default, else none)")
    p.add_argument("--out", type=str, required=True, help="run folder: checkpoints, log, plot, final model")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=hints[f.name], default=f.default,
                       help=f"TrainConfig.{f.name}")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _train_options(args: Any) -> dict[str, Any]:
    import dataclasses

    from subnas.training._run import TrainConfig

    return {f.name: args[f.name] for f in dataclasses.fields(TrainConfig)}


class UsageError(ValueError):
    """A flag value that cannot work, found before any model or data is loaded."""


# Flags that count something, with their lowest legal value; ``None`` (not given) is always fine.
# Checked for every verb that has the flag, so a YAML --config gets the same checks.
_MINIMUM = {"seq_len": (2, "tokens per sequence"), "num_seqs": (1, "sequences"),
            "batch_size": (1, "sequences per batch"),
            "trials": (1, "evaluations per bin"), "epochs": (1, "evolution epochs"),
            "workers": (1, "processes"), "evaluations": (1, "evaluations per run"),
            "population": (1, "candidates per generation"), "train_tokens": (1, "tokens")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_arguments(command: str, args: Any) -> None:
    """Reject flag values outside their legal range, naming the range (`UsageError`)."""
    for name, (lowest, what) in _MINIMUM.items():
        value = getattr(args, name, None)
        if value is not None and value < lowest:
            raise UsageError(f"{_flag(name)} {value} is out of range: give an integer >= {lowest} ({what})")
    seconds = getattr(args, "seconds", None)
    if seconds is not None and not seconds > 0:
        raise UsageError(f"--seconds {seconds} is out of range: give a number > 0 (wall seconds per run)")
    if command == "demo":
        if args.eval_seqs < 1:
            raise UsageError(f"--eval-seqs {args.eval_seqs} is out of range: give an integer >= 1 (sequences)")
        if args.warmup_steps < 0:
            raise UsageError(f"--warmup-steps {args.warmup_steps} is out of range: give an integer >= 0 (steps)")
        for name in ("lr_distilled", "lr_cross_entropy", "lr_random_init"):
            value = getattr(args, name)
            if value is not None and not value > 0:
                raise UsageError(f"{_flag(name)} {value} is out of range: give a number > 0 (peak learning rate)")
    if command in ("pretrain", "distill"):
        from subnas.training._run import TrainConfig, TrainConfigError

        try:
            config = TrainConfig(**_train_options(args))
            if command == "distill":
                config.check_distillation()
        except TrainConfigError as exc:
            raise UsageError(exc.describe(lambda name, value: f"{_flag(name)} {value}")) from None
    if getattr(args, "device", None) is not None:
        from subnas.evaluation._perplexity import resolve_device

        resolve_device(args.device)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("subnas")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _load_subnet(path: str | None) -> Any:
    from subnas.subnet import SubNetwork

    return None if path is None else SubNetwork.load(path)


def cmd_params(args: Any) -> dict[str, Any]:
    from subnas.data._assets import locate_model
    from subnas.families import load_config
    from subnas.params import count_parameters

    config = load_config(locate_model(args.model))  # a Hub name fails fast when the Hub is unreachable
    subnet = _load_subnet(args.subnet)
    n = count_parameters(config, subnet)
    full = count_parameters(config)
    return {"model": args.model, "family": config.family, "parameters": n, "full_parameters": full,
            "fraction": n / full, "subnet": None if subnet is None else subnet.to_dict(),
            "_text": f"{n:,} parameters" + ("" if subnet is None else f" ({100 * n / full:.2f}% of {full:,})")}


def cmd_extract(args: Any) -> dict[str, Any]:
    from dataclasses import asdict

    from subnas.export._extract import extract
    from subnas.supernet import Supernet

    subnet = _load_subnet(args.subnet)
    supernet = Supernet.from_pretrained(args.model)
    result = extract(supernet, subnet, args.out, format=args.format, overwrite=args.overwrite)
    note = f"\n  {result.note}" if result.note else ""
    if result.exported_parameters != result.num_parameters:
        note += f"\n  the files hold {result.exported_parameters:,} parameters (zero-padded to a stock shape)"
    if result.format == "subnas":
        why = "" if result.reason is None else f" because {result.reason}"
        note += f"\n  flexible format{why}\n  to load: {result.how_to_load}"
    return {**asdict(result), "_text": f"wrote {result.architecture} with {result.num_parameters:,} parameters to "
                                      f"{result.path} [{result.format} format]{note}"}


def cmd_evaluate(args: Any) -> dict[str, Any]:
    from subnas.evaluation._perplexity import evaluate

    result = evaluate(args.model, data=args.data, subnet=_load_subnet(args.subnet), seq_len=args.seq_len,
                      num_seqs=args.num_seqs, batch_size=args.batch_size, device=args.device)
    bpb = result.get("bits_per_byte")
    return {**result, "_text": f"perplexity {result['perplexity']:.4f} on {result['tokens']:,} tokens"
                               + ("" if bpb is None else f", {bpb:.4f} bits per byte on {result['bytes']:,} bytes")
                               + f" ({result['parameters']:,} parameters, vocabulary {result['vocab_size']:,})"}


def cmd_search(args: Any) -> dict[str, Any]:
    from subnas.search import search

    result = search(args.model, space=args.space, bins=args.bins, fitness=args.fitness, data=args.data,
                    seq_len=args.seq_len, num_seqs=args.num_seqs, order=args.order, calibration=args.calibration,
                    pruner=args.pruner, confirm=args.confirm, sampler=args.sampler, storage=args.storage,
                    study_name=args.study_name, epochs=args.epochs, trials=args.trials, out_dir=args.out,
                    seed=args.seed, workers=args.workers, space_choices=args.space_choices,
                    sampler_options=args.sampler_options, fitness_options=args.fitness_options)
    lines = []
    for entry in result["bins"]:
        lines.append(f"bin {entry['bin'][0]:,}-{entry['bin'][1]:,}: {entry['evaluations']} evaluations, best "
                     f"{args.fitness} {entry.get('best_fitness', float('nan')):.4g} with "
                     f"{entry.get('best_parameters') or 0:,} parameters"
                     + (f" (confirmed {entry['confirmed_fitness']:.4g} on {entry['confirm_data']})"
                        if entry.get("confirmed_fitness") is not None else "")
                     + f" -> {entry.get('best_subnet_file')}")
    lines.append(f"results: {Path(args.out) / 'results.json'}")
    return {**result, "_text": "\n".join(lines)}


def _train_text(result: dict[str, Any]) -> str:
    ppl = result.get("val_perplexity")
    return (f"trained {result['steps']} steps, {result['tokens']:,} tokens ({result['tokens_per_s']:.0f} tok/s), "
            f"final loss {result['final_loss']:.4f}" + ("" if ppl is None else f", validation perplexity {ppl:.2f}")
            + f"\nmodel: {result['model_dir']}")


def cmd_pretrain(args: Any) -> dict[str, Any]:
    from subnas.training._run import pretrain

    result = pretrain(args.model, args.data, args.out, subnet=_load_subnet(args.subnet), init=args.init,
                      val_data=args.val_data, **_train_options(args))
    return {**result, "_text": _train_text(result)}


def cmd_distill(args: Any) -> dict[str, Any]:
    from subnas.training._run import distill

    result = distill(args.teacher, args.data, args.out, student=args.student, subnet=_load_subnet(args.subnet),
                     init=args.init, val_data=args.val_data, **_train_options(args))
    return {**result, "_text": _train_text(result)}


def cmd_benchmark(args: Any) -> dict[str, Any]:
    from subnas.benchmark._report import markdown_table
    from subnas.benchmark._samplers import benchmark_samplers

    options: dict[str, Any] = {}
    if args.fitness in ("replay", "surrogate"):
        options["table"] = args.table or str(Path(__file__).resolve().parents[1] / "benchmarks" / "tables"
                                             / "smollm2_coarse.json")
    if args.evaluations is None and args.seconds is None:
        raise ValueError("give a budget: --evaluations N or --seconds S")
    result = benchmark_samplers(args.model, space=args.space, bins=args.bins, fitness=args.fitness,
                                samplers=tuple(args.samplers), seeds=tuple(args.seeds),
                                budget_evals=args.evaluations, budget_seconds=args.seconds, out_dir=args.out,
                                fitness_options=options, workers=args.workers)
    return {**result, "_text": markdown_table(result["table"]) + f"\nfiles in {args.out}"}


def cmd_demo(args: Any) -> dict[str, Any]:
    from subnas.demo import demo, format_summary

    lrs = {name: lr for name, lr in (("distilled", args.lr_distilled), ("cross-entropy", args.lr_cross_entropy),
                                     ("random init", args.lr_random_init)) if lr is not None}
    summary = demo(args.out, model=args.model, data=args.data, bin=args.bin, epochs=args.epochs,
                   population=args.population, train_tokens=args.train_tokens, seq_len=args.seq_len,
                   batch_size=args.batch_size, eval_seqs=args.eval_seqs, seed=args.seed, lrs=lrs,
                   warmup_steps=args.warmup_steps)
    return {**summary, "_text": format_summary(summary)}


def cmd_plugins(args: Any) -> dict[str, Any]:
    from subnas.plugins import plugins_report

    report = plugins_report()
    lines = []
    for plugin in report:
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in plugin["registers"].items() if names)
        status = f"  ERROR: {plugin['error']}" if plugin.get("error") else ""
        lines.append(f"{plugin['name']} {plugin.get('version') or ''}  {what}{status}".rstrip())
    return {"plugins": report, "_text": "\n".join(lines)}


COMMANDS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "params": cmd_params,
    "extract": cmd_extract,
    "evaluate": cmd_evaluate,
    "search": cmd_search,
    "pretrain": cmd_pretrain,
    "distill": cmd_distill,
    "benchmark": cmd_benchmark,
    "demo": cmd_demo,
    "plugins": cmd_plugins,
}


def main(argv: list[str] | None = None) -> int:
    from subnas.training._checkpoints import CorruptCheckpointError
    from subnas.families import NotExpressible
    from subnas.plugins import PluginError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentError as exc:
        verb = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMANDS), None)
        print(f"subnas: error: {' '.join(str(exc).split())}; see: subnas {verb + ' ' if verb else ''}--help",
              file=sys.stderr)
        return 2
    command = args.command
    sub_args = args[command]
    try:
        _check_arguments(command, sub_args)
        result = COMMANDS[command](sub_args)
    except KeyboardInterrupt:
        print("subnas: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, NotExpressible, PluginError, FloatingPointError, CorruptCheckpointError) as exc:
        # Our errors name the problem and the fix; show them on one line, without a traceback.
        # Anything else (TypeError, KeyError, ...) is a bug and keeps its traceback. SUBNAS_DEBUG=1
        # shows the traceback of these too, for when a ValueError is a bug in disguise.
        if os.environ.get("SUBNAS_DEBUG"):
            raise
        print(f"subnas: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    text = result.pop("_text", None)
    if sub_args.json:
        print(json.dumps(result, default=str))
    elif text is not None:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
