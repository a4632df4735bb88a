"""Deterministic class-stratified sampling, used for train/test splits and small subsets."""

from __future__ import annotations

import numpy as np


def _quotas(counts: np.ndarray, n: int) -> np.ndarray:
    # Largest-remainder allocation: proportional per class and summing to exactly n,
    # so "8000/2000" means exactly that whatever the class frequencies.
    exact = counts * (n / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    short = n - int(quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:short]] += 1
    return quotas


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items with class proportions as in ``labels``.

    Reproducible from ``seed`` (numpy ``default_rng``); ``n >= len(labels)`` gives all.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = _quotas(counts, n)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(inverse == k))[:q] for k, q in enumerate(quotas)]
    return np.sort(np.concatenate(picked))


def stratified_split(
    labels: np.ndarray, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, test) indices, ``n_test`` in test, stratified by class."""
    test = stratified_sample(labels, n_test, seed)
    keep = np.ones(len(labels), dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep), test
