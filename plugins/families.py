"""Built-in plugin: the model families subnas ships (`subnas.families`, one file per family).

Registered through the same ``register_model_families`` hook a third-party family uses, so a
family from a plugin and a built-in one are looked up, listed and checked for duplicates alike.
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl


@hookimpl
def register_model_families(register: Any) -> None:
    from subnas.families import gemma3, gpt2, gpt_neox, llama, qwen

    for module in (llama, gpt_neox, gpt2, gemma3, qwen):
        for family in module.FAMILIES:
            register(family)
