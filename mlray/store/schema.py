"""The schemas of the prediction store and of the errors store, and their key columns.

A prediction table (docs/design.md, "Canonical tables") has one row per (dataset, model, image)::

    dataset (str), model (str), image_id (str), topk_idx (list<int16>, best first),
    topk_prob (list<float32>, as long as topk_idx; null = probabilities unknown, e.g. an argmax-only import)

plus an optional ``logits`` column (list<float16>, the full 1,000 outputs) behind a flag.

An errors table has one row per (dataset, model, image) that could not be predicted::

    dataset (str), model (str), image_id (str), path (str: where the image was read), stage (str), error (str)
"""

from __future__ import annotations

import pyarrow as pa

DEFAULT_K = 20
"""How many ranked classes inference keeps per image unless the config says otherwise."""

CLASS_LIST = pa.list_(pa.int16())
PROB_LIST = pa.list_(pa.float32())
LOGITS_FIELD = pa.field("logits", pa.list_(pa.float16()))

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("image_id", pa.string()),
        ("topk_idx", CLASS_LIST),
        ("topk_prob", PROB_LIST),  # null = probabilities unknown
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)

KEY_COLUMNS = ("dataset", "model", "image_id")
"""The columns that identify a row of either store; no key appears twice in a store."""

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
"""File suffixes read as Parquet (anything else is read as CSV)."""
