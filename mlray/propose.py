"""Candidate labels for annotating a new ImageNet variant: the classes an ensemble of stored predictions ranks
highest for each image, for annotators to confirm or reject (``mlray propose``, see docs/propose.md).

The ranking (:func:`ensemble_candidates`): for an image, the score of class ``c`` is the mean over the chosen
models of the probability each model stored for ``c``; a class outside a model's stored top-K counts 0 for that
model. The candidates are the classes in at least one model's stored top-K, by score (highest first), ties by
lower class index; the first ``top`` of them are kept.

The candidates go out as CSV (:func:`write_candidates_csv`) and as Label Studio pre-annotated tasks
(:func:`write_label_studio`, with the labeling config of :func:`label_studio_config`); the labels annotators
settle on come back through the ``label-studio-json`` label source (:mod:`mlray.labels.readers`).
:func:`recall_at` says how many of a dataset's valid labels the first N candidates hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import MlrayError
from .labels import NUM_CLASSES, Vocabulary, imagenet_vocabulary
from .store import PREDICTIONS_DIR, list_partitions, read_store

if TYPE_CHECKING:
    from .config import RunConfig

CANDIDATE_COLUMNS = ("image_id", "rank", "class_index", "wnid", "name", "score")
"""The columns of a candidates table, in order (also the header of the CSV)."""

LABEL_STUDIO_SUFFIX = ".label-studio.json"
"""What replaces ``.csv`` in the candidates file's name to name the Label Studio tasks file."""

FROM_NAME = "label"
"""The ``name`` of the ``<Choices>`` tag in the labeling config (``from_name`` of a result)."""

TO_NAME = "image"
"""The ``name`` of the ``<Image>`` tag in the labeling config (``to_name`` of a result)."""


def ensemble_candidates(
    store_or_table: str | os.PathLike | pa.Table,
    dataset: str,
    models: Sequence[str] | None = None,
    top: int = 20,
) -> pd.DataFrame:
    """The first ``top`` candidate labels of every image of ``dataset``, ranked by the mean probability across
    ``models`` (None = every model stored for ``dataset``, sorted by name).

    ``store_or_table`` is a prediction store root (read with :func:`mlray.store.read_store`) or a prediction
    table (:data:`mlray.store.PREDICTIONS_SCHEMA`). The score of class ``c`` on an image is the float64 mean,
    over the models, of the float32 probability each stored for ``c``, 0 where ``c`` is outside a model's stored
    top-K. The candidates of an image are the classes in at least one model's stored top-K, by score
    (highest first), ties by lower class index; an image has ``min(top, number of such classes)`` rows.

    Returns a DataFrame with :data:`CANDIDATE_COLUMNS`: ``image_id`` (str), ``rank`` (int, 1 = best),
    ``class_index`` (int), ``wnid`` and ``name`` (the ImageNet-1k vocabulary), ``score`` (float); images
    sorted by id, then by rank.

    Raises :class:`MlrayError` (one line) when ``top`` < 1, when the dataset or a named model has no stored
    predictions, a model is named twice, a model stored no probabilities (an argmax-only import: it cannot be
    ensembled by mean probability), or the models did not all predict the same images.
    """
    if top < 1:
        raise MlrayError(f"top N must be at least 1 (got {top})")
    shown = _shown(store_or_table)
    chosen = ensemble_models(store_or_table, dataset, models)
    if isinstance(store_or_table, pa.Table):
        table = store_or_table.filter(pc.equal(store_or_table.column("dataset"), pa.scalar(dataset)))
    else:
        table = read_store(store_or_table, [dataset], set(chosen))
    image_ids, keys, probs = _model_columns(shown, table, dataset, chosen)
    unique, inverse = np.unique(keys, return_inverse=True)
    scores = np.bincount(inverse, weights=probs, minlength=len(unique)) / len(chosen)
    image_pos, classes = unique // NUM_CLASSES, unique % NUM_CLASSES
    order = np.lexsort((classes, -scores, image_pos))
    image_pos, classes, scores = image_pos[order], classes[order], scores[order]
    starts = np.searchsorted(image_pos, image_pos, side="left")
    ranks = np.arange(len(image_pos)) - starts + 1
    keep = ranks <= top
    image_pos, classes, scores, ranks = image_pos[keep], classes[keep], scores[keep], ranks[keep]
    vocab = imagenet_vocabulary()
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_ids, dtype=object)[image_pos],
            "rank": ranks.astype(np.int64),
            "class_index": classes.astype(np.int64),
            "wnid": vocab.wnid_array()[classes],
            "name": vocab.name_array()[classes],
            "score": scores.astype(np.float64),
        },
        columns=list(CANDIDATE_COLUMNS),
    )


def prediction_store(path: str | os.PathLike) -> Path:
    """The prediction store a path names: ``PATH/predictions`` for an evaluate output folder, else ``PATH``
    itself (a store root). Raises :class:`MlrayError` when ``PATH`` is not a folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise MlrayError(f"{folder}: no such folder (an evaluate output folder or its predictions folder)")
    inner = folder / PREDICTIONS_DIR
    return inner if inner.is_dir() else folder


def _shown(store_or_table: str | os.PathLike | pa.Table) -> str:
    """How a store root or a prediction table is named in error messages."""
    return "the prediction table" if isinstance(store_or_table, pa.Table) else os.fspath(store_or_table)


def ensemble_models(
    store_or_table: str | os.PathLike | pa.Table, dataset: str, models: Sequence[str] | None = None
) -> list[str]:
    """The models :func:`ensemble_candidates` ensembles on ``dataset``: ``models`` in the order given, checked
    to be stored for it and named once, or (None) every model stored for it, sorted by name. Only the store's
    folders are listed (nothing is read); raises :class:`MlrayError` (one line listing what is stored)."""
    shown = _shown(store_or_table)
    if isinstance(store_or_table, pa.Table):
        pairs = set(zip(store_or_table.column("dataset").to_pylist(), store_or_table.column("model").to_pylist()))
    else:
        pairs = {(d, m) for d, m, _ in list_partitions(store_or_table)}
    stored = sorted(m for d, m in pairs if d == dataset)
    if not stored:
        names = sorted({d for d, _ in pairs})
        have = f"stored datasets: {', '.join(names)}" if names else "nothing stored"
        raise MlrayError(f"{shown}: no predictions of dataset {dataset!r} ({have})")
    if models is None:
        return stored
    chosen = list(models)
    if not chosen:
        raise MlrayError("no models to ensemble: name at least one")
    for i, model in enumerate(chosen):
        if model in chosen[:i]:
            raise MlrayError(f"model {model!r} is named twice")
        if model not in stored:
            raise MlrayError(
                f"{shown}: no predictions of model {model!r} on dataset {dataset!r} "
                f"(stored models: {', '.join(stored)})"
            )
    return chosen


def _model_columns(
    shown: str, table: pa.Table, dataset: str, models: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The image ids (sorted) every model predicted, and for every stored (model, image, class) probability its
    key ``image position * 1000 + class`` and the probability (float64 of the stored float32), models in order."""
    per_model: list[tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]] = []
    for model in models:
        rows = table.filter(pc.equal(table.column("model"), pa.scalar(model)))
        prob_col = rows.column("topk_prob")
        if prob_col.null_count:
            raise MlrayError(
                f"{shown}: model {model!r} stored no probabilities on dataset {dataset!r} (top-k classes only, "
                f"{prob_col.null_count:,} image(s)): it cannot be ensembled by mean probability; leave it out of "
                "--models"
            )
        idx = rows.column("topk_idx").combine_chunks()
        prob = prob_col.combine_chunks()
        ids = rows.column("image_id").to_pylist()
        lengths = pc.list_value_length(idx).to_numpy(zero_copy_only=False).astype(np.int64)
        classes = pc.list_flatten(idx).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(prob).to_numpy(zero_copy_only=False).astype(np.float64)
        per_model.append((model, ids, lengths, classes, values))
    everyone = sorted(set().union(*(ids for _, ids, _, _, _ in per_model)))
    for model, ids, _, _, _ in per_model:
        missing = sorted(set(everyone) - set(ids))
        if missing:
            raise MlrayError(
                f"{shown}: model {model!r} has no prediction for {len(missing):,} of the {len(everyone):,} images "
                f"of dataset {dataset!r} that the other models predicted (first: {missing[0]!r}); ensemble models "
                "that predicted the same images"
            )
    position = {image_id: i for i, image_id in enumerate(everyone)}
    keys, probs = [], []
    for _, ids, lengths, classes, values in per_model:
        rows_pos = np.fromiter((position[i] for i in ids), dtype=np.int64, count=len(ids))
        keys.append(np.repeat(rows_pos, lengths) * NUM_CLASSES + classes)
        probs.append(values)
    if not keys:
        return everyone, np.zeros(0, np.int64), np.zeros(0, np.float64)
    return everyone, np.concatenate(keys), np.concatenate(probs)


def choice_value(wnid: str, name: str) -> str:
    """How a class is written in Label Studio (a ``<Choice>`` value, a result's choice): ``"wnid: name"``.

    >>> choice_value("n01440764", "tench")
    'n01440764: tench'
    """
    return f"{wnid}: {name}"


def write_candidates_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a candidates table (:func:`ensemble_candidates`) to ``path`` as CSV with the header
    ``image_id,rank,class_index,wnid,name,score`` (scores written so that they read back exactly); returns
    the path."""
    target = Path(path)
    df.loc[:, list(CANDIDATE_COLUMNS)].to_csv(target, index=False)
    return target


def label_studio_path(csv_path: str | os.PathLike) -> Path:
    """Where the Label Studio tasks of a candidates CSV go: beside it, ``.csv`` replaced by
    :data:`LABEL_STUDIO_SUFFIX`.

    >>> label_studio_path("out/v3.csv").as_posix()
    'out/v3.label-studio.json'
    """
    path = Path(csv_path)
    return path.with_name(path.stem + LABEL_STUDIO_SUFFIX) if path.suffix else path.with_name(path.name + ".json")


def label_studio_tasks(
    df: pd.DataFrame, image_urls: Mapping[str, str] | None = None, models: Sequence[str] = ()
) -> list[dict]:
    """The Label Studio pre-annotated tasks of a candidates table: one task per image (in table order)::

        {"data": {"image": <image_urls[image_id], else the image id>, "image_id": <image id>},
         "predictions": [{"model_version": "mlray-ensemble:<models, comma-separated>", "score": <rank-1 score>,
                          "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                      "value": {"choices": ["<wnid>: <name>", ...]}}]}]}

    the choices being the image's candidates in rank order. ``data.image_id`` is what the ``label-studio-json``
    label source reads the image id from when the export comes back.
    """
    urls = image_urls or {}
    version = f"mlray-ensemble:{','.join(models)}"
    tasks: list[dict] = []
    for image_id, rows in _by_image(df):
        choices = [choice_value(w, n) for w, n in zip(rows["wnid"], rows["name"])]
        result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": choices}}
        tasks.append(
            {
                "data": {"image": urls.get(image_id, image_id), "image_id": image_id},
                "predictions": [{"model_version": version, "score": float(rows["score"][0]), "result": [result]}],
            }
        )
    return tasks


def _by_image(df: pd.DataFrame) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The rows of a candidates table per image (images in order of first appearance), each image's columns as
    arrays in rank order."""
    if df.empty:
        return []
    codes, uniques = pd.factorize(df["image_id"])
    order = np.lexsort((df["rank"].to_numpy(), codes))
    columns = {c: df[c].to_numpy()[order] for c in df.columns}
    codes = codes[order]
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(order)]
    return [(str(uniques[codes[a]]), {c: v[a:b] for c, v in columns.items()}) for a, b in zip(starts, stops)]


def write_label_studio(
    df: pd.DataFrame,
    path: str | os.PathLike,
    image_urls: Mapping[str, str] | None = None,
    models: Sequence[str] = (),
) -> Path:
    """Write the Label Studio tasks of a candidates table (:func:`label_studio_tasks`) to ``path`` as one JSON
    list (UTF-8), importable in a project with the labeling config of :func:`label_studio_config`; returns the
    path."""
    target = Path(path)
    target.write_text(json.dumps(label_studio_tasks(df, image_urls, models), indent=1, ensure_ascii=False) + "\n")
    return target


def label_studio_config(vocab: Vocabulary | None = None) -> str:
    """The Label Studio labeling config the tasks of :func:`write_label_studio` need: the image, and a
    multiple-choice ``<Choices name="label" toName="image">`` with one ``<Choice>`` per ImageNet-1k class
    (value ``"wnid: name"``, class index order), so that annotators can also add a class no model proposed.

    >>> print(label_studio_config(Vocabulary(("n01440764",), ("tench",))))
    <View>
      <Image name="image" value="$image"/>
      <Choices name="label" toName="image" choice="multiple" showInline="false">
        <Choice value="n01440764: tench"/>
      </Choices>
    </View>
    """
    vocab = vocab or imagenet_vocabulary()
    lines = ["<View>", f'  <Image name="{TO_NAME}" value="$image"/>']
    lines.append(f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false">')
    lines += [f"    <Choice value={quoteattr(choice_value(w, n))}/>" for w, n in zip(vocab.wnids, vocab.names)]
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines)


def recall_at(
    df_or_ranks: pd.DataFrame | Mapping[str, Sequence[int]],
    valid_sets: Mapping[str, Iterable[int] | None],
    ns: Sequence[int] = (1, 5, 10, 20),
) -> dict[int, float]:
    """The share of valid labels found among the first N candidates, for each N in ``ns``, pooled over images
    (micro): found valid labels / all valid labels, over the images of ``valid_sets`` that are labelled (a
    ``None`` set = not annotated, left out). An image without candidates finds none; NaN when there is no
    valid label at all.

    ``df_or_ranks`` is a candidates table (:func:`ensemble_candidates`: ``image_id``, ``rank``,
    ``class_index``) or ``{image_id: [class indices, best first]}``.

    >>> ranks = {"a": [3, 1, 2], "b": [5, 6, 7]}
    >>> recall_at(ranks, {"a": [1, 2], "b": [7], "c": [9], "d": None}, ns=(1, 2, 3))
    {1: 0.0, 2: 0.25, 3: 0.75}
    """
    if isinstance(df_or_ranks, pd.DataFrame):
        ranks = {k: [int(c) for c in rows["class_index"]] for k, rows in _by_image(df_or_ranks)}
    else:
        ranks = {str(k): [int(c) for c in v] for k, v in df_or_ranks.items()}
    found = dict.fromkeys(ns, 0)
    total = 0
    for image_id, valid in valid_sets.items():
        if valid is None:
            continue
        wanted = {int(c) for c in valid}
        total += len(wanted)
        ranked = ranks.get(str(image_id), [])
        for n in ns:
            found[n] += len(wanted.intersection(ranked[:n]))
    return {n: found[n] / total if total else float("nan") for n in ns}


def image_locations(config: RunConfig, dataset: str) -> dict[str, str]:
    """``{image id: where the image is}`` for a dataset of the run ``config`` whose ``images:`` are files (a
    folder or manifest layout): the local path or ``scheme://`` URI mlray reads. Empty when the dataset has no
    ``images:``, or when its images are rows of Parquet shards or members of tar files (no file to show)."""
    from .datasets import plan_images
    from .images.plan import shard_items

    entry = config.dataset(dataset)
    if entry.images is None:
        return {}
    plan = plan_images(config, entry)
    return {image_id: where for shard in plan.shards if shard.file is None for image_id, where in shard_items(shard)}
