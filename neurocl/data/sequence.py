"""A protocol's task sequence: the tasks, their output masks per scenario, and epochs per task."""

from __future__ import annotations

import torch

from .datasets import load_dataset
from .tasks import Task, TaskSplit, build_task
from .transforms import TASK_TRANSFORMS


def build_tasks(proto) -> tuple[list[Task], str]:
    """The task sequence of a protocol and a description of the data used."""
    if proto.dataset.name.startswith("cognitive"):
        from .cognitive import build_cognitive_tasks  # NeuroGym: imported only when used

        return build_cognitive_tasks(proto)
    ds = proto.dataset
    raw = load_dataset(ds.name, root=ds.root)
    tasks = []
    for i, t in enumerate(proto.tasks):
        name = t.name or (f"task{i}" if t.classes is None else "-".join(map(str, t.classes)))
        tasks.append(
            build_task(
                raw, name=name, classes=t.classes, relabel=t.relabel, encoding=ds.encoding,
                normalise=ds.normalise, max_train=ds.max_train, max_test=ds.max_test, subset_seed=ds.subset_seed,
                **{key: getattr(t, key) for key in TASK_TRANSFORMS},
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


def concat_splits(parts: list[tuple[int, TaskSplit]]) -> tuple[TaskSplit, torch.Tensor]:
    """One split from (task index, split) parts, with the task index of every example."""
    if len(parts) == 1:
        i, s = parts[0]
        return s, torch.full((len(s),), i, dtype=torch.long)
    xs = torch.cat([s.x for _, s in parts])
    ys = torch.cat([s.y for _, s in parts])
    masks = [s.mask for _, s in parts]
    mask = torch.cat(masks) if all(m is not None for m in masks) else None
    task_ids = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in parts])
    return TaskSplit(x=xs, y=ys, mask=mask), task_ids


def task_epochs(proto, i: int) -> int:
    """Epochs of task i: its own ``epochs`` if set, else ``training.epochs``."""
    own = proto.tasks[i].epochs if i < len(proto.tasks) else None
    return own if own is not None else proto.training.epochs
