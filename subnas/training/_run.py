"""Training an extracted small LM: `pretrain` (cross-entropy) and `distill` (from the teacher).

Paper §2.3: the extracted sub-network is a dense model trained with token-level cross-entropy, or
with ``α·CE + β·KL(teacher ‖ student)`` (`subnas.training._losses`). Its baseline is the same architecture
from random init. Both entry points take plain keyword arguments (the CLI calls them directly),
write everything into one run folder, and resume from it when called again with the same
arguments:

    <out_dir>/run.json            the call: sources, `TrainConfig`, fingerprint
    <out_dir>/init/               the student's starting weights, when extracted from a sub-network
    <out_dir>/checkpoints/step-N/ the last ``keep_checkpoints`` checkpoints (`subnas.training._checkpoints`)
    <out_dir>/log.csv             one row per step (+ tensorboard/ when installed)
    <out_dir>/training_curve.png  loss and validation perplexity over tokens
    <out_dir>/model/              the trained model: safetensors + config + tokenizer
    <out_dir>/summary.json        what `pretrain`/`distill` return; ``"complete": false`` until the
                                  model is written (updated at checkpoints and when a run stops)

A folder holding anything else is refused as ``out_dir`` (`check_run_folder`), so a run never
scatters its files among someone else's.

Under ``torchrun`` the same calls run data-parallel (`subnas.training._distributed`).

Usage (hours on a CPU, so shown, not run; tests/test_train.py runs both entry points on tiny models,
tests/test_integration.py on the real one)::

    from subnas.training import distill
    distill("default", "default", "runs/kd", subnet={"n_layers": 12},
            max_tokens=2_000_000, seq_len=512, batch_size=8)
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from subnas.subnet import SubNetwork
from subnas.training._config import INITS, Init, TrainConfig, make_config
from subnas.training._loop import model_vocab_size



#: What a training run writes into its folder (see the module docstring). A folder holding
#: anything else belongs to someone else, and a run must not scatter its files among them.
RUN_ENTRIES = frozenset({"run.json", "init", "checkpoints", "log.csv", "training_curve.png", "tensorboard",
                         "model", "summary.json"})


def check_run_folder(out_dir: str | os.PathLike[str]) -> None:
    """Raise `FileExistsError` unless ``out_dir`` is missing, empty, or a training run's folder
    (which is then resumed). Temporary ``.NAME.*`` siblings of atomic writes count as the run's."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"the output folder {str(out)!r} is a file; give a new folder for the run")
    if not out.is_dir():
        return
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                     if p.name not in RUN_ENTRIES and not any(p.name.startswith(f".{e}.") for e in RUN_ENTRIES))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FileExistsError(
            f"the output folder {str(out)!r} holds files that no subnas training run wrote ({shown}); a run "
            "writes checkpoints, logs and the model into its folder and resumes from them, so give a new or "
            "empty folder (or the folder of an earlier run, to resume it)")


def _checked_config(config: TrainConfig | None, options: dict[str, Any], *, distill: bool) -> TrainConfig:
    """The run's `TrainConfig`, checked before anything is loaded: option ranges, the distillation
    weights, and that the device exists (a wrong one would otherwise fail after minutes of loading)."""
    from subnas.evaluation._perplexity import resolve_device

    cfg = make_config(config, **options)
    if distill:
        cfg.check_distillation()
    resolve_device(cfg.device)
    return cfg


class VocabularyMismatchError(ValueError):
    """Teacher and student do not share one vocabulary, so their logits cannot be compared."""


# ---------------------------------------------------------------------------- public entry points
def pretrain(model: str | os.PathLike[str] | PreTrainedModel, data: str, out_dir: str | os.PathLike[str], *,
             subnet: SubNetwork | dict[str, Any] | str | None = None, init: Init = "pretrained",
             val_data: str | None = "auto", tokenizer: Any = None, config: TrainConfig | None = None,
             on_step: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> dict[str, Any]:
    """Train a model with next-token cross-entropy (paper §2.3, "pretraining").

    Args:
        model: a model folder (e.g. from ``subnas extract``), ``"default"``, a hub name, or a loaded
            `transformers` causal LM.
        data: training text, as ``subnas evaluate --data`` reads it (`subnas.data.load_token_blocks`:
            ``default``, files, dataset names).
        out_dir: the run folder (checkpoints, log, plot, final model); calling again with the same
            arguments resumes from it.
        subnet: train this sub-network of ``model`` (a `SubNetwork`, its dict, or a JSON file): it is
            extracted into ``out_dir/init`` first.
        init: ``"pretrained"`` (the weights) or ``"random"`` (same architecture, fresh init seeded
            by ``seed``: the paper's baseline).
        val_data: held-out text for validation perplexity; ``"auto"`` = ``default:validation`` when
            training on ``default``, else none.
        tokenizer: needed only when ``model`` is an object without a tokenizer folder.
        config: a `TrainConfig`; ``**options`` override its fields (e.g. ``max_tokens=10_000``).
        on_step: called after every optimizer step with ``{"step", "loss", "model", ...}``.

    Returns:
        The run summary (also in ``out_dir/summary.json``): ``model_dir``, ``steps``, ``tokens``,
        ``final_loss``, ``val_perplexity``, ``tokens_per_s``, ...
    """
    from subnas.training._loop import run_training

    cfg = _checked_config(config, options, distill=False)
    check_run_folder(out_dir)
    subnet = _subnet(subnet)  # a file is read once: it may be a pipe such as <(echo ...)
    student, tok, described = _student(model, subnet, init, out_dir, cfg, tokenizer)
    sources = {"model": _name(model), **described, "data": data, "val_data": _val_spec(data, val_data)}
    return run_training("pretrain", student=student, tokenizer=tok, teacher=None, sources=sources,
                        out_dir=Path(out_dir), config=cfg, on_step=on_step)


def distill(teacher: Any, data: str, out_dir: str | os.PathLike[str], *,
            student: str | os.PathLike[str] | PreTrainedModel | None = None,
            subnet: SubNetwork | dict[str, Any] | str | None = None,
            teacher_subnet: SubNetwork | dict[str, Any] | str | None = None, init: Init = "pretrained",
            val_data: str | None = "auto", tokenizer: Any = None, config: TrainConfig | None = None,
            on_step: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> dict[str, Any]:
    """Train a student by knowledge distillation from ``teacher`` (paper §2.3, eq. 2–4).

    Args:
        teacher: a `subnas.Supernet`, a model folder / ``"default"`` / hub name, or any loaded
            causal LM with the student's vocabulary.
        data, out_dir, init, val_data, tokenizer, config, on_step, options: as in `pretrain`.
        student: the student: a model folder or a loaded model (or give ``subnet``).
        subnet: a sub-network of the teacher to extract as the student (paper: the teacher is the
            model the sub-network came from). With a pruned vocabulary (``vocab_size`` /
            ``vocab_indices``) the student reads text through its pruned tokenizer and the teacher is
            restricted to the same tokens (`teacher_for_student`).
        teacher_subnet: run the teacher with this sub-network active (default: the full model).

    Returns:
        The run summary, as `pretrain`.
    """
    from subnas.supernet import Supernet

    cfg = _checked_config(config, options, distill=True)
    check_run_folder(out_dir)
    subnet, teacher_subnet = _subnet(subnet), _subnet(teacher_subnet)  # files are read once (pipes)
    if (student is None) == (subnet is None):
        raise ValueError("distill needs exactly one student: --student / student= (a model folder) or "
                         "--subnet / subnet= (a sub-network of the teacher, extracted as the student)")
    supernet: Supernet | None = teacher if isinstance(teacher, Supernet) else None
    if supernet is None and (subnet is not None or teacher_subnet is not None):
        supernet = (Supernet.from_model(teacher, tokenizer=tokenizer) if isinstance(teacher, PreTrainedModel)
                    else Supernet.from_pretrained(teacher))
    teacher_model: Any
    if supernet is None:
        teacher_model, teacher_tok = _load_model(teacher, tokenizer)
        stud, tok, described = _student(student, None, init, out_dir, cfg, tokenizer or teacher_tok)
        return _distill(teacher_model, teacher_tok, stud, tok, teacher, None, student, described, data, val_data,
                        out_dir, cfg, on_step)
    teacher_subnet = teacher_for_student(supernet, subnet, teacher_subnet)
    teacher_tok = _teacher_tokenizer(supernet, teacher_subnet, tokenizer)
    # The student first: a sub-network is extracted from the full supernet, which the teacher's
    # sub-network (set below; the caller's supernet comes back as it was) must not touch.
    stud, tok, described = _student(supernet if subnet is not None else student, subnet, init, out_dir, cfg,
                                    teacher_tok if subnet is None else tokenizer or supernet.tokenizer)
    previous = supernet.active
    try:
        supernet.set_sub_network(teacher_subnet)
        return _distill(supernet.model, teacher_tok, stud, tok, teacher, teacher_subnet, student, described, data,
                        val_data, out_dir, cfg, on_step)
    finally:
        supernet.set_sub_network(previous)


def _distill(teacher_model: Any, teacher_tok: Any, stud: Any, tok: Any, teacher: Any, teacher_subnet: Any,
             student: Any, described: dict[str, Any], data: str, val_data: str | None, out_dir: Any,
             cfg: TrainConfig, on_step: Any) -> dict[str, Any]:
    from subnas.training._loop import run_training

    check_same_vocabulary(teacher_model, stud, teacher_tok, tok)
    sources = {"teacher": _name(teacher), "teacher_subnet": _subnet_dict(teacher_subnet),
               "student": _name(student) if student is not None else None, **described, "data": data,
               "val_data": _val_spec(data, val_data)}
    return run_training("distill", student=stud, tokenizer=tok or teacher_tok, teacher=teacher_model,
                        sources=sources, out_dir=Path(out_dir), config=cfg, on_step=on_step)


def teacher_for_student(supernet: Any, subnet: SubNetwork | None,
                        teacher_subnet: SubNetwork | None = None) -> SubNetwork | None:
    """The sub-network the teacher runs to distil ``subnet`` of ``supernet``: ``teacher_subnet``
    (default: the full model) restricted to the student's kept tokens.

    A student with a pruned vocabulary reads text through its own, pruned tokenizer (which
    segments text differently from the full one, so the full token stream cannot simply be
    renumbered), and the KL term compares logits token by token; so the teacher must speak the
    same tokens. The supernet with only the vocabulary pruned is exactly that teacher: the same
    weights, its input ids and softmax over the kept rows (issue #13).

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from subnas import Supernet, SubNetwork
        >>> supernet = Supernet.from_model(LlamaForCausalLM(LlamaConfig(
        ...     vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)))
        >>> teacher = teacher_for_student(supernet, SubNetwork(n_layers=1, vocab_size=40))
        >>> teacher.n_layers is None, len(teacher.vocab_indices)  # all layers, the student's 40 tokens
        (True, 40)
    """
    config = supernet.subnas_config
    kept = None if subnet is None else subnet.resolve(config).vocab
    if kept is None:
        return teacher_subnet
    if teacher_subnet is None:
        return SubNetwork(vocab_indices=kept)
    own = teacher_subnet.resolve(config).vocab
    if own is None:
        return replace(teacher_subnet, vocab_size=None, vocab_indices=kept)
    if own != kept:
        raise VocabularyMismatchError(
            f"the teacher sub-network keeps {len(own):,} tokens and the student {len(kept):,} different ones; "
            "distillation compares logits token by token, so leave the vocabulary out of the teacher's "
            "sub-network (it is then restricted to the student's kept tokens) or give it the student's vocab_indices")
    return teacher_subnet


def _teacher_tokenizer(supernet: Any, teacher_subnet: SubNetwork | None, tokenizer: Any) -> Any:
    """The tokenizer of the teacher's vocabulary: the pruned one when its sub-network keeps fewer tokens."""
    from subnas.vocab import pruned_tokenizer

    full = tokenizer or supernet.tokenizer
    if full is None or teacher_subnet is None:
        return full
    return pruned_tokenizer(full, teacher_subnet.resolve(supernet.subnas_config).vocab)


def check_same_vocabulary(teacher: Any, student: Any, teacher_tokenizer: Any = None,
                          student_tokenizer: Any = None) -> None:
    """Raise `VocabularyMismatchError` unless both models emit logits over the same token ids."""
    tv, sv = model_vocab_size(teacher), model_vocab_size(student)
    if tv != sv:
        pruned = (" A student with a pruned vocabulary (vocab_size / vocab_indices) is distilled with --subnet / "
                  "subnet= (its sub-network of the teacher), which restricts the teacher to the student's kept "
                  "tokens." if sv < tv else "")
        raise VocabularyMismatchError(
            f"the teacher has a vocabulary of {tv:,} tokens, the student {sv:,}; distillation compares their "
            "logits token by token, so both must use the same tokenizer (extract the student from the teacher)."
            + pruned)
    if teacher_tokenizer is not None and student_tokenizer is not None and hasattr(teacher_tokenizer, "get_vocab"):
        if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
            raise VocabularyMismatchError("teacher and student tokenizers map tokens to different ids; "
                                          "distillation needs one shared tokenizer")


# ---------------------------------------------------------------------------- loading the student
def _name(source: Any) -> str | None:
    if source is None or isinstance(source, (str, os.PathLike)):
        return None if source is None else str(source)
    return f"<{type(source).__name__}>"


def _val_spec(data: str, val_data: str | None) -> str | None:
    if val_data == "auto":
        from subnas.data._sources import parse_text_source

        return "default:validation" if parse_text_source(data).kind == "default" else None
    return val_data


def _subnet(subnet: SubNetwork | dict[str, Any] | str | os.PathLike[str] | None) -> SubNetwork | None:
    return SubNetwork.coerce(subnet)  # type: ignore[no-any-return]


def _subnet_dict(subnet: Any) -> dict[str, Any] | None:
    sub = _subnet(subnet)
    return None if sub is None else sub.to_dict()


def _load_model(source: Any, tokenizer: Any = None) -> tuple[PreTrainedModel, Any]:
    """A float32 causal LM and its tokenizer (``None`` if it has none) from a folder, name or object."""
    if isinstance(source, PreTrainedModel):
        return source, tokenizer
    import subnas.modeling  # noqa: F401  (registers the flexible format with the Auto classes)

    from subnas.data._assets import locate_model
    from subnas._io import check_model_files
    from subnas._io import transformers_bars_off
    from subnas.supernet import load_tokenizer, weights_errors

    path = locate_model(source)  # "default"; a Hub name fails fast when the Hub is unreachable
    if Path(path).is_dir():
        check_model_files(path)  # names a truncated file instead of a bare SafetensorError
    with weights_errors(path), transformers_bars_off():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if tokenizer is None:
        tokenizer = load_tokenizer(path)
    return model, tokenizer


def _student(source: Any, subnet: Any, init: Init, out_dir: Any, cfg: TrainConfig,
             tokenizer: Any) -> tuple[PreTrainedModel, Any, dict[str, Any]]:
    """The student: ``source`` itself, or its ``subnet`` extracted into ``out_dir/init``; then
    re-initialised at random when ``init == "random"``."""
    from subnas.training import _distributed as distributed
    from subnas.lookups import get_extractor
    from subnas.supernet import Supernet
    from subnas.vocab import save_pruned_tokenizer

    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {INITS}")
    sub = _subnet(subnet)
    described: dict[str, Any] = {"subnet": None if sub is None else sub.to_dict(), "init": init}
    if sub is not None:
        init_dir = Path(out_dir) / "init"
        info = distributed.setup(cfg.device)
        if info.is_main and not (init_dir / "config.json").is_file():
            supernet = source if isinstance(source, Supernet) else (
                Supernet.from_model(source, tokenizer=tokenizer) if isinstance(source, PreTrainedModel)
                else Supernet.from_pretrained(source))
            tokenizer = tokenizer or supernet.tokenizer
            # The sub-network itself, never a zero-padded stock shape: training (and a random-init
            # baseline of "the same architecture") must see the searched widths.
            get_extractor("transformers", pad=False).extract(supernet, sub, init_dir, overwrite=True)
            if tokenizer is not None and not (init_dir / "tokenizer_config.json").is_file():
                kept = sub.resolve(supernet.subnas_config).vocab  # the supernet had none: write the given one
                tokenizer.save_pretrained(init_dir) if kept is None else save_pruned_tokenizer(tokenizer, kept, init_dir)
        distributed.barrier()
        described["init_dir"] = str(init_dir)
        # The student reads text through the tokenizer beside its weights: for a pruned vocabulary
        # the pruned one (`subnas.extract` writes it), never the full one given for the teacher.
        source, tokenizer = init_dir, None
    elif isinstance(source, Supernet):
        source, tokenizer = source.model, tokenizer or source.tokenizer
    model, tokenizer = _load_model(source, tokenizer)
    if init == "random":
        # Paper baseline: the same architecture from scratch. Seeded, so every rank and every
        # resume builds the same starting point (the checkpoint then overrides it anyway).
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    return model, tokenizer, described
