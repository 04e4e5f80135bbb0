"""The ImageNet-1k class vocabulary: index <-> wnid <-> readable name.

Read from the synset files that timm ships inside its wheel (``timm/data/_info/``): ``imagenet_synsets.txt``
(1,000 wnids in index order = sorted wnids, 0 = n01440764 tench) and ``imagenet_synset_to_lemma.txt``
(wnid -> comma-separated names). The files are located without importing timm (which would import torch), so
label work stays light.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MlrayError

NUM_CLASSES = 1000


def timm_info_dir() -> Path:
    """The folder ``timm/data/_info`` of the installed timm package (found without importing timm)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise MlrayError("timm is not installed: it provides the ImageNet synset lists and the ReaL labels")
    for root in spec.submodule_search_locations:
        info = Path(root) / "data" / "_info"
        if (info / "imagenet_synsets.txt").is_file():
            return info
    raise MlrayError("the installed timm has no data/_info/imagenet_synsets.txt; reinstall timm >= 1.0")


@dataclass(frozen=True)
class Vocabulary:
    """ImageNet-1k classes: ``wnids[i]`` and ``names[i]`` for class index ``i``."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.wnids)

    @functools.cached_property
    def index_of(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    def index(self, wnid: str, where: str) -> int:
        """Class index of ``wnid``; ``where`` names the file/entry for the error message."""
        try:
            return self.index_of[wnid]
        except KeyError:
            raise MlrayError(f"{where}: unknown wnid {wnid!r} (not one of the 1,000 ImageNet-1k synsets)") from None

    def wnid_array(self) -> np.ndarray:
        return np.asarray(self.wnids, dtype=object)

    def name_array(self) -> np.ndarray:
        return np.asarray(self.names, dtype=object)


@functools.lru_cache(maxsize=1)
def imagenet_vocabulary() -> Vocabulary:
    """The ImageNet-1k vocabulary from timm's packaged synset files."""
    info = timm_info_dir()
    wnids = tuple(line.strip() for line in (info / "imagenet_synsets.txt").read_text().splitlines() if line.strip())
    if len(wnids) != NUM_CLASSES:
        raise MlrayError(f"{info / 'imagenet_synsets.txt'}: expected 1000 wnids, found {len(wnids)}")
    lemmas: dict[str, str] = {}
    lemma_file = info / "imagenet_synset_to_lemma.txt"
    if lemma_file.is_file():
        for line in lemma_file.read_text().splitlines():
            wnid, _, lemma = line.partition("\t")
            lemmas[wnid.strip()] = lemma.strip()
    names = tuple(lemmas.get(w, w).split(",")[0].strip() for w in wnids)
    return Vocabulary(wnids=wnids, names=names)
