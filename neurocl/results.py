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
