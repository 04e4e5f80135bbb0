"""What each model's work is expected to cost: its images per second on one slot, and where that figure comes from.

In order of preference:

1. ``store``: the steady images/s this store's earlier runs measured for the model on the same kind of slot (GPU
   or CPU), as ``OUT/run_manifest.json`` records it (:func:`stored_rates`);
2. ``table``: the bundled table derived from timm's published benchmark (``data/timm-infer-amp-4090.csv``: RTX
   4090, AMP, model only, Apache-2.0; ``data/SOURCE.md`` names the repository, commit and file), the row of the
   model's architecture at its input size, else its nearest size scaled by the pixel count (:func:`table_rate`);
3. ``assumed``: the table's median, for an architecture the table lacks.

Only the ratios between models matter to the schedule; the absolute figures matter to ``mlray plan``'s estimate
(the table's are model-only figures of one 4090: a real run adds reading and decoding, and a CPU slot is far
slower, which is why a store's own measurements come first).
"""

from __future__ import annotations

import csv
import functools
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TABLE_FILE = "data/timm-infer-amp-4090.csv"
TABLE_NAME = "timm benchmark, RTX 4090 AMP"
"""How estimates from the bundled table are attributed."""


@dataclass(frozen=True)
class Rate:
    """A model's expected images per second on one slot, its ``source`` (``store``, ``table`` or ``assumed``) and
    a few words on where exactly it comes from."""

    images_per_second: float
    source: str
    detail: str

    def seconds(self, images: int) -> float:
        """Expected seconds for ``images`` images on one slot."""
        return images / self.images_per_second


@functools.lru_cache(maxsize=1)
def cost_table() -> dict[str, tuple[tuple[int, float, int], ...]]:
    """The bundled table: architecture -> ``(input size, images/s, batch size)`` rows, smallest size first."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    rows: dict[str, list[tuple[int, float, int]]] = {}
    for r in csv.DictReader(text.splitlines()):
        rows.setdefault(r["model"], []).append(
            (int(r["img_size"]), float(r["images_per_second"]), int(r["batch_size"]))
        )
    return {arch: tuple(sorted(v)) for arch, v in rows.items()}


@functools.lru_cache(maxsize=1)
def table_median() -> float:
    """The median images/s over every row of the bundled table (the rate assumed for an architecture it lacks)."""
    return float(statistics.median(rate for rows in cost_table().values() for _, rate, _ in rows))


def table_rate(name: str, input_size: int) -> Rate:
    """The bundled table's rate of model ``name`` (``arch.tag`` or ``arch``) at ``input_size`` pixels: the exact
    row, else the nearest size's rate scaled by ``(its size / input_size)^2``, else the table's median."""
    arch = name.partition(".")[0]
    rows = cost_table().get(arch)
    if not rows:
        return Rate(table_median(), "assumed", f"median of the {TABLE_NAME} table (no row for {arch})")
    size, rate, batch = min(rows, key=lambda r: (abs(r[0] - input_size), r[0]))
    if size == input_size:
        return Rate(rate, "table", f"{TABLE_NAME}, {size} px, batch {batch}")
    scaled = rate * (size / input_size) ** 2
    return Rate(scaled, "table", f"{TABLE_NAME}, {size} px scaled to {input_size} px, batch {batch}")


def stored_rates(out: str | Path, kind: str) -> dict[str, float]:
    """The steady images/s per model that the run manifest in ``out`` records as measured on ``kind`` slots
    (``gpu`` or ``cpu``); empty when there is no manifest or it predates the record of the slot kind."""
    path = Path(out) / "run_manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    rates: dict[str, float] = {}
    for name, info in (manifest.get("models") or {}).items():
        rate = info.get("steady_images_per_second") if isinstance(info, dict) else None
        if isinstance(rate, (int, float)) and rate > 0 and info.get("rate_measured_on") == kind:
            rates[str(name)] = float(rate)
    return rates


def model_rate(name: str, input_size: int, stored: Mapping[str, float]) -> Rate:
    """The rate of model ``name`` at ``input_size`` pixels: the store's measurement if ``stored`` has one, else the
    bundled table's (:func:`table_rate`)."""
    if name in stored:
        return Rate(stored[name], "store", "measured by an earlier run into this store")
    return table_rate(name, input_size)
