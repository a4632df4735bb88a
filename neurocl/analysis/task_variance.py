"""Task variance and unit clusters (Yang et al. 2019): how much each unit's activity varies
within each task, and which groups of units serve which tasks, at every kept task boundary.

- ``task_variance(r)``: for activity r (trials x steps x units) of one task, each unit's
  variance across trials at every step, averaged over steps;
- ``normalise(tv)``: each unit's task variances divided by its largest (units x tasks), units
  whose largest is below ``floor`` of the network's largest left out (silent units);
- ``cluster_units(x)``: k-means on the normalised variances with the number of clusters (2 to
  ``k_max``) that maximises the silhouette score;
- ``run_task_variance(run)``: all of it for a stored run, per kept checkpoint, with each
  unit's E/I identity.

``neurocl analyse variance RUN`` writes ``RUN/analyses/task-variance.csv`` and prints, per
checkpoint, each cluster's size, E/I make-up and mean normalised variance per task.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from .kinds import ANALYSES, run_tasks, test_rates, write_table


def task_variance(r: np.ndarray) -> np.ndarray:
    """(units,) variance across trials at each step, averaged over steps; r: (trials, steps, units)."""
    r = np.asarray(r, dtype=np.float64)
    return r.var(axis=0).mean(axis=0)


def normalise(tv: np.ndarray, floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(normalised (active units x tasks), indices of the active units)."""
    tv = np.asarray(tv, dtype=np.float64)
    peak = tv.max(axis=1)
    active = np.flatnonzero(peak > floor * peak.max()) if peak.max() > 0 else np.array([], dtype=int)
    return tv[active] / peak[active, None], active


def cluster_units(x: np.ndarray, k_max: int = 8, seed: int = 0) -> tuple[np.ndarray, float]:
    """(cluster label per row, silhouette score) of k-means with the best k in 2..k_max."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best = (np.zeros(len(x), dtype=int), float("nan"))
    for k in range(2, min(k_max, len(x) - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(x, labels))
        if not best[1] >= score:  # also replaces the nan of no clustering yet
            best = (labels, score)
    return best


def run_task_variance(run_dir: str | Path, max_trials: int = 200, k_max: int = 8) -> pd.DataFrame:
    """One row per kept checkpoint, active unit and task: its variance, normalised variance,
    cluster (per checkpoint) and population (E or I)."""
    from ..models import load_model
    from ..store import RunDir

    rd = RunDir(run_dir)
    _, tasks = run_tasks(rd.path)
    rows = []
    for k, boundary in enumerate(tasks):
        if not rd.checkpoint(k).is_file():
            continue
        model = load_model(rd.path, task=k)
        tv = np.stack([task_variance(test_rates(model, t.test, max_trials)) for t in tasks], axis=1)
        normalised, active = normalise(tv)
        labels, score = cluster_units(normalised, k_max) if len(active) > 2 else (np.zeros(len(active), dtype=int), np.nan)
        sign = model.sign.numpy() if hasattr(model, "sign") else np.ones(model.config.n)
        for row, unit in enumerate(active):
            for j, task in enumerate(tasks):
                rows.append({"after_task": boundary.name, "unit": int(unit), "population": "E" if sign[unit] > 0 else "I",
                             "task": task.name, "variance": tv[unit, j], "normalised": normalised[row, j],
                             "cluster": int(labels[row]), "silhouette": score})
    return pd.DataFrame(rows)


@click.command("variance")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--trials", type=int, default=200, show_default=True, help="Test trials per task.")
@click.option("--k-max", type=int, default=8, show_default=True, help="Most clusters tried.")
def variance_cmd(run_dir: str, trials: int, k_max: int) -> None:
    """Task variance of every unit and clusters of units (Yang et al. 2019) after every kept task
    boundary; E and I units counted apart. Writes RUN/analyses/task-variance.csv."""
    table = run_task_variance(run_dir, trials, k_max)
    path = write_table(run_dir, "task-variance", table)
    for boundary, part in table.groupby("after_task", sort=False):
        units = part.drop_duplicates("unit")
        click.echo(f"after {boundary}: {len(units)} active units, {units.cluster.nunique()} clusters "
                   f"(silhouette {units.silhouette.iloc[0]:.2f})")
        summary = part.pivot_table(index="cluster", columns="task", values="normalised", aggfunc="mean", sort=False)
        make_up = units.groupby("cluster").population.value_counts().unstack(fill_value=0)
        click.echo(summary.join(make_up).to_string(float_format=lambda v: f"{v:.2f}"))
    click.echo(f"wrote {path}")


ANALYSES.register(variance_cmd, name="variance")
