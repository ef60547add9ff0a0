"""Built-in extractor plugin ``transformers``: `subnas.extract` (stock architecture when it can
express the sub-network, else subnas' flexible format; safetensors + config + tokenizer)."""

from __future__ import annotations

import os
from typing import Any

from subnas.export import extract
from subnas.hookspecs import hookimpl
from subnas.interfaces import ExtractResult, Extractor
from subnas.subnet import SubNetwork


class TransformersExtractor(Extractor):
    """Args: format: ``"auto"`` | ``"stock"`` | ``"subnas"``; pad: allow an exact stock export by
    zero-padding layer-wise widths (see `subnas.extract`)."""

    def __init__(self, *, format: str = "auto", pad: bool = True) -> None:
        self.format, self.pad = format, pad

    def extract(self, supernet: Any, subnet: SubNetwork | None, out_dir: str | os.PathLike[str], *,
                overwrite: bool = False) -> ExtractResult:
        return extract(supernet, subnet, out_dir, format=self.format, overwrite=overwrite,  # type: ignore[arg-type]
                       pad=self.pad)


@hookimpl
def register_extractors(register: Any) -> None:
    register("transformers", TransformersExtractor)
