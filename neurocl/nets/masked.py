"""Supermask networks (Ramanujan et al. 2020; Wortsman et al. 2020, SupSup): study R4.

The weights are random, frozen and set to a signed constant ``sign(w) * gain / sqrt(fan_in)``;
what a task learns is a binary mask over them, one per task, from a real-valued score tensor
per task and layer (Kaiming-uniform initialisation, as in SupSup):

* ``mask: threshold``: ``scores >= 0`` (study R4);
* ``mask: top-k``: the top ``density`` fraction of ``|scores|`` in each layer (the original
  SupSup code ranks the scores' magnitudes).

The binarisation passes the gradient straight through to the scores. Batch norm (without
affine parameters, as in SupSup) keeps running statistics *per task*, so that a checkpoint
restores every task's network exactly (SupSup's own code shared them and lost task-given
accuracy after reloading).

Which task's mask is active is set with :meth:`MaskedMLP.set_task` (the ``supermask`` rule
drives it). :meth:`MaskedMLP.forward_mixture` computes the superposition ``M = sum_i alpha_i
M_i`` with one alpha per example and task. With batch norm, each task's masked
pre-activation is normalised with that task's statistics before the weighted sum, so that a
one-hot alpha gives exactly that task's network; without batch norm the layer is exactly
``h (W * sum_i alpha_i M_i)^T``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import Strict
from .base import MODEL_KINDS, Model


class MaskedMLPConfig(Strict):
    kind: Literal["masked-mlp"] = "masked-mlp"
    n_in: int = Field(784, ge=1)
    hidden: list[int] = [300, 300]
    n_out: int = Field(100, ge=1)
    n_tasks: int = Field(10, ge=1, description="tasks with their own scores and batch-norm statistics")
    batch_norm: bool = True
    mask: Literal["threshold", "top-k"] = "threshold"
    density: float = Field(0.5, gt=0, le=1, description="fraction of weights kept by top-k masks")
    gain: Literal["relu", "linear"] | float = "relu"
    output: Literal["last", "all"] = "last"
    dtype: Literal["float32", "float64"] = "float32"


class _StraightThrough(torch.autograd.Function):
    """Binary mask forward, identity gradient backward (to the scores)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mode: str, density: float) -> torch.Tensor:
        return binary_mask(scores, mode, density)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def binary_mask(scores: torch.Tensor, mode: str, density: float) -> torch.Tensor:
    """The 0/1 mask (scores' dtype) of one score tensor."""
    if mode == "threshold":
        return (scores >= 0).to(scores.dtype)
    k = max(1, int(round(density * scores.numel())))
    flat = scores.detach().abs().flatten()
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, k, sorted=False).indices] = 1.0
    return keep.view_as(scores)


class MaskedLinear(nn.Module):
    """A linear layer (no bias) over frozen signed-constant weights, one score tensor per task."""

    def __init__(self, n_in: int, n_out: int, n_tasks: int, mode: str, density: float, gain: float):
        super().__init__()
        self.mode, self.density = mode, density
        w = torch.empty(n_out, n_in)
        nn.init.kaiming_normal_(w)
        # A buffer, not a parameter: no optimiser can reach it.
        self.register_buffer("weight", torch.sign(w) * (gain / math.sqrt(n_in)))
        self.scores = nn.ParameterList()
        for _ in range(n_tasks):
            s = torch.empty(n_out, n_in)
            nn.init.kaiming_uniform_(s, a=math.sqrt(5))
            self.scores.append(nn.Parameter(s))

    def mask(self, task: int) -> torch.Tensor:
        """Task ``task``'s mask, differentiable (straight through) to its scores."""
        return _StraightThrough.apply(self.scores[task], self.mode, self.density)

    def forward(self, h: torch.Tensor, task: int) -> torch.Tensor:
        return h @ (self.weight * self.mask(task)).t()

    def forward_fixed_mask(self, h: torch.Tensor, task: int) -> torch.Tensor:
        """As :meth:`forward`, with the mask detached (task inference must not touch scores)."""
        return h @ (self.weight * binary_mask(self.scores[task].detach(), self.mode, self.density)).t()


class MaskedMLP(Model):
    """Masked linear layers (batch norm, ReLU between them) applied at every time step."""

    def __init__(self, config: MaskedMLPConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = int(seed)
        gain = nn.init.calculate_gain(config.gain) if isinstance(config.gain, str) else float(config.gain)
        sizes = [config.n_in, *config.hidden, config.n_out]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.layers = nn.ModuleList(
                MaskedLinear(a, b, config.n_tasks, config.mask, config.density, gain) for a, b in zip(sizes[:-1], sizes[1:])
            )
        # norms[l][t]: the statistics of hidden layer l for task t.
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm1d(h, affine=False) for _ in range(config.n_tasks)) if config.batch_norm else nn.ModuleList()
            for h in config.hidden
        )
        self.active_task = 0
        if config.dtype == "float64":
            self.double()

    @property
    def n_tasks(self) -> int:
        return self.config.n_tasks

    def set_task(self, task: int) -> None:
        if not 0 <= task < self.n_tasks:
            raise IndexError(f"task {task} out of range: the model has masks for {self.n_tasks} tasks (set n_tasks)")
        self.active_task = int(task)

    def layer_names(self) -> list[str]:
        return [f"layer{i}" for i in range(len(self.layers))]

    # ------------------------------------------------------------------ forward passes
    @staticmethod
    def _flatten(u: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if u.dim() == 2:
            u = u[:, None, :]
        b, t = u.shape[:2]
        return u.reshape(b * t, u.shape[2]), (b, t)

    def _normalise(self, a: torch.Tensor, layer: int, task: int, statistics: str = "own") -> torch.Tensor:
        """Batch norm of a task: its own statistics, or the batch's (never updating the running ones)."""
        if not self.config.batch_norm:
            return a
        if statistics == "batch":
            bn = self.norms[layer][task]
            return F.batch_norm(a, None, None, training=True, momentum=0.0, eps=bn.eps)
        return self.norms[layer][task](a)

    def forward(self, u: torch.Tensor, noise=None, return_states: bool = False, task: int | None = None, record: dict | None = None):
        """Outputs of task ``task``'s network (default: the active task).

        ``record``, if given, receives each hidden layer's pre-normalisation activations
        (what batch norm averages), keyed ``layer0``, ``layer1``, ...
        """
        task = self.active_task if task is None else task
        h, (b, t) = self._flatten(u.to(self.layers[0].weight.dtype))
        for i, layer in enumerate(self.layers):
            h = layer(h, task)
            if i < len(self.layers) - 1:
                if record is not None:
                    record[f"layer{i}"] = h.detach().reshape(b, t, -1)
                h = torch.relu(self._normalise(h, i, task))
        z = h.reshape(b, t, -1)
        return (z, None) if return_states else z

    def forward_mixture(
        self, u: torch.Tensor, alpha: torch.Tensor, tasks: list[int], statistics: Literal["own", "batch"] = "own"
    ) -> torch.Tensor:
        """Outputs of the superposition ``sum_i alpha[:, i] M_{tasks[i]}``; alpha (batch, k).

        Masks are detached: only alpha may carry a gradient (task inference). ``statistics``:
        each task's batch norm uses its own running statistics (``own``: a one-hot alpha is
        exactly that task's network) or the batch's (``batch``: every task's activity is
        standardised alike, so a task cannot look confident merely because statistics fitted
        to other inputs inflate its activity; the batch's examples are then coupled).
        """
        h, (b, t) = self._flatten(u.to(self.layers[0].weight.dtype))
        a = alpha.to(h.dtype).repeat_interleave(t, dim=0)  # per example -> per (example, step)
        for i, layer in enumerate(self.layers):
            hidden = i < len(self.layers) - 1
            parts = []
            for j in tasks:
                pre = layer.forward_fixed_mask(h, j)
                parts.append(self._normalise(pre, i, j, statistics) if hidden else pre)
            h = (torch.stack(parts, -1) * a[:, None, :]).sum(-1)
            if hidden:
                h = torch.relu(h)
        return h.reshape(b, t, -1)

    # ------------------------------------------------------------------ per-task state
    @torch.no_grad()
    def task_masks(self, task: int) -> dict[str, torch.Tensor]:
        """Task ``task``'s binary masks, per layer (bool)."""
        return {
            name: binary_mask(layer.scores[task], layer.mode, layer.density).bool()
            for name, layer in zip(self.layer_names(), self.layers)
        }

    def norm_means(self, task: int) -> dict[str, torch.Tensor]:
        """Task ``task``'s batch-norm running means, per hidden layer (empty without batch norm)."""
        if not self.config.batch_norm:
            return {}
        return {f"layer{i}": self.norms[i][task].running_mean.detach().clone() for i in range(len(self.norms))}

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        return [layer.scores[task] for layer in self.layers]

    # ------------------------------------------------------------------ the model interface
    def effective_weights(self) -> dict[str, torch.Tensor]:
        """The active task's masked weights."""
        masks = self.task_masks(self.active_task)
        return {name: layer.weight * masks[name].to(layer.weight.dtype) for name, layer in zip(self.layer_names(), self.layers)}

    def weight_parameter_names(self) -> list[str]:
        return []  # the weights are frozen buffers; training changes scores only

    def frozen_weights(self) -> dict[str, torch.Tensor]:
        """The signed-constant weights this model's seed and sizes define (recomputed)."""
        fresh = MaskedMLP(self.config, seed=self.seed)
        return {name: layer.weight for name, layer in zip(fresh.layer_names(), fresh.layers)}

    def check_constraints(self) -> list[str]:
        problems = []
        for (name, layer), want in zip(zip(self.layer_names(), self.layers), self.frozen_weights().values()):
            w = layer.weight.detach().cpu()
            if not torch.equal(w, want.to(w.dtype)):
                problems.append(f"{name}: the frozen weights changed ({int((w != want).sum())} entries)")
            mag = w.abs()
            if not torch.allclose(mag, mag.flatten()[0].expand_as(mag)):
                problems.append(f"{name}: weights are not a signed constant")
        return problems


MODEL_KINDS.register((MaskedMLPConfig, MaskedMLP), name="masked-mlp")
