"""Drawing every registered figure from stored results into a directory, with a manifest.

For each figure: the image (``NAME.FMT``), the CSV of exactly the numbers it plots
(``NAME.csv``), and an entry in ``manifest.json`` with each file's sha256 and the run ids it
shows. Figures whose data is missing are listed under ``skipped`` with their reason. The
manifest holds no timestamps, so the whole directory is byte-identical for the same inputs.
It describes exactly what this build wrote; files of earlier builds (another format, figures
left out by ``--only``) are left alone, never deleted.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd

from .. import __version__
from ..store import atomic_write_json
from . import determinism
from .inputs import read_source, select_runs
from .registry import FIGURES, Skip, figures
from .style import figure_style

MANIFEST = "manifest.json"


def select(only: list[str] | None) -> list[str]:
    """Registered names to draw, in registry order; unknown names are an error."""
    known = list(figures())
    if not only:
        return known
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ValueError("; ".join(FIGURES.unknown(n) for n in unknown))
    return [n for n in known if n in set(only)]


def run_groups(raw: pd.DataFrame, pattern: str, runs: list[str] | None = None) -> dict[str, list[str]]:
    """Run names of the table ``raw`` (:func:`read_raw`) grouped by the part of each name that
    the regular expression ``pattern`` matches at its start (its first group if it has one):
    ``r\\d+`` puts r5-naive and r5-ewc in group r5. Names it does not match are left out."""
    rx = re.compile(pattern)
    df = select_runs(raw, runs)
    groups: dict[str, list[str]] = {}
    for name in sorted(df["config.name"].astype(str).unique()):
        m = rx.match(name)
        if m:
            key = m.group(1) if rx.groups else m.group(0)
            groups.setdefault(key, []).append(name)
    if not groups:
        raise ValueError(f"--split '{pattern}' matches the start of no run name")
    bad = [k for k in groups if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", k)]
    if bad:
        raise ValueError(f"--split '{pattern}' gives groups that are not folder names: {', '.join(bad)}")
    return groups


def generate(source: str | Path, out: str | Path, only: list[str] | None = None, style: str = "paper",
             fmt: str = "png", runs: list[str] | None = None, raw: pd.DataFrame | None = None) -> dict:
    """Draw the figures of the results at ``source`` into ``out``; return the manifest.

    ``runs``: glob patterns on run names; only those runs are drawn. ``raw``: the table
    :func:`read_raw` already read for ``source`` (drawing several groups reads it once).
    """
    if fmt not in determinism.FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(determinism.FORMATS)})")
    names = select(only)
    df, art = read_source(source, runs, raw=raw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = figures()
    drawn, skipped = [], []
    for name in names:
        spec = specs[name]
        with figure_style(style):
            try:
                outputs = spec.func(df, art)
            except Skip as reason:
                skipped.append({"name": name, "reason": _one_line(str(reason))})
                continue
            for o in outputs:
                stem = f"{name}-{o.suffix}" if o.suffix else name
                files = {
                    f"{stem}.{fmt}": determinism.figure_bytes(o.figure, fmt),
                    f"{stem}.csv": determinism.csv_bytes(o.data),
                }
                entry = {"name": stem, "figure": name, "title": spec.title, "inputs": sorted(o.inputs), "files": []}
                for fname, blob in files.items():
                    entry["files"].append({"path": fname, "sha256": determinism.write(out / fname, blob)})
                drawn.append(entry)
    manifest = {
        "style": style,
        "format": fmt,
        "neurocl": __version__,
        "matplotlib": matplotlib.__version__,  # rendering details can change between versions
        "inputs": sorted(df["run_id"].unique().tolist()),
        "figures": drawn,
        "skipped": skipped,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no reason given"
