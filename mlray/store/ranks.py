"""Scores -> ranks: the softmax and the top-k lists the store keeps (best first, ties to the lower class)."""

from __future__ import annotations

import numpy as np

from ..errors import MlrayError


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    float64 input stays float64; any other input is computed and returned as float32. ``-inf`` logits get
    probability 0; a row of ``-inf`` only, or any NaN, gives NaN.
    """
    x = np.asarray(logits)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    out: np.ndarray = e / np.sum(e, axis=axis, keepdims=True)
    return out


def topk_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes of each row of ``scores`` (n, C), best first, ties broken by the lower class index.

    Scores are used as given (probabilities or logits; apply :func:`softmax` first for probabilities). Returns
    ``(idx int16 (n, k), score float32 (n, k))``; the order is descending score, and among equal scores ascending
    class index (a stable sort of the row), so the result is deterministic. Runs in O(n * C): a partition finds
    the k-th largest value, and only the winners are sorted. NaN scores are an error.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise MlrayError(f"topk_from_scores: scores must be 2-D (n, classes), got shape {s.shape}")
    n, c = s.shape
    if not (1 <= int(k) <= c):
        raise MlrayError(f"topk_from_scores: k must be in 1..{c} (number of classes), got {k}")
    if c > np.iinfo(np.int16).max:
        raise MlrayError(f"topk_from_scores: {c} classes do not fit int16 indices")
    k = int(k)
    if n == 0:
        return np.zeros((0, k), np.int16), np.zeros((0, k), np.float32)
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise MlrayError("topk_from_scores: scores contain NaN")
    thr = np.partition(s, c - k, axis=1)[:, c - k : c - k + 1]  # k-th largest value of each row
    above = s > thr
    equal = s == thr
    room = k - above.sum(axis=1, keepdims=True)  # how many tied-at-threshold entries fit, lowest index first
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(n, k)  # ascending class index within each row
    vals = np.take_along_axis(s, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # descending score; stable keeps lower index first on ties
    idx = np.take_along_axis(cols, order, axis=1).astype(np.int16)
    return idx, np.take_along_axis(vals, order, axis=1).astype(np.float32)


def topk_with_classes(scores: np.ndarray, k: int, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes of each row of ``scores`` (n, C) *and* every class of ``classes``, each once, best first
    (ties to the lower class index, as :func:`topk_from_scores`): what the store keeps for a dataset that covers
    only ``classes`` (:mod:`mlray.labels.classes`), so its ranking restricted to those classes is exact. Rows
    are padded with -1 / NaN to ``k + len(classes)`` (the store keeps each row's own length).

    >>> idx, p = topk_with_classes(np.array([[0.1, 0.5, 0.3, 0.1]]), 1, np.array([0, 2]))
    >>> idx.tolist(), p.tolist()
    ([[1, 2, 0]], [[0.5, 0.30000001192092896, 0.10000000149011612]])
    """
    s = np.asarray(scores)
    n, c = s.shape
    topk_from_scores(s[:0], k)  # the same checks on k and the shape
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise MlrayError("topk_with_classes: scores contain NaN")
    order = np.argsort(-s, axis=1, kind="stable")  # descending score, lower index first on ties
    member = np.zeros(c, dtype=bool)
    member[np.asarray(classes, dtype=np.int64)] = True
    keep = member[order]
    keep[:, :k] = True
    width = k + int(member.sum())
    pos = np.cumsum(keep, axis=1) - 1
    rows, cols = np.nonzero(keep)
    idx = np.full((n, width), -1, dtype=np.int16)
    out = np.full((n, width), np.nan, dtype=np.float32)
    idx[rows, pos[rows, cols]] = order[rows, cols]
    out[rows, pos[rows, cols]] = s[rows, order[rows, cols]]
    return idx, out
