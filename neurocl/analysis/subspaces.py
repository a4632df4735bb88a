"""Task subspaces of a trained network: how the activity each task evokes overlaps with the
others', and how far a task's activity moved while later tasks were learnt.

- ``principal_angles(A, B)``: the angles between the column spaces of A and B;
- ``activity_subspace(R, variance)``: the leading principal components of activity R
  (samples x units) that explain ``variance`` of it;
- ``linear_cka(X, Y)``: linear centred kernel alignment of two representations of the same
  samples (1: the same up to rotation and scale);
- ``run_subspaces(run)``: for a stored run, the principal angles between every pair of tasks'
  activity subspaces after the last task, and, for every task whose own boundary checkpoint
  was kept, the CKA between its activity after its own training and after the last task.

``neurocl analyse subspaces RUN`` prints both and writes them to ``RUN/analyses/``.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from .kinds import ANALYSES, run_tasks, test_rates, write_table


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of ``a`` and ``b``."""
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.float64))
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.arccos(np.clip(cosines, -1.0, 1.0))


def activity_subspace(r: np.ndarray, variance: float = 0.9) -> np.ndarray:
    """An orthonormal basis (units x k) of the fewest principal components of ``r`` (samples x
    units) that explain at least ``variance`` of its variance."""
    r = np.asarray(r, dtype=np.float64)
    centred = r - r.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    power = s**2
    if power.sum() == 0:
        return vt[:1].T
    k = int(np.searchsorted(np.cumsum(power) / power.sum(), variance) + 1)
    return vt[: min(k, len(s))].T


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations (samples x features) of the same samples."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def _rates(model, split, max_trials: int) -> np.ndarray:
    r = test_rates(model, split, max_trials)
    return r.reshape(-1, r.shape[-1])  # (trials x steps, units)


def run_subspaces(run_dir: str | Path, variance: float = 0.9, max_trials: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(angles, drift) of a stored run of the E/I network (see the module docstring)."""
    from ..models import load_model
    from ..store import RunDir

    rd = RunDir(run_dir)
    _, tasks = run_tasks(rd.path)
    final = load_model(rd.path)
    rates = [_rates(final, t.test, max_trials) for t in tasks]
    bases = [activity_subspace(r, variance) for r in rates]
    angles = []
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            theta = np.degrees(principal_angles(bases[i], bases[j]))
            angles.append({"task_i": tasks[i].name, "task_j": tasks[j].name, "dims_i": bases[i].shape[1],
                            "dims_j": bases[j].shape[1], "smallest_angle_deg": float(theta[0]),
                            "mean_angle_deg": float(theta.mean())})
    drift = []
    for i, task in enumerate(tasks[:-1]):
        if not rd.checkpoint(i).is_file():
            continue
        own = _rates(load_model(rd.path, task=i), task.test, max_trials)
        theta = np.degrees(principal_angles(activity_subspace(own, variance), bases[i]))
        drift.append({"task": task.name, "cka_own_vs_last": linear_cka(own, rates[i]),
                      "mean_angle_own_vs_last_deg": float(theta.mean())})
    return pd.DataFrame(angles), pd.DataFrame(drift, columns=["task", "cka_own_vs_last", "mean_angle_own_vs_last_deg"])


@click.command("subspaces")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--variance", type=float, default=0.9, show_default=True,
              help="Share of a task's activity variance its subspace keeps.")
@click.option("--trials", type=int, default=200, show_default=True, help="Test trials per task.")
def subspaces_cmd(run_dir: str, variance: float, trials: int) -> None:
    """Principal angles between the tasks' activity subspaces after the last task, and how far
    each task's activity moved since its own training (CKA; needs execution.keep_checkpoints:
    all). Writes RUN/analyses/subspaces-angles.csv and subspaces-drift.csv."""
    angles, drift = run_subspaces(run_dir, variance, trials)
    paths = [write_table(run_dir, name, table) for name, table in (("subspaces-angles", angles), ("subspaces-drift", drift))]
    click.echo(angles.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if drift.empty:
        click.echo("(no drift: the run kept only its last checkpoint; execution.keep_checkpoints: all keeps every one)")
    else:
        click.echo(drift.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {paths[0]} and {paths[1]}")


ANALYSES.register(subspaces_cmd, name="subspaces")
