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
