"""What ``neurocl figures DIR`` reads: a run directory, a store (or sweep), or a results table."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pandas as pd

from ..results import load
from ..store import iter_runs
from .artifacts import Artifacts
from .data import prepare

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class InputError(ValueError):
    """The input path is not something figures can be drawn from."""


def read_raw(path: str | Path) -> pd.DataFrame:
    """The finished runs' tidy table under ``path`` (a store, a run, or a results table)."""
    path = Path(path)
    if path.is_file():
        return _read_table(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    df = load(path)  # finished runs only: an unfinished run has no complete record
    if df.empty:
        raise InputError(f"{path}: no finished runs (expected a run directory or a store with runs/)")
    return df


def select_runs(df: pd.DataFrame, patterns: list[str] | None) -> pd.DataFrame:
    """The rows of runs whose name matches one of the glob ``patterns`` (all rows if none)."""
    if not patterns:
        return df
    if "config.name" not in df.columns:
        raise InputError("the results hold no run names (config.name), so --runs cannot select")
    names = df["config.name"].astype(str)
    keep = names.map(lambda n: any(fnmatch.fnmatchcase(n, p) for p in patterns))
    if not keep.any():
        raise InputError(f"no finished run is named like {', '.join(patterns)} (names: {', '.join(sorted(names.unique()))})")
    return df[keep]


def read_source(path: str | Path, runs: list[str] | None = None,
                raw: pd.DataFrame | None = None) -> tuple[pd.DataFrame, Artifacts]:
    """The prepared tidy table and the artefacts of the finished runs under ``path``.

    ``runs``: glob patterns on run names (``r5-*``); conditions are then labelled among the
    selected runs only. ``raw``: the table :func:`read_raw` already read for ``path``.
    """
    path = Path(path)
    df = select_runs(read_raw(path) if raw is None else raw, runs)
    if path.is_file():
        return prepare(df), Artifacts.none(
            "the input is a results table: run artefacts (histograms, weights, activity, checkpoints) "
            "need the store directory"
        )
    dirs = {rd.id: rd.path for rd in iter_runs(path) if rd.id in set(df["run_id"])}
    return prepare(df), Artifacts(dirs)


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        # Dtypes are inferred per column; "layer" must stay text ("" means no layer).
        df = pd.read_csv(path, dtype={"layer": str, "run_id": str, "metric": str})
    elif path.suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        raise InputError(f"{path}: a results table must be .csv or .parquet (from `neurocl results`)")
    missing = {"run_id", "metric", "value"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: not a results table (missing columns {', '.join(sorted(missing))})")
    if "status" in df.columns:
        df = df[df["status"].fillna("done") == "done"]
    return df
