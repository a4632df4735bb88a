"""The trained E/I network itself: connectivity, eigenvalue spectrum and recorded activity.

One figure per E/I run. Weights come from the run's last effective-weight snapshot
(``recording.weights``) or else its final checkpoint rebuilt through the model's own
``effective_weights()`` (:meth:`Artifacts.network`); activity from ``activity.npz``
(``recording.activity.trials``).
"""

from __future__ import annotations

from collections import Counter

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.patches import Circle

from . import data as D
from .registry import Output, Skip, register
from .style import E_COLOR, I_COLOR, SIGNED_CMAP, integer_x, new_figure

NET_NEEDS = "an E/I network run with its final checkpoint or recording.weights: true"
ACT_NEEDS = "an E/I network run with recording.activity.trials > 0, which writes activity.npz"


def _per_run(df: pd.DataFrame, art, draw) -> list[Output]:
    """``draw(run_id, run_rows)`` for every run; Skip if none could be drawn, with the reasons.

    Per-run reasons leave the run id out so that one reason shared by many runs reads once.
    """
    art.require()
    outputs, reasons = [], []
    for rid in sorted(df["run_id"].unique()):
        try:
            outputs.append(draw(rid, df[df.run_id == rid]))
        except Skip as why:
            reasons.append(str(why))
    if not outputs:
        counts = Counter(reasons)  # first-seen order
        raise Skip("; ".join(r if k == 1 else f"{r} ({k} runs)" for r, k in counts.items()))
    return outputs


def complex_plane(ax, lim: float) -> None:
    """A square, equal-aspect eigenvalue panel from -lim to lim with its axes drawn faintly."""
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", linewidth=0.5, zorder=0)
    ax.axvline(0, color="0.85", linewidth=0.5, zorder=0)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")


def _describe(run: pd.DataFrame) -> str:
    return f"{run['condition'].iat[0]}, seed {D.format_value(run['seed'].iat[0])}"


def unit_order(sign: np.ndarray) -> np.ndarray:
    """Excitatory units first, then inhibitory, each in index order."""
    return np.argsort(-np.asarray(sign), kind="stable")


def _types(sign: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(sign) > 0, "E", "I")


@register("connectivity", title="Effective recurrent connectivity, E and I blocks", needs=NET_NEEDS, per_run=True)
def connectivity(df: pd.DataFrame, art) -> list[Output]:
    def draw(rid, run):
        net = art.network(rid)
        W = net.weights["W_rec"]
        order = unit_order(net.sign)
        Wo = W[np.ix_(order, order)]
        types = _types(net.sign)[order]
        n_e = int((types == "E").sum())
        fig, axes = new_figure(1, 1, width=1.4, height=1.6)
        ax = axes[0, 0]
        limit = float(np.abs(Wo).max()) or 1.0
        image = ax.imshow(Wo, cmap=SIGNED_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
        n_i = len(types) - n_e
        if 0 < n_e < len(types):  # the E | I block boundary
            ax.axvline(n_e - 0.5, color="black", linewidth=0.8)
            ax.axhline(n_e - 0.5, color="black", linewidth=0.8)
        blocks = [(c, f"{kind} ({k})", color) for c, kind, k, color in (
            ((n_e - 1) / 2, "E", n_e, E_COLOR), (n_e + (n_i - 1) / 2, "I", n_i, I_COLOR)) if k > 0]
        for setter in (ax.set_xticks, ax.set_yticks):
            setter([b[0] for b in blocks], labels=[b[1] for b in blocks])
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for lab, (_, _, color) in zip(labels, blocks):
                lab.set_color(color)
        ax.set_xlabel("presynaptic unit")
        ax.set_ylabel("postsynaptic unit")
        fig.colorbar(image, ax=ax, label="effective weight (red: excitatory, blue: inhibitory)", shrink=0.8)
        ax.set_title(f"Effective W_rec, run {rid}\n{_describe(run)}; from {net.source}")
        post, pre = np.meshgrid(order, order, indexing="ij")
        t_post, t_pre = np.meshgrid(types, types, indexing="ij")
        out = pd.DataFrame({
            "row": np.repeat(np.arange(len(order)), len(order)), "col": np.tile(np.arange(len(order)), len(order)),
            "post_unit": post.ravel(), "pre_unit": pre.ravel(), "post_type": t_post.ravel(), "pre_type": t_pre.ravel(),
            "weight": Wo.ravel(), "source": net.source,
        })
        return Output(fig, out, [rid], suffix=rid)

    return _per_run(df, art, draw)


def spectrum_table(W: np.ndarray) -> pd.DataFrame:
    ev = np.linalg.eigvals(W)
    mod = np.abs(ev)
    order = np.lexsort((ev.imag, ev.real, -mod))  # largest modulus first; ties by real, imag
    ev, mod = ev[order], mod[order]
    return pd.DataFrame({"real": ev.real, "imag": ev.imag, "modulus": mod, "spectral_radius": mod.max()})


@register("spectrum", title="Eigenvalue spectrum of the recurrent weights", needs=NET_NEEDS, per_run=True)
def spectrum(df: pd.DataFrame, art) -> list[Output]:
    def draw(rid, run):
        net = art.network(rid)
        t = spectrum_table(net.weights["W_rec"])
        rho = float(t["spectral_radius"].iat[0])
        fig, axes = new_figure(1, 1, width=1.5, height=2.0)
        ax = axes[0, 0]
        ax.add_patch(Circle((0, 0), rho, fill=False, color="black", linestyle="--", label=f"spectral radius {rho:.3f}"))
        ax.add_patch(Circle((0, 0), 1.0, fill=False, color="0.6", linestyle=":", label="unit circle"))
        ax.scatter(t["real"], t["imag"], s=8, color=E_COLOR, linewidths=0, zorder=3, label="eigenvalues")
        complex_plane(ax, 1.1 * max(rho, 1.0))
        fig.legend(loc="outside lower center", ncols=2)
        ax.set_title(f"Spectrum of W_rec, run {rid}\n{_describe(run)}; from {net.source}")
        return Output(fig, t.assign(source=net.source), [rid], suffix=rid)

    return _per_run(df, art, draw)


@register("activity", title="Activity of E and I units over a recorded trial", needs=ACT_NEEDS, per_run=True)
def activity(df: pd.DataFrame, art) -> list[Output]:
    def draw(rid, run):
        act = art.activity(rid)
        if act is None:
            raise Skip(f"no activity recorded; needs {ACT_NEEDS}")
        if "sign" not in act:
            raise Skip("the recorded activity has no unit signs: not an E/I network")
        tasks = sorted(int(k[len("task"):-2]) for k in act if k.startswith("task") and k.endswith("_r"))
        if not tasks:
            raise Skip("activity.npz holds no rates (task*_r)")
        types = _types(act["sign"])
        trial = 0  # the first recorded trial of each task: the same test example every time
        fig, axes = new_figure(2, len(tasks), width=0.8, sharex=True, sharey="row")
        rows = []
        for c, j in enumerate(tasks):
            r = act[f"task{j}_r"][trial]  # (steps, units)
            steps = np.arange(r.shape[0])
            label = act.get(f"task{j}_y")
            for k, (kind, color) in enumerate((("E", E_COLOR), ("I", I_COLOR))):
                ax = axes[k, c]
                units = np.flatnonzero(types == kind)
                if units.size == 0:  # a network without inhibitory (or excitatory) units
                    ax.set_visible(False)
                    continue
                for u in units:
                    ax.plot(steps, r[:, u], color=color, alpha=0.25, linewidth=0.5)
                    rows += [dict(task=j, trial=trial, step=int(t), unit=int(u), type=kind, rate=float(r[t, u])) for t in steps]
                mean = r[:, units].mean(axis=1)
                ax.plot(steps, mean, color=color, linewidth=2 * mpl.rcParams["lines.linewidth"])
                rows += [dict(task=j, trial=trial, step=int(t), unit=-1, type=kind, rate=float(mean[t])) for t in steps]
                if k == 0:
                    # Per-step targets (cognitive tasks) have no single label to show.
                    target = f" (label {int(label[trial])})" if label is not None and np.ndim(label[trial]) == 0 else ""
                    ax.set_title(f"task {j}{target}")
                if c == 0:
                    ax.set_ylabel(f"{kind} rate ({len(units)} units)")
                if k == 1:
                    ax.set_xlabel("time step")
                    integer_x(ax)
        fig.suptitle(f"Activity over trial {trial}, run {rid} ({_describe(run)}); thick: population mean")
        out = pd.DataFrame(rows).sort_values(["task", "type", "unit", "step"], kind="mergesort").reset_index(drop=True)
        return Output(fig, out, [rid], suffix=rid)

    return _per_run(df, art, draw)
