"""Continual-learning metrics from the accuracy matrix, and weight statistics.

``R[i, j]`` is the accuracy on task j after training task i; ``b[j]`` the accuracy of the
untrained network on task j (for forward transfer). Definitions follow Lopez-Paz & Ranzato
(2017) for transfer and Chaudhry et al. (2018) for forgetting.
"""

from __future__ import annotations

import numpy as np


def average_accuracy(R: np.ndarray) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task."""
    R = np.asarray(R, dtype=float)
    return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])


def backward_transfer(R: np.ndarray) -> float:
    """Mean over j < T-1 of R[T-1, j] - R[j, j] (negative: forgetting)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def forward_transfer(R: np.ndarray, b: np.ndarray) -> float:
    """Mean over j >= 1 of R[j-1, j] - b[j]."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    if T < 2 or b is None:
        return float("nan")
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting(R: np.ndarray) -> float:
    """Mean over j < T-1 of max_{l < T-1} R[l, j] - R[T-1, j] (l from j on)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]))


def summary_metrics(R: np.ndarray, b: np.ndarray | None) -> dict:
    avg = average_accuracy(R)
    return {
        "average_accuracy": avg.tolist(),
        "final_average_accuracy": float(avg[-1]),
        "backward_transfer": backward_transfer(R),
        "forward_transfer": forward_transfer(R, b) if b is not None else float("nan"),
        "forgetting": forgetting(R),
    }


def weight_statistics(w: np.ndarray) -> dict[str, float]:
    """Mean, std, skewness and excess kurtosis of a layer's weights (nonzero entries kept)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size < 2 or np.all(w == w[0]):
        return {"mean": float(w.mean()) if w.size else float("nan"), "std": 0.0, "skewness": float("nan"), "kurtosis": float("nan")}
    skewness, kurtosis = _skew_kurtosis(w)
    return {"mean": float(w.mean()), "std": float(w.std()), "skewness": skewness, "kurtosis": kurtosis}


def _skew_kurtosis(w: np.ndarray) -> tuple[float, float]:
    """scipy.stats.skew(w) and kurtosis(w, fisher=True) (biased, 1-D float64), computed as scipy
    computes them, operation for operation, so the values are the same to the bit (a test checks);
    importing scipy.stats cost every run about 0.8 s."""
    mean = np.mean(w, keepdims=True)
    d = w - mean
    d2 = d**2
    m2 = np.mean(d2)
    m3 = np.mean(d2 * d)  # scipy's exponentiation by squares: (d ** 2) * d
    m4 = np.mean(d2**2)
    if m2 <= (np.finfo(np.float64).eps * mean[0]) ** 2:  # scipy's "all values equal": nan
        return float("nan"), float("nan")
    return float(m3 / m2**1.5), float(m4 / m2**2.0 - 3)


def accuracy_matrix(df, n_tasks: int, metric: str = "acc") -> tuple[np.ndarray, np.ndarray | None]:
    """R[i, j] from the last evaluation after training task i, and b (the untrained network's
    accuracy per task, or None), from a run's metric rows (``metrics.parquet``)."""
    acc = df[df.metric == metric]
    R = np.full((n_tasks, n_tasks), np.nan)
    for i in range(n_tasks):
        rows = acc[acc.task == i]
        if rows.empty:
            continue
        last = rows[rows.global_epoch == rows.global_epoch.max()]
        for _, r in last.iterrows():
            R[i, int(r.eval_task)] = r.value
    untrained = acc[acc.task == -1]
    b = None
    if not untrained.empty:
        b = np.full(n_tasks, np.nan)
        for _, r in untrained.iterrows():
            b[int(r.eval_task)] = r.value
    return R, b
