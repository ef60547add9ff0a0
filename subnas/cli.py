"""The ``subnas`` command line: verbs built from the Python API's signatures.

``subnas params``    -> `subnas.count_parameters`
``subnas extract``   -> `subnas.extract`
``subnas evaluate``  -> `subnas.evaluation.evaluate`
``subnas search``    -> `subnas.search`
``subnas pretrain``  -> `subnas.training.pretrain` (+ `subnas.training.TrainConfig`)
``subnas distill``   -> `subnas.training.distill` (+ `subnas.training.TrainConfig`)
``subnas train-supernet`` -> `subnas.training.train_supernet` (+ `subnas.training.TrainConfig`)
``subnas benchmark`` -> `subnas.benchmark.benchmark_samplers`
``subnas demo``      -> `subnas.demo.demo` (the README's main job)
``subnas plugins``   -> `subnas.plugins.plugins_report`

A verb's flags are its function's parameters (`_api_flags`): ``seq_len`` is ``--seq-len``, with the
parameter's type, default and docstring entry (``Args:``, ``Attributes:``) as its help, so the
API and the CLI cannot drift apart. The verbs declare only where the command line differs: values
it converts (the model name, the ``--subnet`` JSON file, demo's ``--lr-*``), renamed flags
(``out_dir`` is ``--out``), lists given as words (``--bins 30M-40M 60M-70M``), and defaults of
its own (``--data default``).

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
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

MODEL_HELP = "model folder, hub name, 'default' (offline SmolLM2-135M) or a config.json"
#: The positional model argument: a name or folder the verb loads (the API also takes objects).
MODEL: dict[str, Any] = {"flag": "model", "type": str, "help": MODEL_HELP.replace(" or a config.json", "")}
#: ``--subnet FILE``: the verb reads the file (`_load_subnet`), so a bad file is named before a model loads.
SUBNET: dict[str, Any] = {"type": str, "help": "sub-network JSON file (or FOLDER/pareto.json#N: point N of a front)"}
#: ``out_dir`` is ``--out`` on the command line.
OUT: dict[str, Any] = {"flag": "--out"}


def _add_params(p: ArgumentParser) -> None:
    """Count the parameters of a model or of one of its sub-networks (exact, from the config)."""
    from subnas.params import count_parameters

    _api_flags(p, count_parameters, model_or_config={**MODEL, "help": MODEL_HELP}, subnet=SUBNET)


def _add_extract(p: ArgumentParser) -> None:
    """Write a sub-network as a standalone model folder (safetensors, config, tokenizer)."""
    from subnas.export._extract import extract

    _api_flags(p, extract, skip={"pad"}, supernet=MODEL, subnet=SUBNET, out_dir=OUT,
               overwrite={"action": "store_true"})
    p.add_argument("--extractor", type=str, default="transformers",
                   help="registered extractor that writes the model (`subnas plugins` lists them); --format is "
                        "passed to it when it takes one")


def _add_evaluate(p: ArgumentParser) -> None:
    """Perplexity and bits per byte of a model or sub-network on held-out text (the code path search
    uses; a pruned vocabulary reads the text through its pruned tokenizer)."""
    from subnas.evaluation._perplexity import evaluate

    _api_flags(p, evaluate, skip={"progress"}, model=MODEL, subnet=SUBNET,
               num_seqs={"type": int | None})  # null: the whole text (a benchmark's whole split)


def _add_search(p: ArgumentParser) -> None:
    """Search the best sub-network in each parameter bin (one Optuna study per bin). Cost: one fitness
    evaluation per trial; on SmolLM2-135M with the defaults (16 x 256 tokens) ~4-6 s each on 2 CPU cores,
    so --trials 40 takes ~3-4 min per bin, plus one-time calibration passes for the importance order
    (~2 min, cached). With --objectives perplexity,params: one multi-objective study over the whole
    trade-off instead (pareto.json, pareto/pointNN.json, pareto.png)."""
    from subnas.search_driver import search

    _api_flags(p, search, skip={"progress"}, model=MODEL, bins={"nargs": "+"}, out_dir=OUT)


# pretrain and distill: the command line trains on the offline corpus unless given --data; the
# API's ``**options`` are the `TrainConfig` fields, one flag each (``--lr``).
_TRAINING: dict[str, Any] = {"data": {"default": "default"}, "out_dir": OUT}


def _add_pretrain(p: ArgumentParser) -> None:
    """Train a model or sub-network with cross-entropy (resumes when rerun with the same --out)."""
    from subnas.training import TrainConfig, pretrain

    _api_flags(p, pretrain, skip={"tokenizer", "config", "on_step"}, model=MODEL,
               subnet={**SUBNET, "help": "sub-network of MODEL to extract and train"}, **_TRAINING)
    _api_flags(p, TrainConfig, keep_none=True)


def _add_distill(p: ArgumentParser) -> None:
    """Distill a student from a teacher: alpha*CE + beta*KL (resumes when rerun with the same --out)."""
    from subnas.training import TrainConfig, distill, pretrain

    _api_flags(p, distill, skip={"teacher_subnet", "tokenizer", "config", "on_step"}, docs_from=pretrain,
               teacher={**MODEL, "flag": "teacher", "help": f"teacher: {MODEL['help']}"}, student={"type": str},
               subnet={**SUBNET, "help": "sub-network of the teacher to extract as the student"}, **_TRAINING)
    _api_flags(p, TrainConfig, keep_none=True)


def _add_train_supernet(p: ArgumentParser) -> None:
    """Train the sub-networks of a model together, with weight sharing (sandwich, random, ...); the trained
    supernet is a model for search/evaluate/extract/distill (resumes when rerun with the same --out)."""
    from subnas.training import TrainConfig, train_supernet

    _api_flags(p, train_supernet, skip={"tokenizer", "config", "on_step"}, model=MODEL, **_TRAINING)
    _api_flags(p, TrainConfig, keep_none=True)


def _add_benchmark(p: ArgumentParser) -> None:
    """Compare samplers on one space, bins and fitness with seeds and an equal budget."""
    from subnas.benchmark._samplers import benchmark_samplers

    _api_flags(p, benchmark_samplers, skip={"sampler_options", "fitness_options", "space_choices", "progress"},
               model_or_config={"flag": "--model", "type": str, "default": None},
               bins={"nargs": "+", "default": ["60M-80M"]},  # a bin the shipped table (the default) was recorded for
               samplers={"nargs": "+"}, seeds={"nargs": "+"}, budget_evals={"flag": "--evaluations"},
               budget_seconds={"flag": "--seconds"}, out_dir=OUT)
    p.add_argument("--table", type=str, default=None,
                   help="recorded table for replay/surrogate (default: the shipped SmolLM2 coarse table)")


def _add_demo(p: ArgumentParser) -> None:
    """The main job on the built-in default: search -> extract -> distill/pretrain -> evaluate."""
    from subnas.demo import DEFAULT_LRS, demo

    _api_flags(p, demo, skip={"lrs"}, out_dir=OUT)
    for run, lr in DEFAULT_LRS.items():  # lrs={"random init": 0.01} is --lr-random-init 0.01
        p.add_argument(_lr_flag(run), type=float, default=None,
                       help=f"peak learning rate of the {run!r} run (default: {lr:g}, swept: see docs/training.md)")


def _add_plugins(p: ArgumentParser) -> None:
    """List installed plugins and what each registers."""
    from subnas.plugins import plugins_report

    _api_flags(p, plugins_report)  # (no parameters)


# The verbs: each function adds its verb's flags, and its docstring is what --help says of the verb.
VERBS: dict[str, Callable[[ArgumentParser], None]] = {
    "params": _add_params,
    "extract": _add_extract,
    "evaluate": _add_evaluate,
    "search": _add_search,
    "pretrain": _add_pretrain,
    "distill": _add_distill,
    "train-supernet": _add_train_supernet,
    "benchmark": _add_benchmark,
    "demo": _add_demo,
    "plugins": _add_plugins,
}


# exit_on_error=False: `main` prints a malformed command line as one `subnas: error:` line too.
# allow_abbrev=False: a typo (``--num-seq``) is an error, not silently the flag it abbreviates.
# ``--print-config`` is spelled with dashes like every other flag (jsonargparse's own is ``--print_config``).
_PARSER_OPTIONS: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False, "print_config": "--print-config"}


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="subnas", description="Find, extract and train small LMs inside large ones.",
                            **_PARSER_OPTIONS)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subcommands(dest="command", required=True)
    for name, add_flags in VERBS.items():
        help = " ".join((add_flags.__doc__ or "").split())
        p = ArgumentParser(description=help, **_PARSER_OPTIONS)
        p.add_argument("--config", action=ActionConfigFile, help="YAML file whose keys are this command's flags")
        add_flags(p)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        sub.add_subcommand(name, p, help=help)
    return parser


def _api_flags(p: ArgumentParser, api: Callable[..., Any], *, skip: Collection[str] = (),
               docs_from: Callable[..., Any] | None = None, keep_none: bool = False, **cli: dict[str, Any]) -> None:
    """Add one flag per parameter of `api` (a function, or a dataclass such as `TrainConfig`).

    ``seq_len`` becomes ``--seq-len``, with the parameter's type, its default (none: a required
    flag) and its docstring entry as help (`docs_from`: where `api` documents a parameter "as in"
    another function). The command line gives names and paths, so a union holding ``str`` takes a
    ``str``, and a default of ``None`` only means "not given": ``int | None`` takes an ``int``
    (`keep_none`: it also takes ``null``, as ``--top-k null``). `cli` maps a parameter to how the
    command line declares it differently: `ArgumentParser.add_argument` keywords, and ``flag`` for
    another name (without dashes: a positional argument). Parameters in `skip` are Python-only.
    """
    import inspect
    import typing

    hints = typing.get_type_hints(api)
    docs = {**_docstring_entries(docs_from), **_docstring_entries(api)}
    for name, param in inspect.signature(api).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kwargs = {"help": docs.get(name, ""), **cli.get(name, {})}
        flag = kwargs.pop("flag", _flag(name))
        if "type" not in kwargs and "action" not in kwargs:
            kwargs["type"] = hints[name] if keep_none else _given_as(hints[name], each="nargs" in kwargs)
            if name.endswith("_tokens"):  # token counts take suffixes, as --bins does: 16k, 2M
                kwargs["type"] = _as_count(kwargs["type"])
        if flag.startswith("-") and "default" not in kwargs:
            if param.default is param.empty:
                kwargs["required"] = True
            else:  # (a tuple default of a list flag: the list argparse would build)
                kwargs["default"] = list(param.default) if isinstance(param.default, tuple) else param.default
        p.add_argument(flag, **kwargs)


def _given_as(hint: Any, *, each: bool = False) -> Any:
    """The type a command-line word converts to: ``str`` for a union holding it (names and paths
    stand for objects), ``X`` for ``X | None``, the item type for a list given word by word (`each`)."""
    import types
    import typing

    if each:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [t for t in typing.get_args(hint) if t is not type(None)]
        if str in members:
            return str
        if len(members) == 1:
            return members[0]
    return hint


class Count(int):
    """A token or parameter count as a person writes it: ``40960``, ``40,960``, ``16k``, ``1.5M``, ``2B``
    (k, M, B = 10^3, 10^6, 10^9, as in ``--bins 85M-100M``)."""

    def __new__(cls, value: Any) -> Count:
        from subnas.bins import parse_count

        if isinstance(value, str):
            try:
                value = parse_count(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a count: write a whole number such as 40960, 16k or 2M") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a count: write a whole number such as 40960, 16k or 2M")
        return super().__new__(cls, value)


def _register_count() -> None:
    from jsonargparse.typing import register_type

    register_type(Count, int, Count)  # (a plain class would be read as a class to instantiate)


_register_count()


def _as_count(hint: Any) -> Any:
    """``int`` -> `Count`, ``int | None`` -> ``Count | None``."""
    import typing

    if hint is int:
        return Count
    if int in typing.get_args(hint):
        return typing.Optional[Count]
    return hint


def _docstring_entries(api: Callable[..., Any] | None) -> dict[str, str]:
    """``{parameter: help}`` from the Google-style ``Args:``/``Attributes:`` section of `api`'s
    docstring, as plain text (reST quotes dropped, lines joined)."""
    import re

    from docstring_parser import parse

    def plain(text: str) -> str:  # (Python's None is null on the command line)
        return " ".join(re.sub(r"`+([^`]*)`+", r"\1", text.replace("``None``", "null")).split())

    if api is None:
        return {}
    return {entry.arg_name: plain(entry.description or "") for entry in parse(api.__doc__ or "").params}


def _train_options(args: Any) -> dict[str, Any]:
    import dataclasses

    from subnas.training import TrainConfig

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


def _lr_flag(run: str) -> str:
    """Demo's flag of one run's learning rate: ``"random init"`` -> ``--lr-random-init``."""
    return "--lr-" + run.replace(" ", "-")


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
        for run, value in _demo_lrs(args).items():
            if not value > 0:
                raise UsageError(f"{_lr_flag(run)} {value} is out of range: give a number > 0 (peak learning rate)")
    if command in ("pretrain", "distill", "train-supernet"):
        from subnas.training import TrainConfig, TrainConfigError

        try:
            config = TrainConfig(**_train_options(args))
            if command in ("distill", "train-supernet"):
                config.check_distillation()
        except TrainConfigError as exc:
            raise UsageError(exc.describe(lambda name, value: f"{_flag(name)} {value}")) from None
    for name in _POSITIONAL:
        _check_not_a_subnet_file(command, getattr(args, name, None))
    if getattr(args, "device", None) is not None:
        from subnas.evaluation._perplexity import resolve_device

        resolve_device(args.device)


def _check_not_a_subnet_file(command: str, value: Any) -> None:
    """A sub-network file given where the model goes gets the command the user meant."""
    if not isinstance(value, str) or not value.endswith(".json") or not Path(value).is_file():
        return
    from subnas.subnet import SubNetwork

    try:
        SubNetwork.load(value)
    except Exception:  # noqa: BLE001 - not a sub-network file: the model loader says what it is
        return
    raise UsageError(f"{value!r} is a sub-network file, not a model; did you mean "
                     f"`subnas {command} default --subnet {value}` (or another MODEL with --subnet {value})?")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("subnas")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _load_subnet(path: str | None) -> Any:
    from subnas.subnet import SubNetwork

    if path is not None and "#" in path and path.rpartition("#")[0].endswith(".json"):
        from subnas.pareto import load_point  # one point of a front: runs/front/pareto.json#3

        return load_point(path)
    return SubNetwork.coerce(path)


_POSITIONAL = ("model", "teacher")  # the verbs' positional arguments (MODEL in --help)
_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false", "dict": "a mapping such as "
             "'{key: value}'", "list": "a list", "str": "a word", "Count": "a count such as 40960, 16k or 2M"}


def _parser_message(message: str) -> str:
    """jsonargparse's message in the user's terms: the flag as typed and what it takes — never the
    parser's internal key (``Parser key "train_tokens"``) or a Python class (``<class 'int'>``)."""
    import re

    text = " ".join(message.split())
    required = re.search(r"the following arguments are required: (.*)$", text)
    if required:  # jsonargparse names them by key ("distill.out")
        names = [name.upper() if name in _POSITIONAL else _flag(name)
                 for name in (n.strip().split(".")[-1] for n in required.group(1).split(","))]
        return f"missing {', '.join(names)} (required)"
    key = re.search(r'Parser key "([^"]+)"', text)
    if key is None:
        return text
    flag = _flag(key.group(1).split(".")[-1])
    given = re.search(r"(?:Got|Given) value: (.*?)(?: Given value type:.*)?$", text) or re.search(r"'([^']*)' is not a count", text)
    given_text = f" {given.group(1).strip()}" if given else ""
    choices = re.search(r"Literal\[(.*?)\]", text)
    if choices:
        return f"{flag}{given_text} is not one of: {choices.group(1).replace(chr(39), '')}"
    if "Count" in text:
        return f"{flag}{given_text} is not a count: write a whole number such as 40960, 16k or 2M"
    wanted = next((_EXPECTED[k] for k in re.findall(r"<class '(\w+)'>", text) if k in _EXPECTED), None)
    if wanted is not None:
        return f"{flag}{given_text} is not {wanted}"
    return re.sub(r"<class '(\w+)'>", r"\1", text.replace(key.group(0), flag))


def _call(api: Callable[..., Any], args: Any, **given: Any) -> Any:
    """Call ``api`` with the parsed command line: each parameter from the flag of the same name
    (``out_dir`` from ``--out``), so a verb never re-lists its flags by hand; ``given`` wins (values
    the command line converts first, such as a ``--subnet`` file) and may add keyword options
    (`TrainConfig`'s fields for the training verbs)."""
    import inspect

    kwargs = {}
    for name, param in inspect.signature(api).parameters.items():
        key = "out" if name == "out_dir" else name
        if (param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and name not in given and key in args
                and key not in ("config", "json")):  # every verb's own --config FILE and --json
            kwargs[name] = args[key]
    return api(**kwargs, **given)


def cmd_params(args: Any) -> dict[str, Any]:
    from subnas.families import load_config
    from subnas.params import count_parameters

    config = load_config(args.model)  # resolves "default" and fails fast on an unreachable Hub (locate_model)
    subnet = _load_subnet(args.subnet)
    n = count_parameters(config, subnet)
    full = count_parameters(config)
    return {"model": args.model, "family": config.family, "parameters": n, "full_parameters": full,
            "fraction": n / full, "subnet": None if subnet is None else subnet.to_dict(),
            "_text": f"{n:,} parameters" + ("" if subnet is None else f" ({100 * n / full:.2f}% of {full:,})")}


def cmd_extract(args: Any) -> dict[str, Any]:
    from dataclasses import asdict

    import inspect

    from subnas.export._sliced import open_source
    from subnas.lookups import get_extractor
    from subnas.plugins import registry

    factory = registry("extractors")[args.extractor]  # an unknown name: PluginError listing the known ones
    takes_format = "format" in inspect.signature(factory).parameters
    extractor = get_extractor(args.extractor, **({"format": args.format} if takes_format else {}))
    subnet = _load_subnet(args.subnet)
    supernet = open_source(args.model)  # a safetensors folder is read slice by slice, not loaded whole
    result = extractor.extract(supernet, subnet, args.out, overwrite=args.overwrite)
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

    result = _call(evaluate, args, subnet=_load_subnet(args.subnet))
    bpb = result.get("bits_per_byte")
    return {**result, "_text": f"perplexity {result['perplexity']:.4f} on {result['tokens']:,} tokens"
                               + ("" if bpb is None else f", {bpb:.4f} bits per byte on {result['bytes']:,} bytes")
                               + f" ({result['parameters']:,} parameters, vocabulary {result['vocab_size']:,})"}


def cmd_search(args: Any) -> dict[str, Any]:
    from subnas.search_driver import search

    result = _call(search, args)
    if result.get("mode") == "pareto":
        return {**result, "_text": _pareto_text(result, Path(args.out))}
    lines = []
    for entry in result["bins"]:
        metric = entry.get("bin_metric", "parameters")
        unit = "" if metric == "parameters" else f" {metric}"
        value = "" if metric == "parameters" else f" and {entry.get(f'best_{metric}') or 0:,.4g} {metric}"
        lines.append(f"bin {entry['bin'][0]:,}-{entry['bin'][1]:,}{unit}: {entry['evaluations']} evaluations, best "
                     f"{args.fitness} {entry.get('best_fitness', float('nan')):.4g} with "
                     f"{entry.get('best_parameters') or 0:,} parameters{value}"
                     + (f" (confirmed {entry['confirmed_fitness']:.4g} on {entry['confirm_data']})"
                        if entry.get("confirmed_fitness") is not None else "")
                     + f" -> {entry.get('best_subnet_file')}")
        if entry.get("warning"):
            lines.append(f"  warning: {entry['warning']}")
    lines.append(f"results: {Path(args.out) / 'results.json'}")
    return {**result, "_text": "\n".join(lines)}


def _value(v: float) -> str:
    """An objective for people: counts as 46.01M, others with four significant digits."""
    from subnas.bins import _fmt

    return _fmt(int(v)) if v >= 1e4 and float(v).is_integer() else f"{v:.4g}"


#: Above this relative spread (interquartile range / median) a measured objective gets a note.
NOISY_MEASUREMENT = 0.05


def _pareto_text(result: dict[str, Any], out: Path) -> str:
    names = [o["name"] for o in result["objectives"]]
    lines = [f"{result['evaluations']} evaluations, {len(result['front'])} points on the front of "
             f"{' x '.join(names)} (hypervolume {result['hypervolume']:.4f}):"]
    for p in result["front"]:
        values = ", ".join(f"{n} {_value(v)}" for n, v in p["objectives"].items())
        confirmed = f" (confirmed {p['confirmed_fitness']:.4g})" if "confirmed_fitness" in p else ""
        lines.append(f"  point {p['point']}: {values}{confirmed} -> {p['subnet_file']}")
    full = ", ".join(f"{n} {_value(v)}" for n, v in result["full_model"].items())
    lines.append(f"full model: {full}")
    for name, spread in result.get("measurement_spread", {}).items():
        if spread > NOISY_MEASUREMENT:
            lines.append(f"note: {name} is measured, and one measurement's repeats spread by {spread:.0%} of their "
                         f"median here (median over the front); points closer than that are noise, and a second "
                         f"run can land further away (docs/search.md). On a busy or shared machine search on an "
                         f"exact cost (--objectives ...,flops) and time the chosen point on its target")
    lines.append(f"front: {out / 'pareto.json'}, plot: {out / 'pareto.png'}")
    return "\n".join(lines)


def _train_text(result: dict[str, Any]) -> str:
    ppl = result.get("val_perplexity")
    return (f"trained {result['steps']} steps, {result['tokens']:,} tokens ({result['tokens_per_s']:.0f} tok/s), "
            f"final loss {result['final_loss']:.4f}" + ("" if ppl is None else f", validation perplexity {ppl:.2f}")
            + f"\nmodel: {result['model_dir']}")


def cmd_pretrain(args: Any) -> dict[str, Any]:
    from subnas.training import pretrain

    result = _call(pretrain, args, subnet=_load_subnet(args.subnet), **_train_options(args))
    return {**result, "_text": _train_text(result)}


def cmd_distill(args: Any) -> dict[str, Any]:
    from subnas.training import distill

    result = _call(distill, args, subnet=_load_subnet(args.subnet), **_train_options(args))
    return {**result, "_text": _train_text(result)}


def cmd_train_supernet(args: Any) -> dict[str, Any]:
    from subnas.training import train_supernet

    result = _call(train_supernet, args, **_train_options(args))
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

    summary = _call(demo, args, lrs=_demo_lrs(args))
    return {**summary, "_text": format_summary(summary)}


def _demo_lrs(args: Any) -> dict[str, float]:
    """Demo's ``lrs`` from the ``--lr-*`` flags given."""
    from subnas.demo import DEFAULT_LRS

    dest = {run: _lr_flag(run)[2:].replace("-", "_") for run in DEFAULT_LRS}  # (argparse's name of the value)
    return {run: args[dest[run]] for run in DEFAULT_LRS if args[dest[run]] is not None}


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
    "train-supernet": cmd_train_supernet,
    "benchmark": cmd_benchmark,
    "demo": cmd_demo,
    "plugins": cmd_plugins,
}


def main(argv: list[str] | None = None) -> int:
    from subnas.families import NotExpressible
    from subnas.plugins import PluginError
    from subnas._io import CorruptCheckpointError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentError as exc:
        verb = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMANDS), None)
        print(f"subnas: error: {_parser_message(str(exc))}; see: subnas {verb + ' ' if verb else ''}--help",
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
