"""Style sheets, figure sizes, colours and the small drawing helpers shared by the figures.

The style sheets live in ``neurocl/styles/*.mplstyle`` (package data). Their ``figure.figsize``
is the size of one panel: a figure with a grid of panels is that size times the grid, so every
figure has a fixed size whatever the data (no autoscaling to the screen).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import matplotlib.style as mstyle
import numpy as np
from matplotlib.figure import Figure

from .determinism import RC
from .options import STYLES, STYLES_DIR

# Excitatory red, inhibitory blue: the convention of the E/I literature (and of RdBu_r, whose
# positive side is red), so signed weight maps and unit traces agree.
E_COLOR = "#c0392b"
I_COLOR = "#2c6fbb"
ACCURACY_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"
BOUNDARY_COLOR = "0.55"


def style_path(name: str) -> Path:
    path = STYLES_DIR / f"{name}.mplstyle"
    if name not in STYLES or not path.is_file():
        raise ValueError(f"unknown style '{name}' (choose from {', '.join(STYLES)})")
    return path


@contextmanager
def figure_style(name: str = "paper"):
    """Matplotlib defaults reset, then the style sheet, then the determinism settings."""
    with mpl.rc_context():
        mpl.rcdefaults()  # nothing from the user's matplotlibrc leaks into the figures
        mstyle.use(style_path(name))
        mpl.rcParams.update(RC)
        yield


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 1.0, height: float = 1.0, **subplot_kw):
    """A Figure (not pyplot: no global state) with a grid of panels of the style's panel size."""
    pw, ph = mpl.rcParams["figure.figsize"]
    fig = Figure(figsize=(pw * width * ncols, ph * height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(max(n, 1), max_cols)
    return int(np.ceil(max(n, 1) / ncols)), ncols


def panel_title(text: str, width: int = 36) -> str:
    """``text`` broken after its commas into lines of about ``width`` characters, so that long
    condition labels in neighbouring panels do not run into each other."""
    lines: list[str] = []
    for part in text.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    return ",\n".join(lines)


def hide_unused(axes, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def condition_color(order: int) -> str:
    """A condition's colour from its position among all conditions of the input, so that a
    condition has the same colour in every figure of a build, even where others are absent."""
    cycle = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[int(order) % len(cycle)]


def integer_x(ax) -> None:
    """Epochs and time steps are counts: no 2.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def mark_task_boundaries(ax, ends: list[float]) -> None:
    """Dashed lines between tasks (after the last evaluation of each task but the last)."""
    for x in ends[:-1]:
        ax.axvline(x, color=BOUNDARY_COLOR, linestyle="--", linewidth=0.6 * mpl.rcParams["lines.linewidth"], zorder=0)


def annotate_cells(ax, values: np.ndarray, fmt: str = "{:.2f}", dark: np.ndarray | None = None, text=None) -> None:
    """Write each cell's value (or ``text[i][j]``) in a heatmap; skip NaN cells.

    ``dark`` marks the cells whose colour is dark, where the text is white to stay legible.
    """
    n_rows, n_cols = values.shape
    size = mpl.rcParams["font.size"] * (0.8 if max(n_rows, n_cols) <= 6 else 0.6)
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if np.isnan(v):
                continue
            label = text[i][j] if text is not None else fmt.format(v)
            white = dark is not None and bool(dark[i, j])
            ax.text(j, i, label, ha="center", va="center", fontsize=size, color="white" if white else "black")
