"""The registry of figures: pure functions from stored results to (Figure, plotted numbers).

A figure function takes the tidy results table (:func:`neurocl.results.load`, prepared by
:func:`neurocl.figures.data.prepare`) and a read-only :class:`~neurocl.figures.artifacts.Artifacts`
view of the run directories, and returns one or more :class:`Output`. It never trains, never
writes, and raises :class:`Skip` with a one-line reason when the data it needs is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from ..registry import Registry

# The figure families, imported in this order: the order of the registry and the manifest.
FAMILIES = ("accuracy", "sweep", "weights", "masks", "network", "trainability")


class Skip(Exception):
    """The data a figure needs is not in the results; the message says what is missing."""


@dataclass
class Output:
    """One drawn figure and exactly the numbers it plots.

    ``suffix`` tells apart several outputs of one figure (one per run for the per-run
    figures); ``inputs`` are the run ids whose data it shows.
    """

    figure: Figure
    data: pd.DataFrame
    inputs: list[str]
    suffix: str = ""


@dataclass(frozen=True)
class FigureSpec:
    name: str
    func: Callable
    title: str
    needs: str  # what data it needs, in words (shown by --list and in the docs)
    per_run: bool = False


# Every figure, by name; the family modules register theirs (imported in FAMILIES order).
FIGURES: Registry = Registry("figure", modules=tuple(f"neurocl.figures.{family}" for family in FAMILIES))


def register(name: str, *, title: str, needs: str, per_run: bool = False):
    """Decorator adding a figure function under ``name``."""

    def deco(func: Callable) -> Callable:
        FIGURES.register(FigureSpec(name=name, func=func, title=title, needs=needs, per_run=per_run), name=name)
        return func

    return deco


def figures() -> dict[str, FigureSpec]:
    """Every registered figure, in registry order."""
    return dict(FIGURES)
