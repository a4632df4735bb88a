"""Lesions: silence a group of units (their outgoing synapses, recurrent and readout) and
measure each task's accuracy, after each task boundary the run kept.

Groups: ``none`` (the intact network, the reference), ``E`` and ``I`` (the E/I network's
excitatory and inhibitory units; a DANN's state units are all excitatory, so it has ``E``
only), and any explicit list of unit indices. The network is evaluated without noise, with the
scenario's output masks, exactly as the runner evaluates it (``evaluation.Evaluator``).

``neurocl analyse lesions RUN`` prints the table and writes ``RUN/analyses/lesions.csv``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click
import pandas as pd
import torch

from .kinds import ANALYSES, run_tasks, write_table


def lesioned(model, units: list[int]):
    """A copy of ``model`` whose ``units`` send nothing: their columns of the effective recurrent
    and readout weights are zero (the network's own weights are untouched)."""
    copy_ = copy.deepcopy(model)
    if not units:
        return copy_
    intact = copy_.effective_weights
    keep = torch.ones(copy_.config.n, dtype=copy_.W_rec.dtype)
    keep[list(units)] = 0

    def effective_weights():
        w = dict(intact())
        w["W_rec"] = w["W_rec"] * keep[None, :]
        w["W_out"] = w["W_out"] * keep[None, :]
        return w

    copy_.effective_weights = effective_weights
    return copy_


def unit_groups(model) -> dict[str, list[int]]:
    """``none``, and the E and I units of the network (a group only where it has units)."""
    exc = (model.sign > 0).nonzero().flatten().tolist() if hasattr(model, "sign") else []
    inh = (model.sign < 0).nonzero().flatten().tolist() if hasattr(model, "sign") else []
    if getattr(model.config, "is_dann", False):
        exc, inh = list(range(model.config.n)), []
    groups = {"none": []}
    groups.update({name: units for name, units in (("E", exc), ("I", inh)) if units})
    return groups


def task_accuracies(model, proto, tasks) -> list[float]:
    """Accuracy on every task's test split, as the runner measures it (noise off)."""
    from ..data.sequence import class_masks
    from ..evaluation import Evaluator

    _, aware, agnostic = class_masks(tasks, proto.scenario, model.n_out)
    model.noise = False
    evaluator = Evaluator(proto, tasks, model, [], None, aware, agnostic, torch.device("cpu"), lambda *a, **k: None)
    primary = "aware" if proto.scenario == "task-incremental" else "agnostic"
    return [evaluator.evaluate(j, primary)[0] for j in range(len(tasks))]


def run_lesions(run_dir: str | Path, groups: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """One row per kept task boundary, lesioned group and evaluated task: the accuracy and its
    drop against the intact network."""
    from ..models import load_model
    from ..store import RunDir

    rd = RunDir(run_dir)
    proto, tasks = run_tasks(rd.path)
    if any(r.name == "supermask" for r in proto.rules):
        raise click.ClickException("lesions of supermask runs are not supported (their predictions go through the masks)")
    rows = []
    for k, task in enumerate(tasks):
        if not rd.checkpoint(k).is_file():
            continue
        model = load_model(rd.path, task=k)
        chosen = groups if groups is not None else unit_groups(model)
        intact = task_accuracies(lesioned(model, []), proto, tasks)
        for name, units in chosen.items():
            accs = intact if not units else task_accuracies(lesioned(model, units), proto, tasks)
            for j, acc in enumerate(accs):
                rows.append({"after_task": task.name, "group": name, "units": len(units), "eval_task": tasks[j].name,
                             "accuracy": acc, "drop": intact[j] - acc})
    return pd.DataFrame(rows)


@click.command("lesions")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def lesions_cmd(run_dir: str) -> None:
    """Accuracy on each task with the E or the I units silenced (their outgoing synapses cut),
    after every task boundary the run kept (all of them with execution.keep_checkpoints: all).
    Writes RUN/analyses/lesions.csv."""
    table = run_lesions(run_dir)
    path = write_table(run_dir, "lesions", table)
    wide = table.pivot_table(index=["after_task", "group"], columns="eval_task", values="accuracy", sort=False)
    click.echo(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {path}")


ANALYSES.register(lesions_cmd, name="lesions")
