"""Tidy tables over many stored runs."""

from __future__ import annotations

import json

from pathlib import Path

import pandas as pd

from .store import iter_runs


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their JSON-like repr to stay one column."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = repr(v) if any(isinstance(x, (dict, list)) for x in v) else ",".join(map(str, v))
        else:
            out[key] = v
    return out


def load(root: str | Path, include_unfinished: bool = False) -> pd.DataFrame:
    """One row per run and metric row, with the configuration flattened into dotted columns.

    Columns: ``run_id``, ``status``, the metric columns (task, epoch, global_epoch, eval_task,
    metric, layer, value) and ``config.*``.
    """
    frames = []
    for rd in iter_runs(root):
        status = rd.status()
        if status != "done" and not include_unfinished:
            continue
        if not rd.metrics.exists():
            continue
        m = pd.read_parquet(rd.metrics)
        names = json.loads(rd.summary.read_text()).get("task_names") if rd.summary.exists() else None
        if names and "eval_task" in m:
            # The evaluated task's name (the protocol's, or derived from its classes or env);
            # runs stored before names were recorded have none, and figures then say "task j".
            m["eval_task_name"] = m["eval_task"].map(lambda j: names[int(j)] if pd.notna(j) and 0 <= int(j) < len(names) else None)
        cfg = flatten(json.loads(rd.config.read_text()), "config.")
        m.insert(0, "run_id", rd.id)
        m.insert(1, "status", status)
        cfg_frame = pd.DataFrame([cfg] * len(m), index=m.index)
        frames.append(pd.concat([m, cfg_frame], axis=1))
    if not frames:
        return pd.DataFrame(columns=["run_id", "status", "task", "epoch", "global_epoch", "eval_task", "metric", "layer", "value"])
    return pd.concat(frames, ignore_index=True)


def summaries(root: str | Path) -> pd.DataFrame:
    """One row per finished run: scalar summary metrics and the flattened configuration."""
    rows = []
    for rd in iter_runs(root):
        if not rd.is_done():
            continue
        s = json.loads(rd.summary.read_text())
        row = {"run_id": rd.id}
        row.update({k: v for k, v in s.items() if not isinstance(v, (list, dict))})
        row.update(flatten(json.loads(rd.config.read_text()), "config."))
        rows.append(row)
    return pd.DataFrame(rows)


SUMMARY_METRICS = ("final_average_accuracy", "backward_transfer", "forgetting")


def condition_table(root: str | Path, by: list[str] | None = None, metrics=SUMMARY_METRICS) -> pd.DataFrame:
    """Mean, sd and number of runs of each summary metric per condition.

    A condition is a combination of the configuration values in ``by`` (dotted keys, with or
    without ``config.``); by default every configuration key whose value differs between the
    store's finished runs, except the seed, so that "mean +- sd over seeds per rule" is
    ``condition_table(store)`` on a sweep over rules and seeds.
    """
    runs = summaries(root)
    if runs.empty:
        return pd.DataFrame(columns=["condition", "runs"])
    config_cols = [c for c in runs.columns if c.startswith("config.")]
    if by is None:
        keys = [c for c in config_cols if c != "config.seed" and runs[c].astype(str).nunique() > 1]
    else:
        keys = [k if k.startswith("config.") else f"config.{k}" for k in by]
        unknown = [k for k in keys if k not in runs.columns]
        if unknown:
            raise KeyError(f"no run has {', '.join(k[len('config.'):] for k in unknown)}; "
                           f"keys that vary: {', '.join(c[7:] for c in config_cols if runs[c].astype(str).nunique() > 1)}")
    label = (runs[keys].apply(lambda r: " ".join(f"{k[7:]}={_short(v)}" for k, v in r.items()), axis=1)
             if keys else pd.Series("all runs", index=runs.index))
    rows = []
    for condition, group in runs.groupby(label, sort=True):
        row = {"condition": condition, "runs": len(group)}
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce") if m in group else pd.Series(dtype=float)
            row[f"{m} mean"] = values.mean()
            row[f"{m} sd"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _short(value) -> str:
    """A configuration value as a condition's label shows it: a list of rules (flattened to its
    repr) as ``[ewc(lambda=100), replay(memory=500)]``, anything else as it is."""
    import ast

    if isinstance(value, str) and value.startswith("[{"):
        try:
            items = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if all(isinstance(i, dict) and "name" in i for i in items):
            return "[" + ", ".join(
                i["name"] + ("(" + ", ".join(f"{k}={v}" for k, v in i.items() if k != "name") + ")" if len(i) > 1 else "")
                for i in items) + "]"
    return str(value)
