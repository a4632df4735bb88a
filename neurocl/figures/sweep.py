"""A swept setting (a rule's lambda, the learning rate, ...) against final average accuracy.

Every numeric setting that differs between runs gets a panel: its value on the x axis, each
seed as a point and the mean ± s.d. over seeds as a line, one line per combination of the
other settings that vary. Runs without the setting at all (a naive baseline in a lambda sweep)
are drawn as a horizontal reference line at their mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import data as D
from .registry import Output, Skip, register
from .style import grid_shape, hide_unused, new_figure

METRIC = "final_average_accuracy"
NEEDS = (
    "runs that differ in a numeric setting, e.g. config.rules.0.lambda or "
    "config.training.optimizer.lr, and the 'acc' metric"
)


def swept_parameters(runs: pd.DataFrame) -> list[str]:
    return [c for c in D.varying_columns(runs) if D.is_numeric_setting(runs[c])]


def final_accuracy(df: pd.DataFrame) -> pd.Series:
    """Per run id: the average accuracy over all tasks after the last task (as in summary.json)."""
    s = D.run_summaries(D.require(df, "acc", NEEDS))
    last = s[s["after_task"] == s.groupby("run_id")["after_task"].transform("max")]
    return last.drop_duplicates("run_id").set_index("run_id")["average_accuracy"]


@register("parameter-sweep", title="Swept setting against final average accuracy", needs=NEEDS)
def parameter_sweep(df: pd.DataFrame, art=None) -> list[Output]:
    finals = final_accuracy(df)
    runs = D.runs(df).set_index("run_id")
    params = swept_parameters(runs)
    if not params:
        raise Skip(f"no numeric setting varies across the runs; needs {NEEDS}")
    rows = []
    for p in params:
        others = [c for c in D.varying_columns(runs) if c != p]
        labels = D.series_labels(runs, others)
        for rid in runs.index:
            v = runs.at[rid, p]
            rows.append({
                "parameter": D.short_name(p), "series": labels[rid],
                "value": np.nan if v is None else float(v), "run_id": rid, "seed": runs.at[rid, "seed"], METRIC: finals[rid],
            })
    table = pd.DataFrame(rows)
    table["reference"] = table["value"].isna()
    g = table.groupby(["parameter", "series", "value"], dropna=False, sort=False)[METRIC]
    table["mean"], table["std"], table["n_seeds"] = g.transform("mean"), g.transform(lambda x: x.std(ddof=1)), g.transform("count")
    table = table.sort_values(["parameter", "series", "reference", "value", "seed", "run_id"], kind="mergesort").reset_index(drop=True)

    names = [D.short_name(p) for p in params]
    nrows, ncols = grid_shape(len(names))
    fig, axes = new_figure(nrows, ncols, width=1.3, sharey=True)
    for ax, name in zip(axes.ravel(), names):
        _panel(ax, table[table.parameter == name], name)
    for row in axes:
        row[0].set_ylabel("final average accuracy")
    hide_unused(axes, len(names))
    fig.suptitle("Swept settings (points: seeds; line: mean ± s.d.)")
    return [Output(fig, table, sorted(runs.index))]


def _panel(ax, t: pd.DataFrame, name: str) -> None:
    series = list(dict.fromkeys(t["series"]))
    for k, s in enumerate(series):
        part = t[t.series == s]
        color = f"C{k % 10}"
        swept = part[~part.reference]
        ref = part[part.reference]
        if not swept.empty:
            ax.scatter(swept["value"], swept[METRIC], s=8, color=color, alpha=0.5, linewidths=0)
            means = swept.drop_duplicates("value")
            sd = means["std"].to_numpy()
            ax.errorbar(
                means["value"], means["mean"], yerr=np.nan_to_num(sd) if np.isfinite(sd).any() else None,
                marker="o", capsize=2, color=color, label=f"{s}",
            )
        if not ref.empty:
            ax.axhline(ref["mean"].iat[0], color=color, linestyle=":", label=f"{s} (no {name})")
    values = t.loc[~t.reference, "value"].to_numpy()
    positive = values[values > 0]
    # Learning rates and penalty strengths are swept in decades: a log axis when they span one.
    if positive.size and positive.max() / positive.min() >= 10:
        if (values <= 0).any():
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        else:
            ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best")
