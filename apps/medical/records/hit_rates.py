"""How well neighbours retrieved by the similar-case index agree with a label (a specialty).

Given each item's nearest other items (``SimilarCaseIndex.neighbours_all``, leave-one-out), the
share of items with at least one same-label neighbour among the first ``k``: with MTSamples'
specialties and ``k = 3``, the "top-3 specialty hit rate" that ``evaluate.specialty_eval`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trillium.medical.records.index_files import RetrievalError
from trillium.medical.records.retrieval import check_k

__all__ = ["hit_rate_by_label", "top_k_label_hit_rate"]


def _label_hits(neighbour_idx: np.ndarray, labels: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: does any of its first k neighbours share its label; plus the item labels."""
    k = check_k(k)
    idx = np.asarray(neighbour_idx)
    lab = np.asarray(list(labels), dtype=object)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise RetrievalError(f"neighbour_idx must be a 2-D integer array, got {idx.dtype} {idx.shape}")
    n = idx.shape[0]
    if len(lab) != n:
        raise RetrievalError(f"length mismatch: {n} neighbour rows but {len(lab)} labels")
    if k > idx.shape[1]:
        raise RetrievalError(f"k={k} but neighbour_idx has only {idx.shape[1]} columns")
    if n == 0:
        raise RetrievalError("no items to evaluate")
    if idx.min() < 0 or idx.max() >= n:
        raise RetrievalError(f"neighbour indices must lie in [0, {n - 1}]")
    _, codes = np.unique(lab.astype(str), return_inverse=True)
    hits = (codes[idx[:, :k]] == codes[:, None]).any(axis=1)
    return hits, lab


def top_k_label_hit_rate(neighbour_idx: np.ndarray, labels: Sequence[str], k: int = 3) -> float:
    """Share of items whose first ``k`` neighbours include one with the same label.

    With leave-one-out neighbours and specialty labels this is MTSamples' "top-3 specialty hit rate".
    """
    hits, _ = _label_hits(neighbour_idx, labels, k)
    return float(hits.mean())


def hit_rate_by_label(neighbour_idx: np.ndarray, labels: Sequence[str], k: int = 3) -> dict[str, float]:
    """``top_k_label_hit_rate`` per label (sorted by label), to see which specialties retrieve poorly."""
    hits, lab = _label_hits(neighbour_idx, labels, k)
    lab_s = lab.astype(str)
    return {str(u): float(hits[lab_s == u].mean()) for u in np.unique(lab_s)}
