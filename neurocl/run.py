"""The training runner: one loop for every model, rule and scenario.

Trains the task sequence, evaluates every task after every epoch, and leaves a complete,
crash-safe record in the store. A killed run resumes from its last task boundary and ends
with the same accuracy matrix as an uninterrupted one (bit-identical on CPU).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__
from .data import Task, TaskSplit, build_task, find_dataset, load_dataset
from .metrics import summary_metrics, weight_statistics
from .migrate import describe, open_store
from .models import build_model
from .progress import EpochProgress
from .protocol import config_run_id, load_protocol, resolved_config
from .rules import build_rules
from .rules.base import Batch, Context
from .store import RunDir, Store, atomic_torch_save, atomic_write_bytes, atomic_write_json
from .training import batch_loss, correct_counts, masked_logits, outputs_for_targets, per_example_loss

log = logging.getLogger("neurocl.run")

METRIC_COLUMNS = ["task", "epoch", "global_epoch", "eval_task", "metric", "layer", "value"]


class RunFailed(RuntimeError):
    """A run stopped for a reason recorded in its FAILED marker (e.g. a diverging loss)."""

    def __init__(self, reason: str, run_dir: RunDir | None = None):
        super().__init__(reason)
        self.reason = reason
        self.run_dir = run_dir


# ---------------------------------------------------------------------------- tasks
def build_tasks(proto) -> tuple[list[Task], str]:
    """The task sequence of a protocol and a description of the data used."""
    if proto.dataset.name.startswith("cognitive"):
        from .data.cognitive import build_cognitive_tasks  # noqa: WPS433 (optional dependency)

        return build_cognitive_tasks(proto)
    ds = proto.dataset
    raw = load_dataset(ds.name, root=ds.root)
    tasks = []
    for i, t in enumerate(proto.tasks):
        name = t.name or (f"task{i}" if t.classes is None else "-".join(map(str, t.classes)))
        tasks.append(
            build_task(
                raw, name=name, classes=t.classes, relabel=t.relabel, permutation_seed=t.permutation_seed,
                rotation=t.rotation, encoding=ds.encoding, normalise=ds.normalise,
                max_train=ds.max_train, max_test=ds.max_test, subset_seed=ds.subset_seed,
            )
        )
    return tasks, str(getattr(raw, "source", raw.name))


def class_masks(tasks: list[Task], scenario: str, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, aware, agnostic) masks, each (n_tasks, n_out) bool."""
    n = len(tasks)
    aware = torch.zeros(n, n_out, dtype=torch.bool)
    for i, t in enumerate(tasks):
        aware[i, list(t.classes)] = True
    union = aware.any(0, keepdim=True).expand(n, n_out).clone()
    train = aware if scenario == "task-incremental" else union
    return train, aware, union


def _concat(parts: list[tuple[int, TaskSplit]]) -> tuple[TaskSplit, torch.Tensor]:
    if len(parts) == 1:
        i, s = parts[0]
        return s, torch.full((len(s),), i, dtype=torch.long)
    xs = torch.cat([s.x for _, s in parts])
    ys = torch.cat([s.y for _, s in parts])
    masks = [s.mask for _, s in parts]
    mask = torch.cat(masks) if all(m is not None for m in masks) else None
    task_ids = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in parts])
    return TaskSplit(x=xs, y=ys, mask=mask), task_ids


# ---------------------------------------------------------------------------- run
def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    o = cfg.optimizer
    # fused=None, not False, when off: torch then picks its default step (bit for bit as before).
    fused = True if o.fused else None
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=cfg.weight_decay, fused=fused)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=cfg.weight_decay)


@contextmanager
def _run_logging(rd: RunDir):
    handler = logging.FileHandler(rd.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("neurocl")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


class Runner:
    def __init__(self, proto, out: str | Path):
        self.proto = proto
        self.config = resolved_config(proto)
        self.id = config_run_id(self.config)
        self.rd = Store(out).run(self.id)
        self.rows: list[dict] = []
        self.hist_rows: list[dict] = []

    # ------------------------------------------------------------------ records
    def record(self, metric: str, value: float, *, task: int, epoch: int, global_epoch: int, eval_task: int = -1, layer: str = "") -> None:
        self.rows.append(
            dict(task=task, epoch=epoch, global_epoch=global_epoch, eval_task=eval_task, metric=metric, layer=layer, value=float(value))
        )

    def _rows_table(self) -> dict:
        return {c: [r[c] for r in self.rows] for c in METRIC_COLUMNS}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, task_index: int, mask_kind: str) -> tuple[float, float]:
        """(accuracy, loss) on a task's test split with the aware or agnostic output mask."""
        split = self.tasks[task_index].test
        masks = self.aware if mask_kind == "aware" else self.agnostic
        allowed_row = masks[task_index].to(self.device)
        bs = self.proto.evaluation.batch_size
        correct = count = loss_sum = 0.0
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(split), bs):
                part = split.subset(slice(start, start + bs))
                x, y = part.x.to(self.device), part.y.to(self.device)
                z = None
                for rule in self.rules:
                    z = rule.predict(self.ctx, x, task_index if mask_kind == "aware" else None)
                    if z is not None:
                        break
                if z is None:
                    z = self.model(x)
                logits = masked_logits(outputs_for_targets(z, y), allowed_row.expand(len(part), -1))
                c, n = correct_counts(logits, y, part.mask)
                correct += c
                count += n
                b = Batch(x=x, y=y, task=torch.full((len(part),), task_index), mask=part.mask)
                loss_sum += float(per_example_loss(logits, b).sum())
        finally:
            self.model.train(was_training)
        return correct / max(count, 1), loss_sum / max(len(split), 1)

    def evaluate_all(self, task: int, epoch: int, global_epoch: int) -> list[float]:
        accs = []
        both = self.proto.scenario == "class-incremental"
        for j in range(len(self.tasks)):
            primary = "aware" if self.proto.scenario == "task-incremental" else "agnostic"
            acc, loss = self.evaluate(j, primary)
            self.record("acc", acc, task=task, epoch=epoch, global_epoch=global_epoch, eval_task=j)
            self.record("test_loss", loss, task=task, epoch=epoch, global_epoch=global_epoch, eval_task=j)
            if both:
                acc_aware, _ = self.evaluate(j, "aware")
                self.record("acc_aware", acc_aware, task=task, epoch=epoch, global_epoch=global_epoch, eval_task=j)
                self.record("acc_agnostic", acc, task=task, epoch=epoch, global_epoch=global_epoch, eval_task=j)
            accs.append(acc)
        return accs

    def record_weights(self, task: int, epoch: int, global_epoch: int) -> None:
        rec = self.proto.recording
        if not (rec.weight_stats or rec.weights or rec.histograms):
            return
        with torch.no_grad():
            weights = {k: v.detach().cpu().double().numpy() for k, v in self.model.effective_weights().items()}
        conn = getattr(self.model, "connectivity_mask", None)
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
            import io

            buf = io.BytesIO()
            np.savez_compressed(buf, **snapshot)
            atomic_write_bytes(self.rd.weight_snapshot(task, epoch), buf.getvalue())

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, task: int, global_epoch: int) -> None:
        state = {
            "task": task,
            "global_epoch": global_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rules": [r.state_dict() for r in self.rules],
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "rows": self._rows_table(),
            "hist_rows": {k: [r[k] for r in self.hist_rows] for k in (self.hist_rows[0] if self.hist_rows else {})},
        }
        atomic_torch_save(state, self.rd.checkpoint(task))
        if self.proto.execution.keep_checkpoints == "last":
            for old in self.rd.checkpoints.glob("task-*.pt"):
                if old != self.rd.checkpoint(task):
                    old.unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[int, int]:
        found = self.rd.last_checkpoint()
        if found is None:
            return -1, 0
        task, path = found
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for rule, rs in zip(self.rules, state["rules"]):
            rule.load_state_dict(rs)
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        cols = state["rows"]
        self.rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())] if cols else []
        hc = state.get("hist_rows") or {}
        self.hist_rows = [dict(zip(hc, vals)) for vals in zip(*hc.values())] if hc else []
        log.info("resumed from %s (task %d done)", path.name, task)
        return task, state["global_epoch"]

    # ------------------------------------------------------------------ training
    def _check_loss(self, loss: torch.Tensor, where: str) -> None:
        v = float(loss.detach())
        if not np.isfinite(v) or v > self.proto.training.max_loss:
            raise RunFailed(f"loss diverged ({v}) at {where}", self.rd)

    def train_epoch(self, task_index: int, epoch: int, data: TaskSplit, task_ids: torch.Tensor) -> tuple[float, float]:
        cfg = self.proto.training
        n = len(data)
        order = torch.randperm(n, generator=self.generator)
        total = correct = count = 0.0
        self.model.train()
        needs_split = any(r.needs_task_gradient for r in self.rules)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for b, start in enumerate(range(0, n, cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            part = data.subset(idx)
            batch = Batch(
                x=part.x.to(self.device), y=part.y.to(self.device), task=task_ids[idx].to(self.device),
                mask=None if part.mask is None else part.mask.to(self.device),
            )
            for rule in self.rules:
                batch = rule.mix_batch(batch, self.ctx)
            task_loss, z, states = batch_loss(self.model, batch, self.train_mask.to(self.device))
            where = f"task {task_index}, epoch {epoch}, batch {b}"
            self._check_loss(task_loss, where)
            extra = self.model.regulariser(task_loss, states)
            for rule in self.rules:
                p = rule.penalty(self.ctx)
                if p is not None:
                    extra = extra + p
            self._check_loss(task_loss + extra, where)
            self.optimizer.zero_grad(set_to_none=False)
            if needs_split and extra.requires_grad:
                task_loss.backward(retain_graph=True)
                for rule in self.rules:
                    rule.after_task_backward(self.ctx)
                extra.backward()
            else:
                (task_loss + extra).backward()
                for rule in self.rules:
                    rule.after_task_backward(self.ctx)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            for rule in self.rules:
                rule.before_step(self.ctx)
            self.optimizer.step()
            for rule in self.rules:
                rule.after_step(self.ctx)
            self.ctx.step += 1
            with torch.no_grad():
                # Replay appends its examples after the real ones: accuracy counts the real.
                real = slice(0, len(part))
                logits = masked_logits(outputs_for_targets(z[real], batch.y[real]), self.train_mask.to(self.device)[batch.task[real]])
                c, k = correct_counts(logits, batch.y[real], batch.mask[real] if batch.mask is not None else None)
            correct += c
            count += k
            total += float(task_loss.detach()) * len(part)
        return total / max(n, 1), correct / max(count, 1)

    def execute(self) -> RunDir:
        proto = self.proto
        rd = self.rd
        ex = proto.execution
        if ex.threads:
            torch.set_num_threads(ex.threads)
        self.device = torch.device(ex.device)
        self.tasks, data_source = build_tasks(proto)
        self.model = build_model(self.config["model"], seed=proto.seed).to(self.device)
        n_out = self.model.n_out
        self.train_mask, self.aware, self.agnostic = class_masks(self.tasks, proto.scenario, n_out)
        torch.manual_seed(proto.seed)
        self.generator = torch.Generator().manual_seed(proto.seed)
        self.rules = build_rules(proto.rules)
        self.optimizer = make_optimizer([p for p in self.model.parameters() if p.requires_grad], proto.training)
        self.ctx = Context(
            model=self.model, optimizer=self.optimizer, tasks=self.tasks, protocol=proto,
            # Rules differentiate functions of the outputs (Fisher, MAS): the unfused forward pass.
            loss_fn=lambda model, batch: batch_loss(model, batch, self.train_mask.to(self.device), fused=False)[:2],
            class_mask=self.train_mask.to(self.device), log_metric=self._rule_metric, generator=self.generator,
        )
        self.ctx.extra["device"] = self.device
        self.ctx.extra["run_dir"] = rd.path
        for rule in self.rules:
            rule.setup(self.ctx)

        done_task, global_epoch = self.load_checkpoint()
        meta = json.loads(rd.meta.read_text()) if rd.meta.exists() else {}
        meta.update(
            neurocl_version=__version__, git_revision=_git_revision(), host=socket.gethostname(),
            python=platform.python_version(), torch=torch.__version__, data=data_source,
        )
        meta.setdefault("attempts", []).append(
            {"started": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "resumed_after_task": done_task}
        )
        atomic_write_json(rd.meta, meta)

        if done_task < 0 and proto.evaluation.untrained:
            self.evaluate_all(task=-1, epoch=-1, global_epoch=0)
        epochs_of = [task_epochs(proto, i) for i in range(len(self.tasks))]
        progress = EpochProgress(sum(epochs_of), ex.progress, desc=proto.name)
        progress.n = sum(epochs_of[: done_task + 1])
        try:
            for i in range(done_task + 1, len(self.tasks)):
                t0 = time.perf_counter()
                self.ctx.task_index = i
                if proto.training.optimizer.reset_each_task and i > 0:
                    self.optimizer = make_optimizer([p for p in self.model.parameters() if p.requires_grad], proto.training)
                    self.ctx.optimizer = self.optimizer
                parts = self.rules[0].task_data(i, self.ctx) if len(self.rules) == 1 else self._task_data(i)
                data, task_ids = _concat(parts)
                for rule in self.rules:
                    rule.start_task(i, self.ctx)
                epochs = epochs_of[i]
                for e in range(epochs):
                    global_epoch += 1
                    loss, acc = self.train_epoch(i, e, data, task_ids)
                    self.record("train_loss", loss, task=i, epoch=e, global_epoch=global_epoch)
                    self.record("train_acc", acc, task=i, epoch=e, global_epoch=global_epoch)
                    if proto.evaluation.every == "epoch" or e == epochs - 1:
                        accs = self.evaluate_all(i, e, global_epoch)
                        msg = f"task {i} epoch {e}: loss {loss:.4f} acc " + " ".join(f"{a:.3f}" for a in accs[: i + 1])
                    else:
                        msg = f"task {i} epoch {e}: loss {loss:.4f}"
                    self.record_weights(i, e, global_epoch)
                    log.info(msg)
                    progress.update(msg)
                for rule in self.rules:
                    rule.end_task(i, self.ctx)
                self.record("time", time.perf_counter() - t0, task=i, epoch=epochs - 1, global_epoch=global_epoch, eval_task=i)
                self.save_checkpoint(i, global_epoch)
        finally:
            progress.close()
        self.finish(meta)
        return rd

    def _task_data(self, i: int):
        default = [(i, self.tasks[i].train)]
        chosen = default
        for rule in self.rules:
            parts = rule.task_data(i, self.ctx)
            if [j for j, _ in parts] != [i]:
                chosen = parts
        return chosen

    def _rule_metric(self, name: str, value: float, **keys) -> None:
        self.record(
            name, value, task=keys.get("task", self.ctx.task_index), epoch=keys.get("epoch", -1),
            global_epoch=keys.get("global_epoch", -1), eval_task=keys.get("eval_task", -1), layer=keys.get("layer", ""),
        )

    def record_activity(self) -> None:
        act = self.proto.recording.activity
        if act.trials <= 0:
            return
        import io

        arrays = {}
        self.model.eval()
        with torch.no_grad():
            for j in act.tasks if act.tasks is not None else range(len(self.tasks)):
                part = self.tasks[j].test.subset(slice(0, act.trials))
                z, states = self.model(part.x.to(self.device), return_states=True)
                arrays[f"task{j}_u"] = part.x.numpy()
                arrays[f"task{j}_y"] = part.y.numpy()
                arrays[f"task{j}_z"] = z.cpu().numpy()
                for k, v in (states or {}).items():
                    v = torch.stack(v, 1) if isinstance(v, list) else v
                    arrays[f"task{j}_{k}"] = v.cpu().numpy()
        if hasattr(self.model, "sign"):
            arrays["sign"] = self.model.sign.cpu().numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.rd.activity, buf.getvalue())

    def finish(self, meta: dict) -> None:
        rd = self.rd
        self.record_activity()
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS)
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(rd.metrics, buf.getvalue())
        if self.hist_rows:
            buf = io.BytesIO()
            pd.DataFrame(self.hist_rows).to_parquet(buf, index=False)
            atomic_write_bytes(rd.histograms, buf.getvalue())
        R, b = accuracy_matrix(df, len(self.tasks))
        summary = {
            "id": self.id,
            "name": self.proto.name,
            "scenario": self.proto.scenario,
            "rules": [r.name for r in self.proto.rules],
            "n_tasks": len(self.tasks),
            "accuracy_matrix": R.tolist(),
            "untrained_accuracy": None if b is None else b.tolist(),
            **summary_metrics(R, b),
        }
        if self.proto.scenario == "class-incremental":
            Ra, _ = accuracy_matrix(df, len(self.tasks), metric="acc_aware")
            summary["accuracy_matrix_task_aware"] = Ra.tolist()
            summary["final_average_accuracy_task_aware"] = summary_metrics(Ra, None)["final_average_accuracy"]
        atomic_write_json(rd.summary, summary)
        meta["finished"] = time.time()
        atomic_write_json(rd.meta, meta)
        atomic_write_json(rd.done_marker, {"finished": meta["finished"]})
        rd.running_marker.unlink(missing_ok=True)


def task_epochs(proto, i: int) -> int:
    """Epochs of task i: its own ``epochs`` if set, else ``training.epochs``."""
    own = proto.tasks[i].epochs if i < len(proto.tasks) else None
    return own if own is not None else proto.training.epochs


def accuracy_matrix(df: pd.DataFrame, n_tasks: int, metric: str = "acc") -> tuple[np.ndarray, np.ndarray | None]:
    """R[i, j] from the last evaluation after training task i; b from the untrained network."""
    acc = df[df.metric == metric]
    R = np.full((n_tasks, n_tasks), np.nan)
    for i in range(n_tasks):
        rows = acc[acc.task == i]
        if rows.empty:
            continue
        last = rows[rows.global_epoch == rows.global_epoch.max()]
        for _, r in last.iterrows():
            R[i, int(r.eval_task)] = r.value
    untrained = acc[acc.task == -1]
    b = None
    if not untrained.empty:
        b = np.full(n_tasks, np.nan)
        for _, r in untrained.iterrows():
            b[int(r.eval_task)] = r.value
    return R, b


def run_protocol(protocol, out: str | Path = "neurocl-out", overrides: list[str] | None = None, retry_failed: bool = False) -> RunDir:
    """Run a protocol (a path, a dict or a validated protocol) into the store at ``out``.

    A finished run is not run again; a killed one resumes from its last task boundary; a
    diverging one writes FAILED with the reason and raises :class:`RunFailed`.
    """
    proto = protocol if hasattr(protocol, "model_dump") else load_protocol(protocol, overrides)
    migrated = open_store(out)  # a store of an older neurocl: its runs under today's ids first
    if migrated is not None:
        log.warning("%s", describe(migrated, out))
    runner = Runner(proto, out)
    rd = runner.rd
    if rd.is_done():
        log.info("run %s is already done", rd.id)
        return rd
    if rd.is_failed():
        if not retry_failed:
            raise RunFailed(f"run {rd.id} failed before: {rd.failure_reason()} (use --retry-failed to run it again)", rd)
        rd.failed_marker.unlink()
    if not proto.dataset.name.startswith("cognitive"):
        # Raises DatasetNotFound before anything is written: a missing dataset is this
        # machine's problem, not the run's, so it must not leave a FAILED run behind.
        find_dataset(proto.dataset.name, root=proto.dataset.root)
    open_store(out, create=True)
    rd.path.mkdir(parents=True, exist_ok=True)
    if not rd.config.exists():
        atomic_write_json(rd.config, runner.config)
    atomic_write_json(rd.running_marker, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    with _run_logging(rd):
        try:
            return runner.execute()
        except RunFailed as err:
            log.error("run failed: %s", err.reason)
            mark_failed(rd, err.reason)
            raise
        except Exception as err:
            log.exception("run crashed")
            mark_failed(rd, f"{type(err).__name__}: {err}")
            raise


def mark_failed(rd: RunDir, reason: str) -> None:
    atomic_write_json(rd.failed_marker, {"reason": reason, "time": time.time()})
    rd.running_marker.unlink(missing_ok=True)


def load_run(path: str | Path) -> dict[str, Any]:
    """Config, summary and metrics of one stored run."""
    rd = RunDir(path)
    return {
        "config": json.loads(rd.config.read_text()),
        "summary": json.loads(rd.summary.read_text()) if rd.summary.exists() else None,
        "metrics": pd.read_parquet(rd.metrics) if rd.metrics.exists() else None,
        "status": rd.status(),
    }
