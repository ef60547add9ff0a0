"""Search spaces: the paper's four spaces (§2.1), their per-dimension choices and the unit order.

- `StructuredSearchSpace` (``_structured``): the four coarse/fine × uniform/layer-wise spaces as
  one implementation with two switches; `resolve_order` picks the unit order.
- ``_choices``: what a user may write per dimension (`parse_choices`), and `SearchSpaceError`.
- ``_ordering``: `UnitOrder`, every unit ranked so that "the first n" means "the n most important".
- ``_arch``: how a structured space holds a candidate internally and turns it into a `SubNetwork`.
- ``_moves``: the moves a structured space offers a mutation (local steps, layer and unit swaps
  along the importance order) and its crossover; which move a parent gets is the sampler's
  operator (`subnas.samplers.WeightedMoves`).
"""

from subnas.spaces._choices import DIMENSIONS, Choices, ModelShape, SearchSpaceError, parse_choices
from subnas.spaces._ordering import LAYER_CRITERIA, UnitOrder, importance_order, save_order
from subnas.spaces._structured import ORDERS, PER_LAYER_DIMS, StructuredSearchSpace, resolve_order

__all__ = ["DIMENSIONS", "LAYER_CRITERIA", "ORDERS", "PER_LAYER_DIMS", "Choices", "ModelShape", "SearchSpaceError",
           "StructuredSearchSpace", "UnitOrder", "importance_order", "parse_choices", "resolve_order", "save_order"]
