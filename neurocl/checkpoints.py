"""Task-boundary checkpoints: everything a killed run needs to resume bit-identically.

A checkpoint holds the model, the optimiser, each rule's state, both random-number generators
and the metric rows recorded so far; it is written atomically after each task (the last one is
kept, or all of them with ``execution.keep_checkpoints: all``) and read with ``weights_only``.
"""

from __future__ import annotations

import logging

import torch

from .recording import Recorder
from .store import RunDir, atomic_torch_save

log = logging.getLogger("neurocl.run")


def save_checkpoint(rd: RunDir, task: int, global_epoch: int, *, model, optimizer, rules, generator: torch.Generator,
                    recorder: Recorder, keep: str) -> None:
    state = {
        "task": task,
        "global_epoch": global_epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rules": [r.state_dict() for r in rules],
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state()},
        **recorder.state(),
    }
    atomic_torch_save(state, rd.checkpoint(task))
    if keep == "last":
        for old in rd.checkpoints.glob("task-*.pt"):
            if old != rd.checkpoint(task):
                old.unlink(missing_ok=True)


def load_checkpoint(rd: RunDir, *, model, optimizer, rules, generator: torch.Generator,
                    recorder: Recorder) -> tuple[int, int]:
    """Restore the last checkpoint; returns (last task done, global epoch), or (-1, 0) if none."""
    found = rd.last_checkpoint()
    if found is None:
        return -1, 0
    task, path = found
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for rule, rs in zip(rules, state["rules"]):
        rule.load_state_dict(rs)
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["generator"])
    recorder.load_state(state)
    log.info("resumed from %s (task %d done)", path.name, task)
    return task, state["global_epoch"]
