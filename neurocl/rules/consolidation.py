"""Synaptic consolidation: penalties that anchor important parameters to their old values.

Rules: ``l2`` (an anchor to the previous task's parameters), ``ewc`` (diagonal Fisher per task
or merged), ``online-ewc`` (one running Fisher with decay), ``si`` (synaptic intelligence) and
``mas`` (memory-aware synapses). Every rule works on the trainable raw parameters (what the
optimiser changes) and multiplies its importances and anchor differences by the model's
plasticity masks, so absent and fixed synapses of the E/I network never carry importance.

All state (anchors, importances) is plain tensors in dicts and lists, as the task-boundary
checkpoints are read back with ``torch.load(weights_only=True)``. See ``docs/rules.md`` for the
formulas and where neurocl departs from the original papers.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator

# The module, not its names: neurocl.training imports neurocl.rules.base, so it may still be
# initialising when the rule families are imported.
from .. import training
from .base import RULES, Batch, Context, Rule, RuleConfig, parameter_masks, trainable_parameters

TensorDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------- parameter helpers
def snapshot(model) -> TensorDict:
    """Detached copies of the trainable parameters (an anchor, or a start/end point)."""
    return {n: p.detach().clone() for n, p in trainable_parameters(model).items()}


def weighted_squared_distance(params: dict, weights: TensorDict, anchor: TensorDict) -> torch.Tensor:
    """``sum_n sum_ij weights_n * (params_n - anchor_n)^2`` over the parameters in ``weights``."""
    terms = [(weights[n] * (params[n] - anchor[n]).square()).sum() for n in weights]
    return torch.stack(terms).sum()


def _to_device(tensors: TensorDict, device) -> TensorDict:
    return {n: t.to(device) for n, t in tensors.items()}


def _cloned(tensors: TensorDict) -> TensorDict:
    return {n: t.detach().clone() for n, t in tensors.items()}


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------- per-example importance
# An objective maps one example's (loss, outputs, batch) to the scalar whose gradient is measured.
Objective = Callable[[torch.Tensor, torch.Tensor, Batch, Context], torch.Tensor]


def _logits(z: torch.Tensor, batch: Batch, ctx: Context) -> torch.Tensor:
    """The masked logits the training loss reads (last step, or every step for per-step targets)."""
    return training.masked_logits(training.outputs_for_targets(z, batch.y), ctx.class_mask[batch.task])


def _mean_over_loss_steps(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B,) as is; (B, T) averaged over the steps the loss counts (as ``per_example_loss``)."""
    if values.dim() == 1:
        return values
    mask = batch.mask if batch.mask is not None else torch.ones_like(values)
    mask = mask.to(values.dtype)
    return (values * mask).sum(1) / mask.sum(1).clamp_min(1e-12)


def empirical_nll(loss, z, batch, ctx):
    """The training loss with the true label: the empirical Fisher."""
    return loss


def sampled_nll(loss, z, batch, ctx):
    """-log p(y~ | x) with y~ drawn from the model's own (masked) output distribution."""
    logits = _logits(z, batch, ctx)
    probs = F.softmax(logits.detach().double(), dim=-1).cpu()
    flat = probs.reshape(-1, probs.shape[-1])
    # The run's generator (saved in checkpoints) keeps a resumed run identical.
    drawn = torch.multinomial(flat, 1, generator=ctx.generator).reshape(probs.shape[:-1])
    return training.per_example_loss(logits, batch.replace(y=drawn.to(batch.y.device), soft=None, soft_valid=None)).sum()


def r5_log_softmax_sum(loss, z, batch, ctx):
    """Study R5: the sum of the log-softmax outputs over the task's classes (no label at all)."""
    logits = _logits(z, batch, ctx)
    allowed = ctx.class_mask[batch.task].to(logits.dtype)
    if logits.dim() == 3:
        allowed = allowed[:, None, :]
    summed = (F.log_softmax(logits, dim=-1) * allowed).sum(-1)
    return _mean_over_loss_steps(summed, batch).sum()


def output_squared_norm(loss, z, batch, ctx):
    """MAS: the squared L2 norm of the (pre-softmax) outputs the task reads."""
    out = training.outputs_for_targets(z, batch.y)
    allowed = ctx.class_mask[batch.task].to(out.dtype)
    if out.dim() == 3:
        allowed = allowed[:, None, :]
    return _mean_over_loss_steps((out * allowed).square().sum(-1), batch).sum()


def example_indices(n: int, count: int | None, generator: torch.Generator) -> list[int]:
    """All ``n`` examples, or ``count`` of them drawn without replacement."""
    if count is None or count >= n:
        return list(range(n))
    return torch.randperm(n, generator=generator)[:count].tolist()


def mean_per_example_gradient(
    ctx: Context, task_index: int, objective: Objective, count: int | None, reduce: Literal["square", "abs"]
) -> TensorDict:
    """Per trainable parameter: mean over examples of (grad objective)^2 or |grad objective|.

    One example at a time, so this is the mean of per-example squared gradients, not the square
    of a batch gradient (on CPU a plain loop was faster than ``torch.func.vmap`` for every model
    here). The network is measured as it is evaluated (``eval()``: no dropout), through
    ``ctx.loss_fn`` so that the output step and the task's class mask match the trained loss.
    The result is multiplied by the plasticity masks.
    """
    model = ctx.model
    params = trainable_parameters(model)
    names = list(params)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    split = ctx.tasks[task_index].train
    device = _model_device(model)
    chosen = example_indices(len(split), count, ctx.generator)
    was_training = model.training
    model.eval()
    try:
        for i in chosen:
            one = split.subset(slice(i, i + 1))
            batch = Batch(
                x=one.x.to(device), y=one.y.to(device), task=torch.full((1,), task_index, device=device),
                mask=None if one.mask is None else one.mask.to(device),
            )
            loss, z = ctx.loss_fn(model, batch)
            value = objective(loss, z, batch, ctx)
            grads = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    total[n] += g.square() if reduce == "square" else g.abs()
    finally:
        model.train(was_training)
    masks = parameter_masks(model)
    scale = 1.0 / max(len(chosen), 1)
    return {n: total[n] * scale * masks[n].to(total[n].dtype) for n in names}


# ---------------------------------------------------------------------------- configs
class _StrengthConfig(RuleConfig):
    """A rule config with ``lambda`` (a Python keyword, hence the ``lambda_`` attribute)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)
    lambda_: float = Field(1.0, ge=0, alias="lambda")


class _SampleCountConfig(_StrengthConfig):
    """How many of the task's training examples measure the importance."""

    samples: int | None = Field(None, ge=1)
    batches: int | None = Field(None, ge=1)  # in batches of training.batch_size

    @model_validator(mode="after")
    def _one_count(self):
        if self.samples is not None and self.batches is not None:
            raise ValueError("give samples or batches, not both")
        return self

    def example_count(self, ctx: Context) -> int | None:
        if self.batches is not None:
            return self.batches * ctx.protocol.training.batch_size
        return self.samples


FisherKind = Literal["empirical", "sampled", "r5"]
FISHER_OBJECTIVES: dict[str, Objective] = {
    "empirical": empirical_nll,
    "sampled": sampled_nll,
    "r5": r5_log_softmax_sum,
}


class L2Config(_StrengthConfig):
    name: Literal["l2"] = "l2"
    norm: Literal["squared", "unsquared"] = "squared"


class EWCConfig(_SampleCountConfig):
    name: Literal["ewc"] = "ewc"
    lambda_: float = Field(100.0, ge=0, alias="lambda")
    fisher: FisherKind = "empirical"
    mode: Literal["separate", "merged"] = "separate"


class OnlineEWCConfig(_SampleCountConfig):
    name: Literal["online-ewc"] = "online-ewc"
    lambda_: float = Field(100.0, ge=0, alias="lambda")
    fisher: FisherKind = "empirical"
    gamma: float = Field(1.0, ge=0, le=1)


class SIConfig(RuleConfig):
    name: Literal["si"] = "si"
    c: float = Field(0.1, ge=0)
    xi: float = Field(1e-3, gt=0)


class MASConfig(_SampleCountConfig):
    name: Literal["mas"] = "mas"


# ---------------------------------------------------------------------------- rules
class _ConsolidationRule(Rule):
    """Shared plumbing: the model's device for loaded state, and the current parameters."""

    def setup(self, ctx: Context) -> None:
        self._device = _model_device(ctx.model)

    @staticmethod
    def params(ctx: Context) -> dict[str, torch.nn.Parameter]:
        return trainable_parameters(ctx.model)


@RULES.register
class L2(_ConsolidationRule):
    """Anchor every parameter to its value at the end of the previous task.

    ``squared``: ``0.5 * lambda * sum_n ||theta_n - theta*_n||^2``; ``unsquared`` (study R5):
    ``0.5 * lambda * sum_n ||theta_n - theta*_n||``, one Euclidean norm per parameter tensor.
    """

    name = "l2"
    config_class = L2Config

    def __init__(self, config: L2Config):
        super().__init__(config)
        self.anchor: TensorDict | None = None

    def penalty(self, ctx):
        if self.anchor is None:
            return None
        params, masks = self.params(ctx), parameter_masks(ctx.model)
        if self.config.norm == "squared":
            distance = weighted_squared_distance(params, masks, self.anchor)
        else:
            distance = torch.stack(
                [torch.linalg.vector_norm(masks[n] * (params[n] - a)) for n, a in self.anchor.items()]
            ).sum()
        return 0.5 * self.config.lambda_ * distance

    def end_task(self, task_index, ctx):
        self.anchor = snapshot(ctx.model)

    def state_dict(self):
        return {"anchor": None if self.anchor is None else _cloned(self.anchor)}

    def load_state_dict(self, state):
        a = state.get("anchor")
        self.anchor = None if a is None else _to_device(a, self._device)


class _ImportanceAnchors(_ConsolidationRule):
    """A list of (importance, anchor) terms; penalty ``factor * sum_k sum Omega_k (theta - theta*_k)^2``.

    Subclasses say how a task's importance is measured and how it joins the terms.
    """

    penalty_factor = 1.0

    def __init__(self, config):
        super().__init__(config)
        self.terms: list[dict[str, TensorDict]] = []  # [{"importance": ..., "anchor": ...}]

    def penalty(self, ctx):
        if not self.terms:
            return None
        params = self.params(ctx)
        total = torch.stack([weighted_squared_distance(params, t["importance"], t["anchor"]) for t in self.terms]).sum()
        return self.penalty_factor * total

    def merge_into_single_term(self, importance: TensorDict, anchor: TensorDict, decay: float) -> None:
        """One running term: ``Omega <- decay * Omega + importance``, anchored at the newest parameters."""
        if self.terms:
            old = self.terms[0]["importance"]
            importance = {n: decay * old[n] + importance[n] for n in importance}
        self.terms = [{"importance": importance, "anchor": anchor}]

    def state_dict(self):
        return {"terms": [{k: _cloned(v) for k, v in t.items()} for t in self.terms]}

    def load_state_dict(self, state):
        self.terms = [{k: _to_device(v, self._device) for k, v in t.items()} for t in state.get("terms", [])]


@RULES.register
class EWC(_ImportanceAnchors):
    """Elastic weight consolidation (Kirkpatrick et al. 2017) with a diagonal Fisher.

    ``0.5 * lambda * sum_k sum F_k (theta - theta*_k)^2``; ``separate`` keeps a term per past
    task, ``merged`` one term with the summed Fisher anchored at the latest parameters.
    """

    name = "ewc"
    config_class = EWCConfig

    @property
    def penalty_factor(self):
        return 0.5 * self.config.lambda_

    def fisher(self, task_index, ctx) -> TensorDict:
        objective = FISHER_OBJECTIVES[self.config.fisher]
        return mean_per_example_gradient(ctx, task_index, objective, self.config.example_count(ctx), "square")

    def end_task(self, task_index, ctx):
        fisher, anchor = self.fisher(task_index, ctx), snapshot(ctx.model)
        if self.config.mode == "separate":
            self.terms.append({"importance": fisher, "anchor": anchor})
        else:
            self.merge_into_single_term(fisher, anchor, decay=1.0)


@RULES.register
class OnlineEWC(EWC):
    """Online EWC (Schwarz et al. 2018): ``F <- gamma F + F_new``, anchored at the latest parameters."""

    name = "online-ewc"
    config_class = OnlineEWCConfig

    def end_task(self, task_index, ctx):
        self.merge_into_single_term(self.fisher(task_index, ctx), snapshot(ctx.model), decay=self.config.gamma)


@RULES.register
class MAS(_ImportanceAnchors):
    """Memory-aware synapses (Aljundi et al. 2018): ``lambda * sum Omega (theta - theta*)^2``.

    ``Omega`` is the mean over the task's examples of ``|d ||f(x)||^2 / d theta|``, summed over
    tasks (as the paper accumulates it), anchored at the latest parameters.
    """

    name = "mas"
    config_class = MASConfig

    @property
    def penalty_factor(self):
        return self.config.lambda_

    def end_task(self, task_index, ctx):
        omega = mean_per_example_gradient(ctx, task_index, output_squared_norm, self.config.example_count(ctx), "abs")
        self.merge_into_single_term(omega, snapshot(ctx.model), decay=1.0)


@RULES.register
class SI(_ImportanceAnchors):
    """Synaptic intelligence (Zenke, Poole & Ganguli 2017).

    Per step ``omega += -g * delta`` with ``g`` the gradient of the unregularised loss and
    ``delta`` the parameter change the step actually made; at the end of a task
    ``Omega <- max(0, Omega + omega / (Delta^2 + xi))`` with ``Delta`` the change over the task
    (the clipping at 0 as in the authors' code). Penalty ``c * sum Omega (theta - theta*)^2``.

    A step's change is settled at the next step (or at the end of the task), not in
    ``after_step``: by then every rule's ``after_step`` (e.g. the magnitude rule rescaling the
    update) has run, whatever the order of the rules in the protocol.
    """

    name = "si"
    config_class = SIConfig
    needs_task_gradient = True

    def __init__(self, config: SIConfig):
        super().__init__(config)
        self.omega: TensorDict | None = None  # this task's running path integral
        self.task_start: TensorDict | None = None
        self._grad: TensorDict | None = None  # this step's unregularised gradient
        self._pending: tuple[TensorDict, TensorDict] | None = None  # (gradient, parameters before the step)

    @property
    def penalty_factor(self):
        return self.config.c

    def start_task(self, task_index, ctx):
        self.task_start = snapshot(ctx.model)
        params = self.params(ctx)
        self.omega = {n: torch.zeros_like(p) for n, p in params.items()}
        self._pending = None

    def after_task_backward(self, ctx):
        self._grad = {n: p.grad.detach().clone() for n, p in self.params(ctx).items() if p.grad is not None}

    def before_step(self, ctx):
        self.settle(ctx)
        if self._grad is not None:
            self._pending = (self._grad, {n: self.params(ctx)[n].detach().clone() for n in self._grad})
            self._grad = None

    def settle(self, ctx) -> None:
        """Add the last step's ``-g * delta`` to omega, ``delta`` measured now (omega is then complete)."""
        if self._pending is None:
            return
        grad, before = self._pending
        params = self.params(ctx)
        for n, g in grad.items():
            self.omega[n] -= g * (params[n].detach() - before[n])
        self._pending = None

    def end_task(self, task_index, ctx):
        self.settle(ctx)
        masks = parameter_masks(ctx.model)
        end = snapshot(ctx.model)
        importance = {
            n: masks[n] * self.omega[n] / ((end[n] - self.task_start[n]).square() + self.config.xi) for n in end
        }
        self.merge_into_single_term(importance, end, decay=1.0)
        # Zenke et al.'s code clips the accumulated Omega at 0 (a rare negative path integral
        # would otherwise reward moving away from the anchor).
        for t in self.terms[0]["importance"].values():
            t.clamp_(min=0)
        self.omega = {n: torch.zeros_like(t) for n, t in end.items()}

    def state_dict(self):
        state = super().state_dict()
        state["omega"] = None if self.omega is None else _cloned(self.omega)
        state["task_start"] = None if self.task_start is None else _cloned(self.task_start)
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for key in ("omega", "task_start"):
            value = state.get(key)
            setattr(self, key, None if value is None else _to_device(value, self._device))
