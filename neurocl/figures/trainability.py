"""Trainability: the recurrent matrix's singular values and eigenvalues at init and after training.

One figure per E/I run. The singular values are what Li et al. (2023) tie to how well a
Dale's-law network learns (their spread is the NSE, :mod:`neurocl.analysis.trainability`); the
eigenvalues beside them show how little the spectral radius says about the largest singular
value of a non-normal matrix. Init is the model rebuilt from the run's configuration and seed;
"trained" is what the ``spectrum`` figure reads (last snapshot, else final checkpoint).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.patches import Circle

from ..analysis.trainability import nse, singular_values
from .network import _describe, _per_run, complex_plane, spectrum_table
from .registry import Output, register
from .style import new_figure

NEEDS = ("an E/I network run with its final checkpoint or recording.weights: true (init is rebuilt from its "
         "configuration and seed)")
# Not the E/I colours: here the two sets are two moments of one network.
STATES = (("init", "0.6", "o"), ("trained", "black", "x"))


def _table(state: str, W: np.ndarray, source: str) -> pd.DataFrame:
    s = singular_values(W)
    ev = spectrum_table(W)
    sv = pd.DataFrame({"quantity": "singular value", "index": np.arange(1, s.size + 1), "value": s,
                       "real": np.nan, "imag": np.nan})
    eig = pd.DataFrame({"quantity": "eigenvalue", "index": np.arange(1, len(ev) + 1), "value": ev["modulus"],
                        "real": ev["real"], "imag": ev["imag"]})
    out = pd.concat([sv, eig], ignore_index=True)
    out.insert(0, "state", state)
    return out.assign(nse=nse(s=s), source=source)


@register("trainability", title="Singular values and eigenvalues of W_rec at init and after training",
          needs=NEEDS, per_run=True)
def trainability(df: pd.DataFrame, art) -> list[Output]:
    def draw(rid, run):
        nets = {"init": art.initial_network(rid), "trained": art.network(rid)}
        data = pd.concat([_table(k, nets[k].weights["W_rec"], nets[k].source) for k, _, _ in STATES],
                         ignore_index=True)
        fig, axes = new_figure(1, 2, width=1.2, height=1.2)
        sv_ax, ev_ax = axes[0]
        lim = 1.0
        for state, color, marker in STATES:
            part = data[data.state == state]
            sv, ev = part[part.quantity == "singular value"], part[part.quantity == "eigenvalue"]
            label = f"{state} (NSE {part['nse'].iat[0]:.3f})"
            sv_ax.plot(sv["index"], sv["value"], color=color, marker=marker, markersize=3, label=label)
            ev_ax.scatter(ev["real"], ev["imag"], s=10, color=color, marker=marker, linewidths=0.8, zorder=3,
                          label=f"{state} (radius {ev['value'].max():.3g})")
            lim = max(lim, float(ev["value"].max()))
        sv_ax.set_yscale("log")
        sv_ax.set_xlabel("rank")
        sv_ax.set_ylabel("singular value of W_rec")
        sv_ax.legend()
        ev_ax.add_patch(Circle((0, 0), 1.0, fill=False, color="0.4", linestyle=":", label="unit circle"))
        complex_plane(ev_ax, 1.1 * lim)
        ev_ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside: the points fill the panel
        fig.suptitle(f"W_rec at init and after training, run {rid}\n{_describe(run)}; trained: {nets['trained'].source}")
        return Output(fig, data, [rid], suffix=rid)

    return _per_run(df, art, draw)
