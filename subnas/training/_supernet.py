"""`train_supernet`: weight-sharing training of a pretrained model's sub-networks (``subnas train-supernet``).

Each optimizer step asks a `subnas.interfaces.TrainingStrategy` (``sandwich``, ``random``, ...) for
sub-networks of the search space inside a size range, runs each in place in the supernet on the
step's batch (`SubnasForCausalLM.set_sub_network`; with gradients on, a selection of units is
gathered inside autograd, so the gradient lands on the shared weights), and sums their losses
before one optimizer step. The loop is distillation's own (`subnas.training._loop.run_training`,
through its `Objective` seam): the same schedules, checkpoints and resume, log, progress and DDP.

**The loss** (``distill_from``): ``"teacher"`` — every sub-network is distilled from the frozen
original model, ``α·CE + β·KL`` with its top-k targets from the same verified on-disk cache as
``subnas distill``; ``"largest"`` — in-place distillation (BigNAS): the largest sub-network is
trained on the text (CE) and its detached top-k logits are every other sub-network's targets, so
no second model is held.

**The unit order.** In the coarse spaces "the first n" units are the n most important ones of the
search's `subnas.spaces.UnitOrder` (computed on the model before training), written as explicit
index sets in the *original* numbering. Training does not permute anything: it gathers those
units, so the nested prefixes of that order are what it shapes, and a sub-network file means the
same units in the original model and in the trained one. The trained model is written as a stock
checkpoint of the original architecture (`subnas.extract` of the full network) plus
``subnas_unit_order.json``, the order it was trained in, which the search spaces read back
(`subnas.spaces.resolve_order`) so that a search on the trained model ranks units as training did.

Usage (minutes on a CPU, so shown, not run; tests/test_supernet_training.py runs it on tiny models)::

    from subnas.training import train_supernet
    train_supernet("default", "default", "runs/supernet", strategy="sandwich", sizes="50M-135M",
                   max_tokens=100_000, seq_len=256, batch_size=4)
"""

from __future__ import annotations

import copy
import json
import os
import random
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from subnas.bins import ParameterBin
from subnas.interfaces import SearchSpace, SubNetworkDraw, TrainingStrategy
from subnas.lookups import get_training_strategy
from subnas.subnet import ResolvedSubNetwork, SubNetwork
from subnas.training._config import TrainConfig
from subnas.training._losses import distillation_loss, teacher_topk

DISTILL_FROM = ("teacher", "largest")


class SizeRange(SubNetworkDraw):
    """The members of ``space`` whose parameter count lies in ``bin``: what strategies draw from.

    Example:
        >>> import random
        >>> from subnas import ParameterBin, SubnasConfig, get_search_space
        >>> space = get_search_space("coarse-uniform", SubnasConfig(num_hidden_layers=4, hidden_size=64))
        >>> draw = SizeRange(space, ParameterBin(*space.bounds()))
        >>> draw.largest().n_layers, draw.smallest().n_layers
        (4, 1)
    """

    def __init__(self, space: SearchSpace, bin: ParameterBin) -> None:
        lo, hi = space.bounds()
        if bin.hi < lo or bin.lo > hi:
            raise ValueError(f"the size range {bin.lo:,}-{bin.hi:,} parameters holds no member of the search space "
                             f"(its members have {lo:,} to {hi:,}); give --sizes inside that range")
        self.space, self.bin = space, bin

    @cached_property
    def _ends(self) -> tuple[SubNetwork, SubNetwork]:
        extremes = getattr(self.space, "extremes", None)
        if extremes is not None:
            ends = extremes()
        else:  # a plugin space without extremes(): the full model if it is a member, else the ends of a sample
            rng = random.Random(0)
            pool = [self.space.sample(rng) for _ in range(64)]
            if self.space.contains(SubNetwork()):
                pool.append(SubNetwork())
            ends = (min(pool, key=self.space.count), max(pool, key=self.space.count))
        return self._inside(ends[0], "smallest"), self._inside(ends[1], "largest")

    def _inside(self, subnet: SubNetwork, which: str) -> SubNetwork:
        if self.space.count(subnet) in self.bin:
            return subnet
        moved = self.space.repair(subnet, self.bin, random.Random(0))
        if moved is None or self.space.count(moved) not in self.bin:
            raise ValueError(f"the {which} member of the search space lies outside the size range "
                             f"{self.bin.lo:,}-{self.bin.hi:,} and cannot be moved into it; widen --sizes")
        return moved

    def smallest(self) -> SubNetwork:
        return self._ends[0]

    def largest(self) -> SubNetwork:
        return self._ends[1]

    def random(self, rng: random.Random) -> SubNetwork:
        found = self.space.sample_in(self.bin, rng)
        if found is None:
            raise ValueError(f"no random member of the search space was found inside the size range "
                             f"{self.bin.lo:,}-{self.bin.hi:,}; widen --sizes")
        return found


class SupernetStep(torch.nn.Module):
    """One micro-batch of supernet training: every sub-network the strategy drew for the step, run
    in place on the same tokens, their losses summed (the `Objective` module of the training loop).

    Returns ``[loss, ce, kd]`` (sums over the sub-networks; ``loss`` carries the graph). The draw is
    a function of (seed, step) and is memoised per step, so every micro-batch and every rank of a
    step trains the same sub-networks, and a resumed run draws what the uninterrupted one drew.
    """

    def __init__(self, student: Any, draw: SizeRange, strategy: TrainingStrategy, cfg: TrainConfig, *,
                 total: int, distill_from: str) -> None:
        super().__init__()
        self.student, self.draw, self.strategy, self.cfg = student, draw, strategy, cfg
        self.total, self.distill_from = total, distill_from
        self._plan: tuple[int, list[ResolvedSubNetwork]] | None = None

    def plan(self, step: int) -> list[ResolvedSubNetwork]:
        """The sub-networks of ``step``; in in-place distillation the largest comes first when drawn."""
        if self._plan is None or self._plan[0] != step:
            rng = random.Random(f"subnas-supernet-{self.cfg.seed}-{step}")
            drawn = self.strategy.sample(self.draw, step=step, total=self.total, rng=rng)
            if not drawn:
                raise ValueError(f"training strategy {type(self.strategy).__name__} drew no sub-network at step {step}")
            config = self.student.config
            resolved = [s.resolve(config) for s in drawn]
            largest = self.largest_resolved
            resolved.sort(key=lambda r: r != largest)  # stable: the largest first, the rest as drawn
            self._plan = (step, resolved)
        return self._plan[1]

    @cached_property
    def largest_resolved(self) -> ResolvedSubNetwork:
        return self.draw.largest().resolve(self.student.config)

    def _targets(self, logits: torch.Tensor) -> Any:
        logits = logits.detach()
        if not self.cfg.top_k:
            return logits
        return teacher_topk(logits, self.cfg.top_k, self.cfg.temperature, chunk_size=self.cfg.loss_chunk_size)

    def forward(self, ids: torch.Tensor, target: Any, step: int) -> torch.Tensor:
        cfg, student = self.cfg, self.student
        subnets = self.plan(step)
        inplace = self.distill_from == "largest"
        total = torch.zeros(3, dtype=torch.float32, device=ids.device)
        try:
            if inplace and subnets[0] != self.largest_resolved:
                with torch.no_grad():  # the largest is not trained this step, but it is still the teacher
                    student.set_sub_network(self.largest_resolved)
                    target = self._targets(student(ids, use_cache=False).logits)
            for subnet in subnets:
                student.set_sub_network(subnet)
                logits = student(ids, use_cache=False).logits
                # The loss upcasts on its own; outside autocast it computes what `distill` computes.
                with torch.autocast(ids.device.type, enabled=False):
                    if inplace and subnet == self.largest_resolved:
                        parts = distillation_loss(logits, ids, None, chunk_size=cfg.loss_chunk_size)  # BigNAS: CE
                        target = self._targets(logits)
                    else:
                        parts = distillation_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta,
                                                  temperature=cfg.temperature, kind=cfg.kl,  # type: ignore[arg-type]
                                                  chunk_size=cfg.loss_chunk_size)
                total = total + torch.stack([parts.loss, parts.ce.detach(), parts.kd.detach()])
        finally:
            student.set_sub_network(None)  # validation and checkpoints see the full model
        return total


def _save(supernet: Any, tokenizer: Any, record: dict[str, Any]) -> Callable[[Any, Path], None]:
    """Writes the trained model: the full network through `subnas.extract` (a stock checkpoint of
    the original architecture when it has one), the tokenizer and the unit order."""
    from subnas._io import atomic_write_text
    from subnas.export._extract import extract
    from subnas.spaces._ordering import UNIT_ORDER_FILE

    def save(student: Any, folder: Path) -> None:
        previous = supernet.active
        try:
            extract(supernet, None, folder, overwrite=True)
        finally:
            supernet.set_sub_network(previous)
        tokenizer.save_pretrained(folder)
        atomic_write_text(Path(folder) / UNIT_ORDER_FILE, json.dumps(record) + "\n")

    return save


def train_supernet(model: Any, data: str, out_dir: str | os.PathLike[str], *, space: str = "coarse-uniform",
                   strategy: str = "sandwich", sizes: str | None = None,
                   distill_from: Literal["teacher", "largest"] = "teacher",
                   order: Literal["importance", "block-influence", "natural"] = "importance",
                   calibration: str = "default:calibration", space_choices: dict[str, Any] | None = None,
                   strategy_options: dict[str, Any] | None = None, val_data: str | None = "auto", tokenizer: Any = None,
                   config: TrainConfig | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
                   **options: Any) -> dict[str, Any]:
    """Train the model's sub-networks together, with weight sharing (``subnas train-supernet``).

    Args:
        model: a model folder, ``"default"``, a hub name, or a `subnas.Supernet` (trained in place).
        data: training text, as `subnas.training.pretrain` reads it.
        out_dir: the run folder (checkpoints, log, plot, final model); calling again with the same
            arguments resumes from it. ``out_dir/model`` is the trained supernet: a stock checkpoint
            of the original architecture plus the unit order it was trained in; give it to
            ``subnas search`` / ``evaluate`` / ``extract`` / ``distill`` as the model.
        space: the search space sub-networks are drawn from (as in ``subnas search``).
        strategy: which sub-networks each step trains: sandwich (the largest, the smallest and
            random ones), random, random-linear, standard (the largest only), ats, or a plugin's.
        sizes: the size range drawn from, e.g. 50M-135M (default: the whole space). Put the bins
            you will search inside it; the sandwich's ends are the largest and smallest members in it.
        distill_from: teacher (every sub-network distils from the frozen original model, its top-k
            logits cached on disk as in ``subnas distill``) or largest (in-place distillation,
            BigNAS: the largest sub-network learns from the text, the others from its logits).
        order: which units "the first n" keeps, as in ``subnas search`` (a model trained by this
            command keeps the order it was trained in).
        calibration: text for the importance order's calibration passes, as in ``subnas search``.
        space_choices: per-dimension choices of the space, as in ``subnas search``.
        strategy_options: the strategy's keyword options, e.g. ``{"random_samples": 2}``.
        val_data: held-out text for the full model's validation perplexity; ``"auto"`` =
            ``default:validation`` when training on ``default``.
        tokenizer: needed only when ``model`` is an object without a tokenizer.
        config: a `TrainConfig`; ``**options`` override its fields (e.g. ``max_tokens=10_000``).
        on_step: called after every optimizer step with ``{"step", "loss", "model", ...}``.

    Returns:
        The run summary (also in ``out_dir/summary.json``), as `subnas.training.distill`'s, plus
        ``supernet`` (space, strategy, sizes, loss, unit order).
    """
    from subnas.search_driver import make_space
    from subnas.supernet import Supernet
    from subnas.training._loop import Objective, run_training
    from subnas.training._run import _checked_config, _name, _val_spec, check_run_folder

    if distill_from not in DISTILL_FROM:
        raise ValueError(f"distill_from={distill_from!r} is not one of {', '.join(DISTILL_FROM)}")
    cfg = _checked_config(config, options, distill=True)
    check_run_folder(out_dir)
    chosen = get_training_strategy(strategy, **(strategy_options or {}))  # a bad name or option fails before loading
    supernet = model if isinstance(model, Supernet) else Supernet.from_pretrained(model)
    tokenizer = tokenizer or supernet.tokenizer
    search_space = make_space(space, supernet, order=order, calibration=calibration, choices=space_choices or {})
    bin = ParameterBin.parse(sizes) if sizes else ParameterBin(*search_space.bounds())
    draw = SizeRange(search_space, bin)
    unit_order = search_space.order
    described = {"space": space, "space_choices": space_choices or {}, "strategy": strategy,
                 "strategy_options": strategy_options or {}, "sizes": [bin.lo, bin.hi], "distill_from": distill_from,
                 "order": None if unit_order is None else unit_order.source}
    teacher = None
    if distill_from == "teacher":  # a frozen copy of the weights as they were before training
        teacher = copy.deepcopy(supernet.model).eval().requires_grad_(False)
    student = supernet.model
    student.requires_grad_(True)
    module = SupernetStep(student, draw, chosen, cfg, total=cfg.total_steps(), distill_from=distill_from)
    record = {**described, "trained_by": "subnas train-supernet", "order_source": described["order"],
              "order": None if unit_order is None else unit_order.to_dict()}
    objective = Objective(module=module, save=_save(supernet, tokenizer, record), fingerprint=described)
    sources = {"model": _name(model), "data": data, "val_data": _val_spec(data, val_data), "supernet": described}
    summary = run_training("supernet", student=student, tokenizer=tokenizer, teacher=teacher, sources=sources,
                           out_dir=Path(out_dir), config=cfg, on_step=on_step, objective=objective)
    student.eval()
    return {**summary, "supernet": described}
