"""Downstream evaluation with lm-eval (EleutherAI's lm-evaluation-harness), paper §4.5.

`evaluate_tasks` hands lm-eval a model *instance* through its ``HFLM`` wrapper, so the same call
evaluates an exported model folder and a sub-network running in place inside the supernet (no
export, no copy). Exported folders also work with the stock CLI, unchanged::

    lm_eval --model hf --model_args pretrained=runs/kd/model --tasks copa,lambada_openai

(a folder in subnas' flexible format needs ``import subnas`` first, so use this function or
``python -c "import subnas, lm_eval.__main__ as m; m.cli_evaluate()" ...`` for those).

lm-eval is optional: ``pip install 'subnas[eval]'``.

Usage (lm-eval fetches the task's data from the Hugging Face Hub, so shown, not run;
tests/test_lm_eval.py runs it offline on local task files)::

    from subnas import Supernet, SubNetwork
    from subnas.evaluation import evaluate_tasks
    supernet = Supernet.from_pretrained("default")
    evaluate_tasks(supernet, ["copa"], subnet=SubNetwork(n_layers=20))
    # {'results': {'copa': {'acc,none': ...}}, ...}
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from subnas.data._assets import locate_model
from subnas.subnet import SubNetwork

#: Keys of lm-eval's result dict that are plain JSON (the rest holds objects and samples).
RESULT_KEYS = ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples")


def _lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError("downstream evaluation needs lm-eval: pip install 'subnas[eval]' "
                                  "(or pip install 'lm-eval>=0.4,<0.5')", name="lm_eval") from exc
    return lm_eval


@contextlib.contextmanager
def _model_for_eval(model: Any, subnet: SubNetwork | dict[str, Any] | None,
                    tokenizer: Any) -> Iterator[tuple[Any, Any]]:
    """``(PreTrainedModel, tokenizer)`` with ``subnet`` active for the duration of the block."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subnas.modeling import SubnasForCausalLM
    from subnas.supernet import Supernet

    if isinstance(model, (str, os.PathLike)):
        name = str(model)
        if subnet is not None:  # a sub-network needs the supernet machinery
            model = Supernet.from_pretrained(name)
        else:
            import subnas.modeling  # noqa: F401  (registers the flexible format with the Auto classes)

            name = locate_model(name)  # "default"; a Hub name fails fast when the Hub is unreachable
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    if isinstance(model, Supernet):
        tokenizer = tokenizer or model.tokenizer
        model = model.model
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    if subnet is None:
        yield model, tokenizer
        return
    if not isinstance(model, SubnasForCausalLM):
        raise TypeError(f"subnet= needs a subnas.Supernet (or SubnasForCausalLM); got {type(model).__name__}. "
                        "Load it with Supernet.from_pretrained or pass the model's folder name.")
    previous = model.active
    model.set_sub_network(SubNetwork.coerce(subnet))
    if model.active.vocab is not None and tokenizer is not None:
        # A pruned vocabulary reads text through its pruned tokenizer, as its export does.
        from subnas.vocab import pruned_tokenizer

        tokenizer = pruned_tokenizer(tokenizer, model.active.vocab)
    try:
        yield model, tokenizer
    finally:
        model.set_sub_network(previous)


def evaluate_tasks(
    model: Any,
    tasks: str | Sequence[str],
    *,
    subnet: SubNetwork | dict[str, Any] | None = None,
    tokenizer: Any = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 8,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    include_defaults: bool = True,
    seed: int = 1234,
    **simple_evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Run lm-eval tasks on a model, an exported folder, or a sub-network inside a supernet.

    Args:
        model: a `subnas.Supernet`, a loaded `transformers` causal LM (`SubnasForCausalLM`
            included), a model folder, or ``"default"``.
        tasks: lm-eval task names (a list or a comma-separated string), e.g. the paper's ``copa``,
            ``lambada_openai``, ``winogrande`` (0-shot), ``mmlu`` (5-shot), ``arc_easy``,
            ``arc_challenge``, ``piqa``, ``hellaswag`` (10-shot).
        subnet: evaluate this sub-network in place (restored afterwards); needs a supernet.
        tokenizer: overrides the model's own.
        limit: evaluate only this many documents per task (a float < 1: that fraction).
        num_fewshot: few-shot examples per prompt (default: each task's own).
        batch_size: lm-eval batch size (an int, or ``"auto"``).
        include_path: folder(s) of custom task YAML files (e.g. local datasets).
        include_defaults: also index lm-eval's built-in tasks (indexing them takes seconds; turn
            off when only ``include_path`` tasks are run).
        seed: lm-eval's random, numpy, torch and few-shot seeds.
        **simple_evaluate_kwargs: passed to ``lm_eval.simple_evaluate`` (e.g. ``bootstrap_iters``).

    Returns:
        lm-eval's result dict, restricted to its JSON parts (`RESULT_KEYS`): ``results`` maps
        each task to its metrics, e.g. ``{"copa": {"acc,none": 0.61, "acc_stderr,none": ...}}``.
    """
    lm_eval = _lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path or [])
    task_manager = TaskManager(include_path=[str(Path(p)) for p in paths] or None, include_defaults=include_defaults)
    with _model_for_eval(model, subnet, tokenizer) as (hf_model, tok):
        was_training = hf_model.training
        hf_model.eval()
        try:
            # backend="causal": lm-eval cannot infer it for the flexible format's config class.
            lm = HFLM(pretrained=hf_model, tokenizer=tok, batch_size=batch_size, backend="causal")
            out = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit,
                                          task_manager=task_manager, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed,
                                          **simple_evaluate_kwargs)
        finally:
            hf_model.train(was_training)
    if out is None:  # lm-eval returns None on non-zero ranks of a distributed run
        return {}
    return {k: out[k] for k in RESULT_KEYS if k in out}
