"""Losses, output masking and evaluation shared by the runner and the rules."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .sim.csgd import apply_csgd


@dataclass
class Batch:
    """One training batch; rules may append examples (replay).

    ``weight`` (N,) gives each example's share of the loss (they sum to 1). ``soft`` (N, C)
    holds soft targets for the rows where ``soft_valid`` is true (distillation of replayed
    inputs); other rows use the hard targets ``y``.
    """

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor  # (N,) task index of each example (for task-incremental masking)
    mask: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    soft_valid: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def weights(self) -> torch.Tensor:
        if self.weight is not None:
            return self.weight
        n = len(self)
        return torch.full((n,), 1.0 / n, dtype=torch.float32, device=self.x.device)

    def replace(self, **kw) -> "Batch":
        return replace(self, **kw)


# A large finite negative logit: masked classes get zero probability without making
# 0 * log(0) a NaN for soft targets.
MASKED_LOGIT = -1e9


def outputs_for_targets(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, T, C) outputs -> (B, C) for one label per sequence (the last step), else as is."""
    return z[:, -1] if y.dim() == 1 else z


def masked_logits(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """``allowed``: (B, C) bool per example; classes outside it cannot be predicted."""
    if allowed is None:
        return logits
    if logits.dim() == 3:
        allowed = allowed[:, None, :]
    return logits.masked_fill(~allowed, MASKED_LOGIT)


def per_example_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy per example (per-step targets averaged over the masked steps)."""
    y = batch.y
    if y.dim() == 1:
        loss = F.cross_entropy(logits, y.clamp_min(0), reduction="none")
        if batch.soft is not None and batch.soft_valid is not None and bool(batch.soft_valid.any()):
            soft_loss = -(batch.soft * F.log_softmax(logits, dim=-1)).sum(-1)
            loss = torch.where(batch.soft_valid, soft_loss, loss)
        return loss
    b, t, c = logits.shape
    ce = F.cross_entropy(logits.reshape(b * t, c), y.reshape(-1).clamp_min(0), reduction="none").reshape(b, t)
    mask = batch.mask if batch.mask is not None else torch.ones_like(ce)
    mask = mask.to(ce.dtype)
    return (ce * mask).sum(1) / mask.sum(1).clamp_min(1e-12)


def batch_loss(model, batch: Batch, class_mask: torch.Tensor, fused: bool = True):
    """Weighted loss of a batch; returns (loss, outputs, states).

    Models with a fused training kernel (the E/I network on the numba backend) compute the
    loss, its gradients and their regulariser in one call from the same ``loss_of_z``; their
    outputs then carry no gradient. ``fused=False`` asks for the plain forward pass, whose
    outputs do (rules that differentiate functions of the outputs need it).
    """

    def loss_of_z(z: torch.Tensor) -> torch.Tensor:
        logits = masked_logits(outputs_for_targets(z, batch.y), class_mask[batch.task])
        per = per_example_loss(logits.float() if logits.dtype == torch.float16 else logits, batch)
        return (batch.weights().to(per.dtype) * per).sum()

    out = model.fused_loss(batch.x, loss_of_z) if fused and hasattr(model, "fused_loss") else None
    if out is not None:
        return out
    z, states = model(batch.x, return_states=True)
    return loss_of_z(z), z, states


def prepare_gradients(model, params, grad_clip: float | None) -> None:
    """Between backward and the optimiser step: cSGD's scaling of a DANN's interneuron gradients
    (``dann.csgd``, :mod:`neurocl.sim.csgd`; nothing for any other model), then the global-norm
    clip, so that the clip sees the scaled gradients (Cornford et al.'s order)."""
    apply_csgd(model)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)


def correct_counts(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[float, float]:
    """(number correct, number counted): per-step targets count the masked steps."""
    pred = logits.argmax(-1)
    if y.dim() == 1:
        return float((pred == y).sum()), float(y.numel())
    m = mask if mask is not None else torch.ones_like(y, dtype=torch.float32)
    m = m.to(torch.float32)
    return float(((pred == y).float() * m).sum()), float(m.sum())


# ---------------------------------------------------------------- the optimiser step
# torch's optimisers import torch._dynamo (about 1 s, the largest single cost of a short run's
# start-up) on their first add_param_group and step, only to mark torch.compile graph breaks
# around them. neurocl never compiles the optimiser: where dynamo is not loaded yet, the methods
# run undecorated (same arithmetic, bit for bit) and the import never happens.
def _undecorated(fn):
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def _skip_dynamo_in_optimizer_methods() -> None:
    """Mark torch.optim.Optimizer's dynamo-disabled methods (add_param_group, zero_grad,
    state_dict, ...) as already disabled, so that their first call imports no dynamo."""
    for name in dir(torch.optim.Optimizer):
        fn = getattr(torch.optim.Optimizer, name, None)
        inner = getattr(fn, "__wrapped__", None)
        code = getattr(fn, "__code__", None)
        if inner is not None and code is not None and code.co_filename.endswith("_compile.py"):
            inner.__dynamo_disable = inner


def _plain_step(optimizer, closure=None):
    with torch.no_grad():  # what torch's wrapper does for a non-differentiable optimiser
        return _undecorated(type(optimizer).step)(optimizer, closure)


def lean_optimizer(make):
    """``make()`` (a torch optimiser), built and stepped without importing torch._dynamo when it
    is not loaded yet; with dynamo loaded (a user compiling), torch's own methods run."""
    if "torch._dynamo" in sys.modules:
        return make()
    _skip_dynamo_in_optimizer_methods()
    optimizer = make()
    if not optimizer.defaults.get("differentiable", False):
        optimizer.step = types.MethodType(_plain_step, optimizer)
    return optimizer
