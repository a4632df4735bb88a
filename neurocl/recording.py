"""What a run records while it trains: metric rows, weight statistics and histograms, weight
snapshots and hidden activity, and the tables they become in the store."""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__
from .metrics import accuracy_matrix, summary_metrics, weight_statistics
from .store import RunDir, atomic_write_bytes, atomic_write_json

METRIC_COLUMNS = ["task", "epoch", "global_epoch", "eval_task", "metric", "layer", "value"]


class Recorder:
    """The rows of ``metrics.parquet`` and ``histograms.parquet`` as a run produces them."""

    def __init__(self, rd: RunDir, recording):
        self.rd = rd
        self.cfg = recording  # the protocol's RecordingConfig
        self.rows: list[dict] = []
        self.hist_rows: list[dict] = []

    def record(self, metric: str, value: float, *, task: int, epoch: int, global_epoch: int,
               eval_task: int = -1, layer: str = "") -> None:
        self.rows.append(
            dict(task=task, epoch=epoch, global_epoch=global_epoch, eval_task=eval_task, metric=metric, layer=layer,
                 value=float(value))
        )

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        """The rows so far, column-wise (the checkpoint keys ``rows`` and ``hist_rows``)."""
        return {
            "rows": {c: [r[c] for r in self.rows] for c in METRIC_COLUMNS},
            "hist_rows": {k: [r[k] for r in self.hist_rows] for k in (self.hist_rows[0] if self.hist_rows else {})},
        }

    def load_state(self, state: dict) -> None:
        cols = state["rows"]
        self.rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())] if cols else []
        hc = state.get("hist_rows") or {}
        self.hist_rows = [dict(zip(hc, vals)) for vals in zip(*hc.values())] if hc else []

    # ------------------------------------------------------------------ weights and activity
    def weights(self, model, task: int, epoch: int, global_epoch: int) -> None:
        """Statistics, histograms and snapshots of the effective weights, as the protocol asks."""
        rec = self.cfg
        if not (rec.weight_stats or rec.weights or rec.histograms):
            return
        with torch.no_grad():
            weights = {k: v.detach().cpu().double().numpy() for k, v in model.effective_weights().items()}
        conn = getattr(model, "connectivity_mask", None)
        snapshot = {}
        for layer, w in weights.items():
            values = w[conn.cpu().numpy() > 0] if (layer == "W_rec" and conn is not None) else w.ravel()
            if rec.weight_stats:
                for stat, v in weight_statistics(values).items():
                    self.record(f"weight_{stat}", v, task=task, epoch=epoch, global_epoch=global_epoch, layer=layer)
            if rec.histograms:
                counts, edges = np.histogram(values, bins=rec.histogram_bins)
                for k in range(len(counts)):
                    self.hist_rows.append(
                        dict(task=task, epoch=epoch, global_epoch=global_epoch, layer=layer,
                             bin_left=float(edges[k]), bin_right=float(edges[k + 1]), count=int(counts[k]))
                    )
            snapshot[layer] = w.astype(np.float32)
        if rec.weights:
            buf = io.BytesIO()
            np.savez_compressed(buf, **snapshot)
            atomic_write_bytes(self.rd.weight_snapshot(task, epoch), buf.getvalue())

    def activity(self, model, tasks, device) -> None:
        """Inputs, targets, outputs and hidden states of the first test trials of each task."""
        act = self.cfg.activity
        if act.trials <= 0:
            return
        arrays = {}
        model.eval()
        with torch.no_grad():
            for j in act.tasks if act.tasks is not None else range(len(tasks)):
                part = tasks[j].test.subset(slice(0, act.trials))
                z, states = model(part.x.to(device), return_states=True)
                arrays[f"task{j}_u"] = part.x.numpy()
                arrays[f"task{j}_y"] = part.y.numpy()
                arrays[f"task{j}_z"] = z.cpu().numpy()
                for k, v in (states or {}).items():
                    v = torch.stack(v, 1) if isinstance(v, list) else v
                    arrays[f"task{j}_{k}"] = v.cpu().numpy()
        if hasattr(model, "sign"):
            arrays["sign"] = model.sign.cpu().numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.rd.activity, buf.getvalue())

    # ------------------------------------------------------------------ the tables
    def write_tables(self) -> pd.DataFrame:
        """``metrics.parquet`` (and ``histograms.parquet`` if any); returns the metrics."""
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.rd.metrics, buf.getvalue())
        if self.hist_rows:
            buf = io.BytesIO()
            pd.DataFrame(self.hist_rows).to_parquet(buf, index=False)
            atomic_write_bytes(self.rd.histograms, buf.getvalue())
        return df


def run_summary(df: pd.DataFrame, proto, run_id: str, tasks: list) -> dict:
    """``summary.json``: the accuracy matrix and the continual-learning metrics of a run, and
    the tasks' names (the protocol's, or the ones derived from classes or NeuroGym envs)."""
    n_tasks = len(tasks)
    R, b = accuracy_matrix(df, n_tasks)
    summary = {
        "id": run_id, "name": proto.name, "scenario": proto.scenario,
        "rules": [r.name for r in proto.rules], "n_tasks": n_tasks, "task_names": [t.name for t in tasks],
        "accuracy_matrix": R.tolist(), "untrained_accuracy": None if b is None else b.tolist(),
        **summary_metrics(R, b),
    }
    if proto.scenario == "class-incremental":
        Ra, _ = accuracy_matrix(df, n_tasks, metric="acc_aware")
        summary["accuracy_matrix_task_aware"] = Ra.tolist()
        summary["final_average_accuracy_task_aware"] = summary_metrics(Ra, None)["final_average_accuracy"]
    return summary


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def start_attempt(rd: RunDir, data_source: str, done_task: int) -> dict:
    """``meta.json`` with the versions, the data used and one more entry in ``attempts``."""
    meta = json.loads(rd.meta.read_text()) if rd.meta.exists() else {}
    meta.update(
        neurocl_version=__version__, git_revision=_git_revision(), host=socket.gethostname(),
        python=platform.python_version(), torch=torch.__version__, data=data_source,
    )
    meta.setdefault("attempts", []).append(
        {"started": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "resumed_after_task": done_task}
    )
    atomic_write_json(rd.meta, meta)
    return meta
