"""Task-similarity heatmaps of study R4: supermask overlaps and batch-norm-mean similarity.

The metric layout they read is the one the ``supermask`` rule records at the end of training
(:mod:`neurocl.rules.supermask`, :mod:`neurocl.analysis.masks`); one row per pair of tasks
and layer, ``epoch``/``global_epoch`` as the rule logs them:

=======================  =====  ==========  =======  ============================================
metric                   task   eval_task   layer    value
=======================  =====  ==========  =======  ============================================
``mask_jaccard``         i      j           L        Jaccard index of task i's and task j's masks
``mask_jaccard_chance``  i      j           L        the chance level for their densities:
                                                     ``p_i p_j / (p_i + p_j - p_i p_j)``
``mask_density``         i      -1          L        fraction of weights task i's mask keeps
``mask_jaccard_p``       i      j           L        permutation-test p-value (optional;
                                                     a star where p < 0.05 in every seed)
``bn_mean_cosine``       i      j           L        cosine similarity of the batch-norm running
                                                     means of tasks i and j
=======================  =====  ==========  =======  ============================================

Pairs may be logged in either order or both; they are made symmetric. When a pair was logged
more than once (after several tasks, say) the last record counts: those are the final masks.
The chance level is read from ``mask_jaccard_chance`` or else computed from ``mask_density``;
without either the overlap figure is skipped, because an overlap without its chance level is
what misled study R4 (two independent masks of density 0.5 overlap by 1/3 by chance).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import data as D
from .registry import Output, Skip, register
from .style import SIGNED_CMAP, annotate_cells, new_figure, panel_title

MASK_NEEDS = "the supermask rule's 'mask_jaccard' metric with 'mask_jaccard_chance' or 'mask_density'"
BN_NEEDS = "the supermask rule's 'bn_mean_cosine' metric, from a model with batch norm"
PAIR_KEYS = ["condition_order", "condition", "layer", "task_i", "task_j"]
SIGNIFICANT = 0.05


def chance_jaccard(p_i, p_j):
    """Expected Jaccard index of two independent random masks of densities p_i and p_j."""
    p_i, p_j = np.asarray(p_i, dtype=float), np.asarray(p_j, dtype=float)
    return p_i * p_j / (p_i + p_j - p_i * p_j)


def _pairs(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The last record of ``metric`` per run, layer and unordered task pair (both orders)."""
    rows = df[(df.metric == metric) & (df.task >= 0) & (df.eval_task >= 0) & (df.task != df.eval_task)]
    rows = rows.sort_values(["run_id", "layer", "task", "eval_task", "global_epoch", "epoch"], kind="mergesort")
    lo, hi = np.minimum(rows.task, rows.eval_task), np.maximum(rows.task, rows.eval_task)
    rows = rows.assign(task_i=lo.astype(int), task_j=hi.astype(int))
    rows = rows.drop_duplicates(["run_id", "layer", "task_i", "task_j"], keep="last")
    flipped = rows.assign(task_i=rows.task_j, task_j=rows.task_i)
    both = pd.concat([rows, flipped], ignore_index=True)
    return both[["run_id", "condition_order", "condition", "seed", "layer", "task_i", "task_j", "value"]]


def _chance(df: pd.DataFrame, overlap: pd.DataFrame) -> pd.Series:
    recorded = _pairs(df, "mask_jaccard_chance")
    keys = ["run_id", "layer", "task_i", "task_j"]
    if not recorded.empty:
        merged = overlap[keys].merge(recorded[keys + ["value"]], on=keys, how="left")
        if merged["value"].notna().all():
            return merged["value"]
    dens = df[(df.metric == "mask_density") & (df.task >= 0)]
    if dens.empty:
        raise Skip("'mask_jaccard' was recorded without 'mask_jaccard_chance' or 'mask_density': the chance level cannot be marked")
    dens = dens.sort_values(["run_id", "layer", "task", "global_epoch", "epoch"], kind="mergesort")
    dens = dens.drop_duplicates(["run_id", "layer", "task"], keep="last").set_index(["run_id", "layer", "task"])["value"]
    p_i = [dens.get((r, l, i), np.nan) for r, l, i in zip(overlap.run_id, overlap.layer, overlap.task_i)]
    p_j = [dens.get((r, l, j), np.nan) for r, l, j in zip(overlap.run_id, overlap.layer, overlap.task_j)]
    if np.isnan(p_i).any() or np.isnan(p_j).any():
        raise Skip("'mask_density' is missing for some masked task and layer: the chance level cannot be marked")
    return pd.Series(chance_jaccard(p_i, p_j), index=overlap.index)


def _matrix(s: pd.DataFrame, column: str, n: int, diagonal: float = np.nan) -> np.ndarray:
    M = np.full((n, n), np.nan)
    M[s["task_i"].to_numpy(), s["task_j"].to_numpy()] = s[column].to_numpy()
    np.fill_diagonal(M, diagonal)
    return M


def _grid(stats: pd.DataFrame):
    conds = stats.drop_duplicates("condition").sort_values("condition_order", kind="mergesort")["condition"].tolist()
    layers = D.layer_order(stats["layer"].unique())
    n = int(max(stats["task_i"].max(), stats["task_j"].max())) + 1
    scale = max(1.0, n / 5)
    fig, axes = new_figure(len(conds), len(layers), width=scale, height=scale * 1.1)
    return fig, axes, conds, layers, n


def _panels(axes, stats: pd.DataFrame, conds, layers, n: int):
    """(axis, condition, layer, rows) of every condition x layer panel that has data, its task
    axes labelled; panels without data are hidden."""
    for r, cond in enumerate(conds):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            s = stats[(stats.condition == cond) & (stats.layer == layer)]
            if s.empty:
                ax.set_visible(False)
                continue
            ax.set_xticks(np.arange(n))
            ax.set_yticks(np.arange(n))
            ax.set_xlabel("task")
            ax.set_ylabel("task")
            yield ax, cond, layer, s


@register("mask-overlap", title="Supermask overlap between tasks, with the chance level", needs=MASK_NEEDS)
def mask_overlap(df: pd.DataFrame, art=None) -> list[Output]:
    overlap = _pairs(df, "mask_jaccard")
    if overlap.empty:
        raise Skip(f"no 'mask_jaccard' metric in the results; needs {MASK_NEEDS}")
    overlap = overlap.assign(chance=_chance(df, overlap).to_numpy())
    p_values = _pairs(df, "mask_jaccard_p").rename(columns={"value": "p_value"})
    keys = ["run_id", "layer", "task_i", "task_j"]
    overlap = overlap.merge(p_values[keys + ["p_value"]], on=keys, how="left") if not p_values.empty else overlap.assign(p_value=np.nan)
    g = overlap.groupby(PAIR_KEYS, sort=False)
    stats = pd.DataFrame({
        "jaccard": g["value"].mean(), "jaccard_std": g["value"].std(ddof=1), "chance": g["chance"].mean(),
        # Averaging p-values means nothing; the largest is the conservative summary: a star
        # says every seed's overlap differed from chance.
        "p_value_max": g["p_value"].max(), "n_seeds": g["value"].count(),
    }).reset_index()
    stats["excess"] = stats["jaccard"] - stats["chance"]
    stats = stats.sort_values(["condition_order", "layer", "task_i", "task_j"], kind="mergesort").reset_index(drop=True)

    fig, axes, conds, layers, n = _grid(stats)
    limit = max(0.05, float(np.nanmax(np.abs(stats["excess"]))))
    image = None
    for ax, cond, layer, s in _panels(axes, stats, conds, layers, n):
        J, C, E = _matrix(s, "jaccard", n), _matrix(s, "chance", n), _matrix(s, "excess", n)
        image = ax.imshow(E, cmap=SIGNED_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
        P = _matrix(s, "p_value_max", n)
        differs = np.nanmax(C) - np.nanmin(C) > 0.005
        star = np.where(P < SIGNIFICANT, "*", "")
        text = [[f"{J[i, j]:.2f}{star[i, j]}" + (f"\n/{C[i, j]:.2f}" if differs else "") for j in range(n)] for i in range(n)]
        annotate_cells(ax, J, text=text, dark=np.abs(np.nan_to_num(E)) > 0.6 * limit)
        chance = f"{np.nanmean(C):.3f}" if not differs else f"{np.nanmin(C):.3f}-{np.nanmax(C):.3f}"
        ax.set_title(f"{panel_title(cond)}\n{layer}: chance {chance}" if len(conds) > 1 else f"{layer}: chance {chance}")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="overlap − chance", shrink=0.8)
    cells = "overlap/chance" if (stats["chance"].max() - stats["chance"].min()) > 0.005 else "overlap"
    stars = f"; *: p < {SIGNIFICANT} in every seed, permutation test" if stats["p_value_max"].notna().any() else ""
    fig.suptitle(f"Mask overlap (Jaccard index) against chance, white = chance level\ncells: {cells}{stars}")
    out = stats[["condition", "layer", "task_i", "task_j", "jaccard", "jaccard_std", "chance", "excess", "p_value_max", "n_seeds"]]
    return [Output(fig, out, sorted(overlap["run_id"].unique()))]


@register("bn-similarity", title="Cosine similarity of batch-norm means between tasks", needs=BN_NEEDS)
def bn_similarity(df: pd.DataFrame, art=None) -> list[Output]:
    sim = _pairs(df, "bn_mean_cosine")
    if sim.empty:
        raise Skip(f"no 'bn_mean_cosine' metric in the results; needs {BN_NEEDS}")
    stats = D.mean_spread(sim, PAIR_KEYS, "value")
    stats = stats.sort_values(["condition_order", "layer", "task_i", "task_j"], kind="mergesort").reset_index(drop=True)
    fig, axes, conds, layers, n = _grid(stats)
    image = None
    for ax, cond, layer, s in _panels(axes, stats, conds, layers, n):
        M = _matrix(s, "mean", n, diagonal=1.0)  # a task's means are identical to themselves
        image = ax.imshow(M, cmap=SIGNED_CMAP, vmin=-1.0, vmax=1.0, interpolation="nearest")
        annotate_cells(ax, M, dark=np.abs(M) > 0.6)
        ax.set_title(f"{panel_title(cond)}\n{layer}" if len(conds) > 1 else layer)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="cosine similarity (mean over seeds)", shrink=0.8)
    fig.suptitle("Batch-norm mean similarity between tasks")
    out = stats[["condition", "layer", "task_i", "task_j", "mean", "std", "n_seeds"]]
    return [Output(fig, out, sorted(sim["run_id"].unique()))]
