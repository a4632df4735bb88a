"""Analyses of supermask networks (study R4): mask overlap against chance, similarity of
tasks' batch-norm statistics, per-task classification scores and time per task.

Overlap is the Jaccard index |A & B| / |A | B| of two binary masks. Two independent masks
with densities p1 and p2 overlap by about ``p1 p2 / (p1 + p2 - p1 p2)`` by chance (1/3 for
two masks of density 0.5, study R4's reported "substantial overlap"), so every overlap is
reported beside that chance level and a permutation-test p-value: under the null hypothesis
the positions of B's kept weights are a random permutation, the intersection size is
hypergeometric and the test is exact (``method="exact"``); ``monte-carlo`` permutes instead.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch


# ---------------------------------------------------------------------------- overlap
def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| of two boolean masks of the same shape (1 when both are empty)."""
    a, b = a.bool().flatten(), b.bool().flatten()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def chance_jaccard(p1: float, p2: float) -> float:
    """The Jaccard index two independent masks of densities p1 and p2 have by chance."""
    denom = p1 + p2 - p1 * p2
    return 0.0 if denom == 0 else p1 * p2 / denom


def _tail_p(lower: float, upper: float, alternative: str) -> float:
    """p-value from P(X <= observed) and P(X >= observed)."""
    if alternative == "greater":
        return upper
    if alternative == "less":
        return lower
    return min(1.0, 2.0 * min(lower, upper))


def jaccard_p_value(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
    method: Literal["exact", "monte-carlo"] = "exact",
    n_permutations: int = 1000,
    generator: torch.Generator | None = None,
) -> float:
    """Permutation-test p-value of the overlap of ``a`` and ``b`` against random placement.

    The Jaccard index grows with the intersection size when the densities are fixed, so the
    test is on the intersection: hypergeometric under the null (exact), or counted over
    ``n_permutations`` random placements of b's kept entries (monte-carlo, p = (1 + hits) /
    (1 + n_permutations)).
    """
    a, b = a.bool().flatten(), b.bool().flatten()
    n, k_a, k_b = a.numel(), int(a.sum()), int(b.sum())
    observed = int((a & b).sum())
    if method == "exact":
        from scipy import stats  # imported when needed: the rules package imports this module

        dist = stats.hypergeom(n, k_a, k_b)
        return _tail_p(float(dist.cdf(observed)), float(dist.sf(observed - 1)), alternative)
    a_idx = a.nonzero().flatten()
    hits_low = hits_high = 0
    member = torch.zeros(n, dtype=torch.bool)
    member[a_idx] = True
    for _ in range(n_permutations):
        placed = torch.randperm(n, generator=generator)[:k_b]
        inter = int(member[placed].sum())
        hits_low += inter <= observed
        hits_high += inter >= observed
    scale = 1.0 / (1 + n_permutations)
    return _tail_p((1 + hits_low) * scale, (1 + hits_high) * scale, alternative)


def mask_overlaps(
    masks: list[dict[str, torch.Tensor]],
    *,
    method: Literal["exact", "monte-carlo"] = "exact",
    n_permutations: int = 1000,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """One row per layer and task pair (a < b): jaccard, chance, densities and p-value.

    ``masks[t][layer]`` is task t's boolean mask of that layer.
    """
    rows = []
    for layer in masks[0] if masks else []:
        for ta in range(len(masks)):
            for tb in range(ta + 1, len(masks)):
                a, b = masks[ta][layer], masks[tb][layer]
                pa, pb = float(a.float().mean()), float(b.float().mean())
                rows.append(
                    dict(
                        layer=layer, task_a=ta, task_b=tb, jaccard=jaccard(a, b), chance=chance_jaccard(pa, pb),
                        density_a=pa, density_b=pb,
                        p_value=jaccard_p_value(a, b, method=method, n_permutations=n_permutations, generator=generator),
                    )
                )
    return rows


# ---------------------------------------------------------------------------- batch norm
def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten(), v.double().flatten()
    denom = float(u.norm() * v.norm())
    return 0.0 if denom == 0 else float(u @ v) / denom


def norm_mean_similarity(means: list[dict[str, torch.Tensor]]) -> list[dict]:
    """Cosine similarity of the batch-norm running means of every task pair, per layer.

    ``means[t][layer]``: task t's running mean of that layer's pre-normalisation activity.
    """
    rows = []
    for layer in means[0] if means else []:
        for ta in range(len(means)):
            for tb in range(ta + 1, len(means)):
                rows.append(dict(layer=layer, task_a=ta, task_b=tb, cosine=cosine(means[ta][layer], means[tb][layer])))
    return rows


# ---------------------------------------------------------------------------- classification
def macro_scores(y_true, y_pred, labels=None) -> dict[str, float]:
    """Macro-averaged precision, recall and F1 (scikit-learn; 0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), labels=labels, average="macro", zero_division=0
    )
    return {"precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f)}


def time_per_task(metrics) -> dict[int, float]:
    """Seconds each task took, from a run's metrics table (the runner's ``time`` rows)."""
    rows = metrics[metrics.metric == "time"]
    return {int(t): float(v) for t, v in zip(rows.task, rows.value)}
