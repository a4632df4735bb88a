"""Preparing the tidy results table for figures: order, conditions, seeds, accuracy matrices.

A *condition* is a run's configuration without its seed: runs that differ only in their seed
are repeats of one condition, and figures show their mean and spread. Settings that change
what is executed or saved but not what is learned (``execution.*``, ``recording.*``) and the
prose ``description`` are left out too, so that a seed recorded with histograms still groups
with the seeds recorded without.
"""

from __future__ import annotations

import ast
import math

import numpy as np
import pandas as pd

from ..metrics import average_accuracy
from ..recording import METRIC_COLUMNS
from ..results import flatten

NOT_CONDITION_PREFIXES = ("config.execution.", "config.recording.")
NOT_CONDITION = {"config.seed", "config.description"}
# Condition labels name only the settings that vary; a value longer than this is left out of
# the label (a task list, say) unless the label would otherwise be ambiguous.
LONG_VALUE = 32
# What a reader tells conditions apart by first; see _condition_labels.
PRIMARY_COLUMNS = ("config.name", "config.model.kind", "config.rules", "config.dataset.name")


# ---------------------------------------------------------------------------- preparing
def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A sorted copy with rule settings expanded and ``condition`` / ``seed`` columns added.

    Sorting every input the same way is what makes the figures byte-identical whatever the
    order runs were found or rows were written in.
    """
    df = df.copy()
    for col in METRIC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64" if col == "value" else "object")
    # A results table read back from CSV has NaN where the store has "" (no layer).
    df["layer"] = df["layer"].fillna("").astype(str)
    df = _expand_rules(df)
    df = df.sort_values(["run_id", "metric", "task", "epoch", "global_epoch", "eval_task", "layer"], kind="mergesort")
    df = df.reset_index(drop=True)
    runs = _run_rows(df)
    labels, order = _condition_labels(runs)
    df["condition"] = df["run_id"].map(labels)
    df["condition_order"] = df["run_id"].map(order)
    df["seed"] = df["run_id"].map(runs["config.seed"] if "config.seed" in runs else pd.Series(dtype=object))
    return df


def _expand_rules(df: pd.DataFrame) -> pd.DataFrame:
    """``config.rules`` (a list of rule settings, stored as its repr) -> ``config.rules.<i>.<key>``.

    Swept rule settings such as ``config.rules.0.lambda`` then become ordinary columns, and
    ``config.rules`` keeps only the rule names ("naive", "ewc+replay") for labels.
    """
    if "config.rules" not in df.columns:
        return df
    parsed: dict[str, list] = {}
    for text in df["config.rules"].dropna().unique():
        try:
            value = ast.literal_eval(str(text))
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list) and all(isinstance(r, dict) for r in value):
            parsed[text] = value
    if not parsed:
        return df
    extra: dict[str, dict[str, object]] = {}
    for text, rules in parsed.items():
        flat = {}
        for i, rule in enumerate(rules):
            # The names stay in config.rules; a name column would repeat them in labels.
            flat.update(flatten({k: v for k, v in rule.items() if k != "name"}, f"config.rules.{i}."))
        extra[text] = flat
    keys = sorted({k for flat in extra.values() for k in flat})
    new = {k: df["config.rules"].map(lambda t, k=k: extra.get(t, {}).get(k)) for k in keys if k not in df.columns}
    names = df["config.rules"].map(lambda t: "+".join(str(r.get("name")) for r in parsed[t]) if t in parsed else t)
    df = df.assign(**new)
    df["config.rules"] = names
    return df


def _run_rows(df: pd.DataFrame) -> pd.DataFrame:
    config_cols = [c for c in df.columns if c.startswith("config.")]
    return df.drop_duplicates("run_id")[["run_id", *config_cols]].set_index("run_id").sort_index()


def condition_columns(columns) -> list[str]:
    return sorted(
        c for c in columns
        if c.startswith("config.") and c not in NOT_CONDITION and not c.startswith(NOT_CONDITION_PREFIXES)
    )


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """Condition columns whose value differs between runs (missing counts as a value)."""
    return [c for c in condition_columns(runs.columns) if runs[c].map(_key_part).nunique() > 1]


def _key_part(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "<none>"
    return repr(v)


def _sort_part(v):
    """Numbers in numeric order before text; missing last."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0.0, "")
    if isinstance(v, (bool, np.bool_)):
        return (1, 0.0, str(v))
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def format_value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "none"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def short_name(col: str) -> str:
    return col[len("config."):] if col.startswith("config.") else col


def is_numeric_setting(values: pd.Series) -> bool:
    """True for a column of numbers (not booleans) with at least two distinct values."""
    present = [v for v in values.tolist() if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        return False
    return len(set(float(v) for v in present)) > 1


def series_labels(runs: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Per run id, a label naming its values of ``columns`` (long values left out)."""
    cols = [c for c in columns if runs[c].map(lambda v: len(format_value(v))).max() <= LONG_VALUE]

    def label(row) -> str:
        if cols == ["config.rules"]:
            return format_value(row["config.rules"])
        return ", ".join(f"{short_name(c)}={format_value(row[c])}" for c in cols) or "all runs"

    return {rid: label(row) for rid, row in runs.iterrows()}


def _condition_labels(runs: pd.DataFrame) -> tuple[dict, dict]:
    """Per run id: a readable condition label and the condition's position in sort order.

    A label names the settings that tell conditions apart, and no more. The run name, model
    kind, rules and dataset come first, each only where it splits the conditions left by the
    ones before it ("r5-fashion, rules=joint" but plain "r5-naive"). Another setting is named
    when the primaries do not already determine it, and left out of the labels of conditions
    whose whole group lacks it (an LSTM has no ``model.tau``): comparing two protocols whose
    model configurations differ everywhere then still gives short labels.
    """
    if runs.empty:
        return {}, {}
    cond_cols = condition_columns(runs.columns)
    varying = varying_columns(runs)
    keys = {rid: tuple(_key_part(row[c]) for c in cond_cols) for rid, row in runs.iterrows()}
    first = {}
    for rid in runs.index:  # sorted run ids: the representative of each condition is stable
        first.setdefault(keys[rid], rid)
    reps = runs.loc[sorted(set(first.values()))]
    parts = reps[varying].map(_key_part) if varying else reps[[]]

    def determined(col: str, by: list[str]) -> bool:
        """col takes one value within every group of equal ``by`` values."""
        if not by:
            return parts[col].nunique() <= 1
        return bool((parts.groupby(by, sort=False)[col].nunique() <= 1).all())

    primaries: list[str] = []
    for col in PRIMARY_COLUMNS:
        if col in varying and not determined(col, primaries):
            primaries.append(col)
    others = [c for c in varying if c not in PRIMARY_COLUMNS and not determined(c, primaries)
              and reps[c].map(lambda v: len(format_value(v))).max() <= LONG_VALUE]

    def shown(rid) -> list[str]:
        cols = []
        for i, col in enumerate(primaries):
            group = (parts[primaries[:i]] == parts.loc[rid, primaries[:i]]).all(axis=1)
            if parts.loc[group, col].nunique() > 1:
                cols.append(col)
        group = (parts[primaries] == parts.loc[rid, primaries]).all(axis=1)
        return cols + [c for c in others if not (parts.loc[group, c] == "<none>").all()]

    def label(rid) -> str:
        cols = shown(rid)
        texts = [format_value(reps.at[rid, c]) if c == "config.name" else f"{short_name(c)}={format_value(reps.at[rid, c])}"
                 for c in cols]
        if cols == ["config.rules"]:
            return format_value(reps.at[rid, "config.rules"])  # "naive" reads better than "rules=naive"
        if not texts:
            return format_value(reps.at[rid, "config.name"]) if "config.name" in reps else "all runs"
        return ", ".join(texts)

    sort_cols = primaries + [c for c in varying if c not in primaries]
    ordered = sorted(reps.index, key=lambda rid: tuple(_sort_part(reps.at[rid, c]) for c in sort_cols))
    names = {rid: label(rid) for rid in ordered}
    if len(set(names.values())) < len(names):
        # Left-out long settings were what told these apart: number the conditions instead.
        names = {rid: f"{label(rid)} [condition {k}]" for k, rid in enumerate(ordered)}
    by_key = {keys[rid]: (names[rid], k) for k, rid in enumerate(ordered)}
    labels = {rid: by_key[keys[rid]][0] for rid in runs.index}
    order = {rid: by_key[keys[rid]][1] for rid in runs.index}
    return labels, order


# ---------------------------------------------------------------------------- per-run tables
def runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, condition, condition_order, seed and the configuration."""
    cols = ["run_id", "condition", "condition_order", "seed"] + [c for c in df.columns if c.startswith("config.")]
    return df.drop_duplicates("run_id")[cols].sort_values(["condition_order", "seed", "run_id"], kind="mergesort").reset_index(drop=True)


def task_labels(df: pd.DataFrame) -> dict[int, str]:
    """Task index -> the name its runs gave it (first run; stores without names: empty)."""
    if "eval_task_name" not in df or df["eval_task_name"].isna().all():
        return {}
    named = df.dropna(subset=["eval_task", "eval_task_name"])
    named = named[named.run_id == named.run_id.min()]
    return {int(j): str(n) for j, n in zip(named["eval_task"], named["eval_task_name"])}


def conditions(df: pd.DataFrame) -> list[str]:
    """Condition labels in their display order."""
    r = df.drop_duplicates("condition")[["condition", "condition_order"]]
    return r.sort_values("condition_order", kind="mergesort")["condition"].tolist()


def accuracy_matrix(run: pd.DataFrame, metric: str = "acc") -> tuple[np.ndarray, np.ndarray | None]:
    """R[i, j] and the untrained accuracies b of one run, by the runner's own definition."""
    from ..metrics import accuracy_matrix as stored_definition

    acc = run[run.metric == metric]
    n_tasks = int(acc["eval_task"].max()) + 1
    return stored_definition(acc, n_tasks, metric=metric)


def run_summaries(df: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """Per run: the accuracy matrix and average accuracy after each task (long form)."""
    rows = []
    acc = df[df.metric == metric]
    for rid, run in acc.groupby("run_id", sort=True):
        R, _ = accuracy_matrix(run, metric)
        avg = average_accuracy(R)
        base = dict(run_id=rid, condition=run["condition"].iat[0], condition_order=run["condition_order"].iat[0], seed=run["seed"].iat[0])
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                rows.append({**base, "after_task": i, "eval_task": j, "accuracy": R[i, j], "average_accuracy": avg[i]})
    return pd.DataFrame(rows)


def mean_spread(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, sample standard deviation (NaN for one seed) and number of seeds per group."""
    g = frame.groupby(by, sort=False, dropna=False)[value]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n_seeds": g.count()}).reset_index()
    return out


def task_ends(run_or_condition: pd.DataFrame) -> list[float]:
    """Global epochs at which each trained task's last evaluation happened (boundaries)."""
    acc = run_or_condition[(run_or_condition.metric == "acc") & (run_or_condition.task >= 0)]
    if acc.empty:
        return []
    return [float(x) for x in acc.groupby("task", sort=True)["global_epoch"].max().tolist()]


# Layers in the order signals flow through the E/I network; other models' layers follow by name.
LAYER_ORDER = ("W_in", "W_rec", "W_out")


def layer_order(layers) -> list[str]:
    known = [name for name in LAYER_ORDER if name in set(layers)]
    return known + sorted(set(layers) - set(LAYER_ORDER))


def require(df: pd.DataFrame, metrics: list[str] | str, what: str) -> pd.DataFrame:
    """The rows of the given metrics, or a Skip that names them."""
    from .registry import Skip

    metrics = [metrics] if isinstance(metrics, str) else metrics
    rows = df[df.metric.isin(metrics)]
    if rows.empty:
        raise Skip(f"no '{' / '.join(metrics)}' metric in the results; needs {what}")
    return rows
