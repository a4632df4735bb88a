"""The training runner: one loop for every model, rule and scenario.

Trains the task sequence, evaluates every task after every epoch, and leaves a complete,
crash-safe record in the store. A killed run resumes from its last task boundary and ends
with the same accuracy matrix as an uninterrupted one (bit-identical on CPU). The runner holds
the loop; evaluation (neurocl/evaluation.py), recording (neurocl/recording.py), checkpoints
(neurocl/checkpoints.py) and the task sequence (neurocl/data/sequence.py) live beside it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .data import TaskSplit, find_dataset
from .data.sequence import build_tasks, class_masks, concat_splits, task_epochs
from .evaluation import Evaluator
from .migrate import describe, open_store
from .models import build_model
from .progress import EpochProgress
from .protocol import config_run_id, device_problem, load_protocol, resolved_config
from .recording import Recorder, run_summary, start_attempt
from .rules import build_rules
from .rules.base import Batch, Context
from .store import RunDir, Store, atomic_write_json, run_lock, storage_problem
from .training import batch_loss, correct_counts, lean_optimizer, masked_logits, outputs_for_targets, prepare_gradients

log = logging.getLogger("neurocl.run")


class CannotStart(RuntimeError):
    """This machine cannot start the run (a device it does not have); nothing was written."""


class RunBusy(RuntimeError):
    """Another process is running this run (it holds the run's lock)."""


class RunFailed(RuntimeError):
    """A run stopped for a reason recorded in its FAILED marker (e.g. a diverging loss)."""

    def __init__(self, reason: str, run_dir: RunDir | None = None):
        super().__init__(reason)
        self.reason = reason
        self.run_dir = run_dir


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    o = cfg.optimizer
    # fused=None, not False, when off: torch then picks its default step (bit for bit as before).
    fused = True if o.fused else None
    if o.name == "adam":
        make = lambda: torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=cfg.weight_decay,  # noqa: E731
                                        fused=fused)
    elif o.name == "sgd":
        make = lambda: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=cfg.weight_decay, fused=fused)  # noqa: E731
    else:
        make = lambda: torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum,  # noqa: E731
                                           weight_decay=cfg.weight_decay)
    return lean_optimizer(make)


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
    """One run: sets up the model, rules and optimiser, trains task after task, and finishes."""

    def __init__(self, proto, out: str | Path):
        self.proto = proto
        self.config = resolved_config(proto)
        self.id = config_run_id(self.config)
        self.rd = Store(out).run(self.id)
        self.recorder = Recorder(self.rd, proto.recording)

    def save_checkpoint(self, task: int, global_epoch: int) -> None:
        save_checkpoint(self.rd, task, global_epoch, model=self.model, optimizer=self.optimizer, rules=self.rules,
                        generator=self.generator, recorder=self.recorder, keep=self.proto.execution.keep_checkpoints)

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
        train_mask = self.train_mask.to(self.device)
        for b, start in enumerate(range(0, n, cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            part = data.subset(idx)
            batch = Batch(
                x=part.x.to(self.device), y=part.y.to(self.device), task=task_ids[idx].to(self.device),
                mask=None if part.mask is None else part.mask.to(self.device),
            )
            for rule in self.rules:
                batch = rule.mix_batch(batch, self.ctx)
            task_loss, z, states = batch_loss(self.model, batch, train_mask)
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
            prepare_gradients(self.model, params, cfg.grad_clip)  # cSGD (dale: dann), then the clip
            for rule in self.rules:
                rule.before_step(self.ctx)
            self.optimizer.step()
            for rule in self.rules:
                rule.after_step(self.ctx)
            self.ctx.step += 1
            with torch.no_grad():
                # Replay appends its examples after the real ones: accuracy counts the real.
                real = slice(0, len(part))
                logits = masked_logits(outputs_for_targets(z[real], batch.y[real]), train_mask[batch.task[real]])
                c, k = correct_counts(logits, batch.y[real], batch.mask[real] if batch.mask is not None else None)
            correct += c
            count += k
            total += float(task_loss.detach()) * len(part)
        return total / max(n, 1), correct / max(count, 1)

    def _setup(self) -> str:
        """Data, model, rules, optimiser and the rules' context; returns the data's description."""
        proto, ex = self.proto, self.proto.execution
        if ex.threads:
            torch.set_num_threads(ex.threads)
        self.device = torch.device(ex.device)
        self.tasks, data_source = build_tasks(proto)
        self.model = build_model(self.config["model"], seed=proto.seed).to(self.device)
        self.train_mask, aware, agnostic = class_masks(self.tasks, proto.scenario, self.model.n_out)
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
        self.ctx.extra["run_dir"] = self.rd.path
        self.evaluator = Evaluator(proto, self.tasks, self.model, self.rules, self.ctx, aware, agnostic,
                                   self.device, self.recorder.record)
        for rule in self.rules:
            rule.setup(self.ctx)
        return data_source

    def execute(self) -> RunDir:
        proto, record = self.proto, self.recorder.record
        data_source = self._setup()
        done_task, global_epoch = load_checkpoint(self.rd, model=self.model, optimizer=self.optimizer,
                                                  rules=self.rules, generator=self.generator, recorder=self.recorder)
        meta = start_attempt(self.rd, data_source, done_task)
        if done_task < 0 and proto.evaluation.untrained:
            self.evaluator.evaluate_all(task=-1, epoch=-1, global_epoch=0)
        epochs_of = [task_epochs(proto, i) for i in range(len(self.tasks))]
        progress = EpochProgress(sum(epochs_of), proto.execution.progress, desc=proto.name)
        progress.n = sum(epochs_of[: done_task + 1])
        try:
            for i in range(done_task + 1, len(self.tasks)):
                t0 = time.perf_counter()
                self.ctx.task_index = i
                if proto.training.optimizer.reset_each_task and i > 0:
                    self.optimizer = make_optimizer([p for p in self.model.parameters() if p.requires_grad], proto.training)
                    self.ctx.optimizer = self.optimizer
                parts = self.rules[0].task_data(i, self.ctx) if len(self.rules) == 1 else self._task_data(i)
                data, task_ids = concat_splits(parts)
                for rule in self.rules:
                    rule.start_task(i, self.ctx)
                epochs = epochs_of[i]
                for e in range(epochs):
                    global_epoch += 1
                    loss, acc = self.train_epoch(i, e, data, task_ids)
                    record("train_loss", loss, task=i, epoch=e, global_epoch=global_epoch)
                    record("train_acc", acc, task=i, epoch=e, global_epoch=global_epoch)
                    if proto.evaluation.every == "epoch" or e == epochs - 1:
                        accs = self.evaluator.evaluate_all(i, e, global_epoch)
                        msg = f"task {i} epoch {e}: loss {loss:.4f} acc " + " ".join(f"{a:.3f}" for a in accs[: i + 1])
                    else:
                        msg = f"task {i} epoch {e}: loss {loss:.4f}"
                    self.recorder.weights(self.model, i, e, global_epoch)
                    log.info(msg)
                    progress.update(msg)
                for rule in self.rules:
                    rule.end_task(i, self.ctx)
                record("time", time.perf_counter() - t0, task=i, epoch=epochs - 1, global_epoch=global_epoch, eval_task=i)
                self.save_checkpoint(i, global_epoch)
        finally:
            progress.close()
        self.finish(meta)
        return self.rd

    def _task_data(self, i: int):
        chosen = [(i, self.tasks[i].train)]
        for rule in self.rules:
            parts = rule.task_data(i, self.ctx)
            if [j for j, _ in parts] != [i]:
                chosen = parts
        return chosen

    def _rule_metric(self, name: str, value: float, **keys) -> None:
        self.recorder.record(
            name, value, task=keys.get("task", self.ctx.task_index), epoch=keys.get("epoch", -1),
            global_epoch=keys.get("global_epoch", -1), eval_task=keys.get("eval_task", -1), layer=keys.get("layer", ""),
        )

    def finish(self, meta: dict) -> None:
        rd = self.rd
        self.recorder.activity(self.model, self.tasks, self.device)
        df = self.recorder.write_tables()
        atomic_write_json(rd.summary, run_summary(df, self.proto, self.id, self.tasks))
        meta["finished"] = time.time()
        atomic_write_json(rd.meta, meta)
        atomic_write_json(rd.done_marker, {"finished": meta["finished"]})
        rd.running_marker.unlink(missing_ok=True)


def run_protocol(protocol, out: str | Path = "neurocl-out", overrides: list[str] | None = None, retry_failed: bool = False,
                 locked: bool = False) -> RunDir:
    """Run a protocol (a path, a dict or a validated protocol) into the store at ``out``.

    A finished run is not run again; a killed one resumes from its last task boundary; a
    diverging one writes FAILED with the reason and raises :class:`RunFailed`. The run's lock
    is held while it trains (``locked``: the caller holds it already, as a sweep worker does);
    :class:`RunBusy` if another process holds it.
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
    # Raises DatasetNotFound before anything is written: a missing dataset is this machine's
    # problem, not the run's, so it must not leave a FAILED run behind.
    find_dataset(proto.dataset.name, root=proto.dataset.root)
    problem = device_problem(proto)
    if problem is not None:
        raise CannotStart(problem)
    open_store(out, create=True)
    with nullcontext(True) if locked else run_lock(rd, wait_s=0) as free:
        if not free:
            raise RunBusy(f"run {rd.id} is being run by another process ({_holder(rd)}); it resumes or finishes "
                          "there: wait for it, or stop that process and run this command again")
        if rd.is_done():  # finished by the process that held the lock before us
            return rd
        return _execute(runner, rd)


def _holder(rd: RunDir) -> str:
    try:
        marker = json.loads(rd.running_marker.read_text())
        return f"pid {marker['pid']} on {marker['host']}"
    except (OSError, ValueError, KeyError):
        return "its RUNNING marker names none"


def _execute(runner: Runner, rd: RunDir) -> RunDir:
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
        except OSError as err:
            if storage_problem(err) is None:
                log.exception("run crashed")
                mark_failed(rd, f"{type(err).__name__}: {err}")
            raise  # a full or read-only disk is not the run's fault: it resumes once fixed
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
