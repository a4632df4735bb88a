"""Weight distributions (study R2): histograms per layer per epoch, and their moments.

Both read what the runner recorded from the *effective* weights (recurrent: existing synapses
only), so they show the weights the network computes with, not raw parameters.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd

from . import data as D
from .registry import Output, Skip, register
from .style import condition_color, grid_shape, hide_unused, integer_x, mark_task_boundaries, new_figure, panel_title

HIST_NEEDS = "recording.histograms: true, which writes histograms.parquet"
MOMENT_NEEDS = "recording.weight_stats: true, the default, which records weight_skewness and weight_kurtosis"
HIST_CMAP = "viridis"


@register("weight-histograms", title="Weight histograms per layer per epoch", needs=HIST_NEEDS, per_run=True)
def weight_histograms(df: pd.DataFrame, art) -> list[Output]:
    outputs = []
    run_ids = sorted(df["run_id"].unique())
    for rid in run_ids:
        h = art.histograms(rid)
        if h is None or h.empty:
            continue
        outputs.append(_histogram_figure(rid, h, df[df.run_id == rid]))
    if not outputs:
        raise Skip(f"no run recorded weight histograms; needs {HIST_NEEDS}")
    return outputs


def _histogram_figure(rid: str, h: pd.DataFrame, run: pd.DataFrame) -> Output:
    """One strip per epoch: the x axis the weight, the colour the density of that bin.

    Each epoch keeps its own stored bin edges (no rebinning), so the picture shows exactly
    the recorded histograms; empty bins are left blank and the colour scale is logarithmic
    because the tails are what changes.
    """
    width = h["bin_right"] - h["bin_left"]
    h = h.assign(density=h["count"] / (h.groupby(["layer", "global_epoch"])["count"].transform("sum") * width))
    layers = D.layer_order(h["layer"].unique())
    positive = h.loc[h["density"] > 0, "density"]
    norm = mpl.colors.LogNorm(vmin=float(positive.min()), vmax=float(positive.max()))
    cmap = mpl.colormaps[HIST_CMAP].with_extremes(bad="white")
    ends = [e + 0.5 for e in D.task_ends(run)]
    nrows, ncols = grid_shape(len(layers))
    fig, axes = new_figure(nrows, ncols, height=1.2, sharey=True)
    for ax, layer in zip(axes.ravel(), layers):
        part = h[h.layer == layer]
        for e, b in part.groupby("global_epoch", sort=True):
            edges = np.append(b["bin_left"].to_numpy(), b["bin_right"].to_numpy()[-1])
            dens = np.ma.masked_less_equal(b["density"].to_numpy()[None, :], 0)
            ax.pcolormesh(edges, [e - 0.5, e + 0.5], dens, norm=norm, cmap=cmap, rasterized=False)
        for y in ends[:-1]:
            ax.axhline(y, color="black", linestyle="--", linewidth=0.6 * mpl.rcParams["lines.linewidth"])
        ax.set_title(layer)
        ax.set_xlabel("effective weight")
        # Training runs downwards, as one reads: first epoch at the top.
        ax.set_ylim(part["global_epoch"].max() + 0.5, part["global_epoch"].min() - 0.5)
    for row in axes:
        row[0].set_ylabel("epoch (global; dashed: task boundaries)")
    hide_unused(axes, len(layers))
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes.ravel()[: len(layers)].tolist(), label="density (log scale)", shrink=0.8)
    fig.suptitle(f"Weight histograms per epoch, run {rid} ({_describe(run)})")
    out = h[["layer", "task", "epoch", "global_epoch", "bin_left", "bin_right", "count", "density"]]
    out = out.sort_values(["layer", "global_epoch", "bin_left"], kind="mergesort").reset_index(drop=True)
    return Output(fig, out, [rid], suffix=rid)


def _describe(run: pd.DataFrame) -> str:
    cond = run["condition"].iat[0] if not run.empty else ""
    seed = run["seed"].iat[0] if not run.empty else None
    return f"{cond}, seed {D.format_value(seed)}" if cond else f"seed {D.format_value(seed)}"


MOMENTS = (("weight_skewness", "skewness"), ("weight_kurtosis", "excess kurtosis"))


@register("weight-moments", title="Skewness and excess kurtosis per layer over training", needs=MOMENT_NEEDS)
def weight_moments(df: pd.DataFrame, art=None) -> list[Output]:
    rows = D.require(df, [m for m, _ in MOMENTS], MOMENT_NEEDS)
    stats = D.mean_spread(rows, ["condition_order", "condition", "metric", "layer", "global_epoch"], "value")
    stats = stats.sort_values(["metric", "layer", "condition_order", "global_epoch"], kind="mergesort")
    layers = D.layer_order(rows["layer"].unique())
    conds = D.conditions(rows)
    fig, axes = new_figure(len(MOMENTS), len(layers), sharex=True)
    # Boundaries only where every run shares the schedule (conditions may train longer).
    schedules = {tuple(D.task_ends(run)) for _, run in df[df.metric == "acc"].groupby("run_id")}
    ends = list(schedules.pop()) if len(schedules) == 1 else []
    for r, (metric, label) in enumerate(MOMENTS):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            for cond in conds:
                s = stats[(stats.metric == metric) & (stats.layer == layer) & (stats.condition == cond)]
                if s.empty:
                    continue
                color = condition_color(s["condition_order"].iat[0])
                x, m, sd = s["global_epoch"].to_numpy(), s["mean"].to_numpy(), s["std"].to_numpy()
                ax.plot(x, m, marker="o", color=color, label=panel_title(cond, width=30))
                if np.isfinite(sd).any():
                    ax.fill_between(x, m - np.nan_to_num(sd), m + np.nan_to_num(sd), color=color, alpha=0.2, linewidth=0)
            ax.axhline(0.0, color="0.3", linewidth=0.5)  # a Gaussian's skewness and excess kurtosis
            mark_task_boundaries(ax, ends)
            integer_x(ax)
            if r == 0:
                ax.set_title(layer)
            if c == 0:
                ax.set_ylabel(label)
            if r == len(MOMENTS) - 1:
                ax.set_xlabel("epoch (global)")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Weight distribution moments per layer (mean ± s.d. over seeds; 0 = Gaussian)")
    out = stats.assign(statistic=stats["metric"].map(dict(MOMENTS)))
    out = out[["condition", "metric", "statistic", "layer", "global_epoch", "mean", "std", "n_seeds"]].reset_index(drop=True)
    return [Output(fig, out, sorted(rows["run_id"].unique()))]
