"""Built-in plugin: the paper's four search spaces (§2.1), coarse/fine-grained × uniform/layer-wise.

All four are `subnas.spaces.StructuredSearchSpace` with its two switches set; this module only
names them (and declares that they take an importance order, `SearchSpace.takes_order`).
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl
from subnas.spaces._structured import StructuredSearchSpace


class CoarseUniformSpace(StructuredSearchSpace):
    """First-n units, one (h, g, hs, d) for every layer: N = L*E*H*Hs*D for MHA (paper §2.1)."""

    name = "coarse-uniform"
    fine, layerwise = False, False
    takes_order = True


class CoarseLayerwiseSpace(StructuredSearchSpace):
    """First-n units, each layer its own (h, g, hs, d): N ~ E*(H*Hs*D)^L (paper §2.1)."""

    name = "coarse-layerwise"
    fine, layerwise = False, True
    takes_order = True


class FineUniformSpace(StructuredSearchSpace):
    """Any subset of layers, channels, groups, heads, head dims and neurons; one set for all layers."""

    name = "fine-uniform"
    fine, layerwise = True, False
    takes_order = True


class FineLayerwiseSpace(StructuredSearchSpace):
    """Any subsets, chosen independently in every kept layer: the largest space (paper §2.1)."""

    name = "fine-layerwise"
    fine, layerwise = True, True
    takes_order = True


SPACES = (CoarseUniformSpace, CoarseLayerwiseSpace, FineUniformSpace, FineLayerwiseSpace)


@hookimpl
def register_search_spaces(register: Any) -> None:
    for space in SPACES:
        register(space.name, space)
