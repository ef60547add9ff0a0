"""Built-in plugin: the paper's four search spaces (§2.1), coarse/fine-grained × uniform/layer-wise.

All four are `subnas.spaces.StructuredSearchSpace` with its two switches set; this module only
names them (each takes an importance order: `StructuredSearchSpace.takes_order`).
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl
from subnas.spaces import StructuredSearchSpace


class CoarseUniformSpace(StructuredSearchSpace):
    """First-n units, one (h, g, hs, d) for every layer: N = L*E*H*Hs*D for MHA (paper §2.1)."""

    name = "coarse-uniform"
    fine, layerwise = False, False


class CoarseLayerwiseSpace(StructuredSearchSpace):
    """First-n units, each layer its own (h, g, hs, d): N ~ E*(H*Hs*D)^L (paper §2.1)."""

    name = "coarse-layerwise"
    fine, layerwise = False, True


class FineUniformSpace(StructuredSearchSpace):
    """The same sizes (h, g, hs, d) in every layer, each layer its own index sets of them; any layers,
    one set of embedding channels (the residual stream is shared) (paper §2.1)."""

    name = "fine-uniform"
    fine, layerwise = True, False


class FineLayerwiseSpace(StructuredSearchSpace):
    """Any subsets, chosen independently in every kept layer: the largest space (paper §2.1)."""

    name = "fine-layerwise"
    fine, layerwise = True, True


SPACES = (CoarseUniformSpace, CoarseLayerwiseSpace, FineUniformSpace, FineLayerwiseSpace)


@hookimpl
def register_search_spaces(register: Any) -> None:
    for space in SPACES:
        register(space.name, space)
