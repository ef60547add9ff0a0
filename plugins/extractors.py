"""Built-in extractor plugin ``transformers``: `subnas.extract` (stock architecture when it can
express the sub-network, else subnas' flexible format; safetensors + config + tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from subnas.hookspecs import hookimpl
from subnas.interfaces import Extractor
from subnas.subnet import SubNetwork


class TransformersExtractor(Extractor):
    """Args: format: ``"auto"`` | ``"stock"`` | ``"subnas"``; overwrite: replace a non-empty folder;
    pad: allow an exact stock export by zero-padding layer-wise widths (see `subnas.extract`)."""

    def __init__(self, *, format: str = "auto", overwrite: bool = False, pad: bool = True) -> None:
        self.format, self.overwrite, self.pad = format, overwrite, pad

    def extract(self, supernet: Any, subnet: SubNetwork, out_dir: str | os.PathLike[str]) -> Path:
        from subnas.export._extract import extract

        result = extract(supernet, subnet, out_dir, format=self.format, overwrite=self.overwrite, pad=self.pad)
        return Path(result.path)


@hookimpl
def register_extractors(register: Any) -> None:
    register("transformers", TransformersExtractor)
