"""The learning-rule interface: hooks into the one training loop.

A rule never forks the loop. The runner calls, in order::

    setup(ctx)                       once, after the model and optimiser exist
    task_data(i, ctx)                which (task id, split) pairs task i trains on
    start_task(i, ctx)
      per batch:
        mix_batch(batch, ctx)        replay adds remembered or generated examples
        penalty(ctx)                 added to the loss (consolidation)
        after_task_backward(ctx)     the gradient of the unregularised loss is in .grad
        before_step(ctx) / after_step(ctx)   around optimizer.step()
    end_task(i, ctx)                 with access to the task's data
    state_dict() / load_state_dict() saved in the task-boundary checkpoints

Rules act on the trainable raw parameters and must respect ``model.plasticity_masks()``
(absent and fixed synapses) so that no rule breaks the model's constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ..registry import Registry
from ..training import Batch  # noqa: F401 (part of the rule interface: rules receive batches)

# Every rule, by name; each rule module registers its classes with @RULES.register.
RULES: Registry = Registry("rule", modules=tuple(f"neurocl.rules.{m}" for m in (
    "baseline", "consolidation", "magnitude", "replay", "generative_replay", "supermask")))


class RuleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


@dataclass
class Context:
    """What the runner shares with the rules."""

    model: Any
    optimizer: torch.optim.Optimizer
    tasks: list  # neurocl.data.tasks.Task
    protocol: Any  # the validated protocol
    loss_fn: Any  # loss_fn(model, batch) -> (loss, z)
    class_mask: torch.Tensor  # (n_tasks, n_out) bool: outputs each task may use
    log_metric: Any  # log_metric(name, value, **keys)
    generator: torch.Generator  # the run's generator for sampling (saved in checkpoints)
    task_index: int = 0
    step: int = 0
    extra: dict = field(default_factory=dict)


class Rule:
    """Base class: every hook does nothing."""

    name: ClassVar[str] = "rule"
    config_class: ClassVar[type[RuleConfig]] = RuleConfig
    # True when the rule reads the unregularised gradient in after_task_backward.
    needs_task_gradient: ClassVar[bool] = False

    def __init__(self, config: RuleConfig):
        self.config = config

    def setup(self, ctx: Context) -> None:
        pass

    def task_data(self, task_index: int, ctx: Context) -> list[tuple[int, Any]]:
        return [(task_index, ctx.tasks[task_index].train)]

    def start_task(self, task_index: int, ctx: Context) -> None:
        pass

    def mix_batch(self, batch: Batch, ctx: Context) -> Batch:
        return batch

    def penalty(self, ctx: Context) -> torch.Tensor | None:
        return None

    def after_task_backward(self, ctx: Context) -> None:
        pass

    def before_step(self, ctx: Context) -> None:
        pass

    def after_step(self, ctx: Context) -> None:
        pass

    def end_task(self, task_index: int, ctx: Context) -> None:
        pass

    def predict(self, ctx: Context, x: torch.Tensor, task_index: int) -> torch.Tensor | None:
        """Override evaluation outputs (e.g. a per-task mask); None uses ``model(x)``."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def parameter_masks(model) -> dict[str, torch.Tensor]:
    """0/1 mask per trainable parameter of the entries training may change."""
    masks = model.plasticity_masks() if hasattr(model, "plasticity_masks") else {}
    return {n: masks.get(n, torch.ones_like(p)) for n, p in trainable_parameters(model).items()}

