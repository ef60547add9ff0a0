"""`Supernet`: a pretrained `transformers` LM whose structured sub-networks can be run in place.

Loading converts the checkpoint once into subnas' generic decoder (`SubnasForCausalLM`) — the
weights are re-used, not copied — and from then on any `SubNetwork` is activated by
`set_sub_network` (views for first-n choices, cached gathers for index sets) and run with the same
forward as the full model.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from subnas._io import transformers_bars_off
from subnas._io import CorruptCheckpointError
from subnas.config import SubnasConfig
from subnas.families import ModelFamily, family_for, load_hf_config
from subnas.modeling import SubnasForCausalLM
from subnas.subnet import ResolvedSubNetwork, SubNetwork


class Supernet:
    """A pretrained causal LM as a supernet of sub-networks.

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from subnas import Supernet, SubNetwork
        >>> hf = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
        ...                                   num_attention_heads=4, num_key_value_heads=2,
        ...                                   intermediate_size=64))
        >>> supernet = Supernet.from_model(hf)
        >>> supernet.set_sub_network(SubNetwork(n_layers=1, num_heads=2, intermediate_size=32))
        >>> supernet(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 64])
        >>> supernet.reset()
    """

    def __init__(self, model: SubnasForCausalLM, *, hf_config: PretrainedConfig | None = None,
                 tokenizer: Any = None, source: str | None = None) -> None:
        self.model = model
        self.hf_config = hf_config
        self.tokenizer = tokenizer
        self.source = source

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device | None = None) -> Supernet:
        """Load a model folder, a hub name, or ``"default"`` (the offline SmolLM2-135M).

        A folder written by `subnas.extract` in the flexible format loads too, so an extracted
        model can itself serve as a supernet.
        """
        from subnas.data._assets import locate_model
        from subnas._io import check_model_files

        name = locate_model(name_or_path)  # "default"; a Hub name fails fast when the Hub is unreachable
        if Path(name).is_file():
            raise ValueError(f"{name!r} is a file; Supernet.from_pretrained needs a model folder or hub name "
                             f"(a config.json alone has no weights — `subnas params` accepts it)")
        if Path(name).is_dir():
            check_model_files(name)  # a truncated file is named here, not in a bare SafetensorError
        hf_config = load_hf_config(name)
        tokenizer = load_tokenizer(name)
        with weights_errors(name), transformers_bars_off():
            if isinstance(hf_config, SubnasConfig):
                model = SubnasForCausalLM.from_pretrained(name, dtype=dtype)
                supernet = cls(model, hf_config=None, tokenizer=tokenizer, source=name)
            else:
                family_for(hf_config.model_type)  # fail early, with the list of supported families
                hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
                supernet = cls.from_model(hf, tokenizer=tokenizer, source=name)
        if device is not None:
            supernet.to(device)
        return supernet

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, *, tokenizer: Any = None, source: str | None = None) -> Supernet:
        """Wrap an already loaded `transformers` model; its weight tensors are re-used, not copied."""
        if isinstance(hf_model, SubnasForCausalLM):
            return cls(hf_model, tokenizer=tokenizer, source=source)
        hf_config = hf_model.config
        family = family_for(hf_config.model_type)
        config = family.to_subnas_config(hf_config)
        state = family.to_subnas_state(dict(hf_model.state_dict()), config)
        # Unfused or transposed weights (GPT-NeoX qkv, GPT-2 Conv1D) arrive as strided views;
        # one contiguous copy now keeps every later matmul on the fast path.
        state = {k: v.contiguous() for k, v in state.items()}
        dtype = next(hf_model.parameters()).dtype
        with torch.device("meta"):
            model = SubnasForCausalLM(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.to(dtype)
        model.reset()
        model.eval()
        return cls(model, hf_config=hf_config, tokenizer=tokenizer, source=source or getattr(hf_config, "_name_or_path", None))

    # ------------------------------------------------------------------ sub-networks
    @property
    def subnas_config(self) -> SubnasConfig:
        """The full model's architecture (what sub-networks are validated against)."""
        return self.model.config  # type: ignore[no-any-return]

    @property
    def family(self) -> ModelFamily | None:
        """The `transformers` family this supernet came from (``None`` for a flexible-format model)."""
        return None if self.hf_config is None else family_for(self.hf_config.model_type)

    @property
    def active(self) -> ResolvedSubNetwork:
        """The active sub-network, fully resolved."""
        return self.model.active  # type: ignore[no-any-return]

    def set_sub_network(self, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None) -> None:
        """Activate a sub-network (raises `SubNetworkError` if it is illegal for this model)."""
        self.model.set_sub_network(SubNetwork.coerce(subnet))

    def reset(self) -> None:
        """Activate the full network."""
        self.model.reset()

    @contextlib.contextmanager
    def sub_network(self, subnet: SubNetwork | ResolvedSubNetwork | None) -> Iterator[Supernet]:
        """Run a block with ``subnet`` active, restoring the previous one afterwards."""
        previous = self.active
        self.set_sub_network(subnet)
        try:
            yield self
        finally:
            self.set_sub_network(previous)

    def count_parameters(self, subnet: SubNetwork | ResolvedSubNetwork | None = None) -> int:
        from subnas.params import count_parameters

        return count_parameters(self.subnas_config, subnet)

    # ------------------------------------------------------------------ running
    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        return self.model(input_ids, **kwargs)

    def to(self, device: str | torch.device) -> Supernet:
        self.model.to(device)
        self.model.set_sub_network(self.active)  # index tensors follow lazily; clear stale caches
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        cfg = self.subnas_config
        return (f"Supernet({self.source or cfg.family!r}: {cfg.family}, {cfg.num_hidden_layers} layers, "
                f"hidden {cfg.hidden_size}, {self.count_parameters():,} parameters)")


@contextlib.contextmanager
def weights_errors(name: str) -> Iterator[None]:
    """Turn a weights file that fails to load (e.g. a corrupt file in the Hugging Face cache, which
    `subnas._io.check_model_files` does not see) into `CorruptCheckpointError` naming the model."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        raise CorruptCheckpointError(
            f"the weights of {name!r} cannot be read ({exc}); the file is truncated or corrupt: re-export the "
            "model, or download it again (delete its folder in the Hugging Face cache first)") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(name: str) -> Any:
    """The tokenizer beside the model, or ``None`` if there is none (random-weight test models).

    A local folder that has tokenizer files which fail to load is an error naming them: treating
    it as "no tokenizer" would blame the wrong thing later.
    """
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # tokenizers raises its own Exception types for a corrupt file
        present = [f for f in TOKENIZER_FILES if (Path(name) / f).is_file()]
        if present:
            raise CorruptCheckpointError(
                f"the tokenizer in {name!r} ({', '.join(present)}) cannot be loaded ({type(exc).__name__}: {exc}); "
                "if the files are truncated or corrupt, save the tokenizer there again or copy the model "
                "folder again") from None
        if isinstance(exc, (OSError, ValueError, TypeError)):
            return None
        raise
