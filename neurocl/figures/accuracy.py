"""Accuracy figures: per-task curves over training, the accuracy matrix, average accuracy.

All three read the ``acc`` metric (after every epoch, per evaluated task; the untrained network
at global epoch 0) and average over the seeds of a condition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import data as D
from .registry import Output, register
from .style import (
    ACCURACY_CMAP, annotate_cells, condition_color, grid_shape, hide_unused, integer_x, mark_task_boundaries, new_figure,
    panel_title,
)

ACC_NEEDS = "the 'acc' metric, which every run records"


@register("accuracy-curves", title="Accuracy on each task over training", needs=ACC_NEEDS)
def accuracy_curves(df: pd.DataFrame, art=None) -> list[Output]:
    acc = D.require(df, "acc", ACC_NEEDS)
    stats = D.mean_spread(acc, ["condition_order", "condition", "eval_task", "global_epoch", "task"], "value")
    stats = stats.sort_values(["condition_order", "eval_task", "global_epoch"], kind="mergesort")
    conds = D.conditions(acc)
    nrows, ncols = grid_shape(len(conds))
    fig, axes = new_figure(nrows, ncols, sharey=True)
    n_tasks = int(acc["eval_task"].max()) + 1
    names = D.task_labels(acc)
    for ax, cond in zip(axes.ravel(), conds):
        s = stats[stats.condition == cond]
        for j in range(n_tasks):
            line = s[s.eval_task == j]
            x, m, sd = line["global_epoch"].to_numpy(), line["mean"].to_numpy(), line["std"].to_numpy()
            (h,) = ax.plot(x, m, marker="o", label=f"task {j}" + (f": {names[j]}" if j in names else ""))
            if np.isfinite(sd).any():
                ax.fill_between(x, m - np.nan_to_num(sd), m + np.nan_to_num(sd), color=h.get_color(), alpha=0.2, linewidth=0)
        # Boundaries from one run of the condition: all its seeds share the schedule.
        first = acc[acc.run_id == acc[acc.condition == cond]["run_id"].min()]
        ends = D.task_ends(first)
        mark_task_boundaries(ax, ends)
        n_seeds = int(s["n_seeds"].max())
        ax.set_title(panel_title(f"{cond} (n={n_seeds} seed{'s' if n_seeds != 1 else ''})"))
        ax.set_xlabel("epoch (global; 0 = untrained)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
        integer_x(ax)
    for row in axes:
        row[0].set_ylabel("accuracy")
    hide_unused(axes, len(conds))
    axes.ravel()[len(conds) - 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="evaluated on")
    fig.suptitle("Accuracy on each task (mean ± s.d. over seeds; dashed: task boundaries)")
    out = stats[["condition", "eval_task", "global_epoch", "task", "mean", "std", "n_seeds"]]
    return [Output(fig, out.reset_index(drop=True), sorted(acc["run_id"].unique()))]


def _matrices(df: pd.DataFrame) -> pd.DataFrame:
    acc = D.require(df, "acc", ACC_NEEDS)
    return D.run_summaries(acc)


@register("accuracy-matrix", title="Accuracy matrix R[i, j]", needs=ACC_NEEDS)
def accuracy_matrix(df: pd.DataFrame, art=None) -> list[Output]:
    per_run = _matrices(df)
    stats = D.mean_spread(per_run, ["condition_order", "condition", "after_task", "eval_task"], "accuracy")
    stats = stats.sort_values(["condition_order", "after_task", "eval_task"], kind="mergesort")
    conds = D.conditions(df[df.metric == "acc"])
    nrows, ncols = grid_shape(len(conds))
    n = int(stats["after_task"].max()) + 1
    scale = max(1.0, n / 5)  # keep cells legible for long task sequences
    fig, axes = new_figure(nrows, ncols, width=scale, height=scale * 1.15)
    image = None
    names = D.task_labels(df[df.metric == "acc"])
    for ax, cond in zip(axes.ravel(), conds):
        s = stats[stats.condition == cond]
        R = np.full((n, n), np.nan)
        R[s["after_task"].to_numpy(), s["eval_task"].to_numpy()] = s["mean"].to_numpy()
        image = ax.imshow(R, cmap=ACCURACY_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        annotate_cells(ax, R, dark=R < 0.55)  # viridis is dark below about 0.55
        ticks = np.arange(n)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        if names:  # the tasks' names (long ones slanted so that they do not overlap)
            labels = [names.get(j, str(j)) for j in range(n)]
            slant = max(map(len, labels)) > 3
            ax.set_xticklabels(labels, rotation=45 if slant else 0, ha="right" if slant else "center")
            ax.set_yticklabels(labels)
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training task i")
        n_seeds = int(s["n_seeds"].max())
        ax.set_title(panel_title(f"{cond} (n={n_seeds})"))
    hide_unused(axes, len(conds))
    fig.colorbar(image, ax=axes.ravel()[: len(conds)].tolist(), label="accuracy (mean over seeds)", shrink=0.8)
    fig.suptitle("Accuracy matrix: row i after training task i, column j the task evaluated")
    out = stats[["condition", "after_task", "eval_task", "mean", "std", "n_seeds"]]
    return [Output(fig, out.reset_index(drop=True), sorted(per_run["run_id"].unique()))]


@register("average-accuracy", title="Average accuracy against number of tasks learned", needs=ACC_NEEDS)
def average_accuracy(df: pd.DataFrame, art=None) -> list[Output]:
    per_run = _matrices(df).drop_duplicates(["run_id", "after_task"])
    per_run = per_run.assign(tasks_learned=per_run["after_task"] + 1)
    stats = D.mean_spread(per_run, ["condition_order", "condition", "tasks_learned"], "average_accuracy")
    stats = stats.sort_values(["condition_order", "tasks_learned"], kind="mergesort")
    conds = D.conditions(df[df.metric == "acc"])
    fig, axes = new_figure(1, 1, width=1.8)  # room for the legend beside the axes
    ax = axes[0, 0]
    for cond in conds:
        s = stats[stats.condition == cond]
        color = condition_color(s["condition_order"].iat[0])
        n_seeds = int(s["n_seeds"].max())
        sd = s["std"].to_numpy()
        ax.errorbar(
            s["tasks_learned"], s["mean"], yerr=None if not np.isfinite(sd).any() else np.nan_to_num(sd),
            marker="o", capsize=2, color=color, label=panel_title(f"{cond} (n={n_seeds})", width=30),
        )
    n = int(stats["tasks_learned"].max())
    ax.set_xticks(np.arange(1, n + 1))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("number of tasks learned")
    ax.set_ylabel("average accuracy on tasks so far")
    ax.set_title("Average accuracy (mean ± s.d. over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    out = stats[["condition", "tasks_learned", "mean", "std", "n_seeds"]]
    return [Output(fig, out.reset_index(drop=True), sorted(per_run["run_id"].unique()))]
