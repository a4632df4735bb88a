"""Supermasks in superposition (Wortsman et al. 2020, SupSup), as in study R4.

Needs a supermask model (``kind: masked-mlp``, e.g. the ``supsup-fc300`` preset): frozen
signed-constant weights, one score tensor and one set of batch-norm statistics per task.
The rule

* activates task i's mask at the start of task i, so training changes only task i's scores
  and batch-norm statistics (the gradients of every other task's scores are dropped before
  each optimiser step, so no momentum or weight decay can move them);
* evaluates with the task's own mask when the task is given (``predict(x, i)``), and infers
  the task when it is not (``predict(x, None)``), among the tasks trained so far:

  - ``task_inference: entropy``: SupSup's one-shot method. Superpose every task's network
    with equal weights alpha_i = 1/k, take the gradient of the output entropy with respect
    to alpha and pick the task whose weight most decreases it (the most negative gradient).
    In the superposition batch norm uses the batch's statistics by default
    (``inference_statistics: batch``): with each task's own running statistics, the tasks
    whose statistics do not fit the inputs produce inflated, over-confident activity, and
    the gradient then points away from the right task (measured on permuted MNIST);
  - ``task_inference: most-similar`` (study R4's variant, the reading this package uses):
    alpha one-hot on the task whose batch-norm running means are most similar (cosine,
    averaged over the hidden layers) to the mean pre-normalisation activity of the inputs
    under that task's mask.

  ``infer_per: batch`` infers one task per evaluation batch (SupSup's setting: a batch
  comes from one task), ``example`` one per input;
* optionally starts a new task's scores from a copy of the most similar earlier task's
  (``init_scores: most-similar``: the other reading of R4's variant, "alpha one-hot on the
  most similar earlier task" applied when a task starts rather than at test time).

At the end of training it records (``ctx.log_metric``; pair metrics put the first task in
``task`` and the second in ``eval_task``):

* ``mask_density`` (task, layer); ``mask_jaccard``, ``mask_jaccard_chance``,
  ``mask_jaccard_p`` (task pair, layer): see :mod:`neurocl.analysis.masks`;
* ``bn_mean_cosine`` (task pair, layer): cosine similarity of batch-norm running means;
* ``precision_macro``, ``recall_macro``, ``f1_macro`` (task = the last task, eval_task =
  the task evaluated): macro scores on each task's test split with the task given;
* ``acc_inferred`` and ``task_inference_acc`` (task = the last task, eval_task): accuracy
  with the task inferred (the inferred task's mask and classes, as if it had been given), and
  how often the inferred task is right (per example). With
  ``inference_metrics: every-task`` these are recorded after every task.

The runner already records each task's wall time (metric ``time``); the last task's includes
these end-of-training records, whose duration is recorded as ``analysis_time``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..analysis.masks import macro_scores, mask_overlaps, norm_mean_similarity
from ..training import masked_logits, outputs_for_targets
from .base import RULES, Context, Rule, RuleConfig


class SupermaskConfig(RuleConfig):
    name: Literal["supermask"] = "supermask"
    task_inference: Literal["entropy", "most-similar"] = "entropy"
    infer_per: Literal["batch", "example"] = "batch"
    # Batch norm in the entropy method's superposition: the batch's statistics or each task's own.
    inference_statistics: Literal["batch", "own"] = "batch"
    init_scores: Literal["kaiming", "most-similar"] = "kaiming"
    similarity_examples: int = Field(1000, ge=1, description="inputs of a new task compared (init_scores: most-similar)")
    inference_metrics: Literal["end", "every-task", "never"] = "end"
    analyses: bool = True
    permutation_test: Literal["exact", "monte-carlo"] = "exact"
    n_permutations: int = Field(1000, ge=1)


@contextmanager
def _eval_mode(model):
    """Evaluation mode (batch norm reads, never updates, its statistics), then restore."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


# ---------------------------------------------------------------------------- task inference
def entropy_task_scores(
    model, x: torch.Tensor, tasks: list[int], allowed: torch.Tensor, statistics: str = "batch"
) -> torch.Tensor:
    """(batch, k) d(entropy)/d(alpha_i) at alpha = 1/k: lower means more likely task i.

    The entropy is that of the last step's output over the ``allowed`` classes. With the
    tasks' own batch-norm statistics each example's entropy depends on its own alpha only;
    with the batch's statistics the examples are coupled (by O(1 / batch size)).
    """
    k = len(tasks)
    alpha = torch.full((x.shape[0], k), 1.0 / k, device=x.device, requires_grad=True)
    with torch.enable_grad():
        z = model.forward_mixture(x, alpha, tasks, statistics)[:, -1]
        logp = F.log_softmax(masked_logits(z, allowed.expand(z.shape[0], -1)), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        (grad,) = torch.autograd.grad(entropy.sum(), alpha)
    return grad


def similarity_task_scores(model, x: torch.Tensor, tasks: list[int], per: str) -> torch.Tensor:
    """(batch, k) cosine similarity of pre-normalisation activity to each task's running means."""
    if not model.config.batch_norm:
        raise ValueError("most-similar task inference compares batch-norm statistics: the model has no batch norm")
    columns = []
    for j in tasks:
        record: dict[str, torch.Tensor] = {}
        model(x, task=j, record=record)
        means = model.norm_means(j)
        sims = []
        for name, pre in record.items():
            act = pre.mean(1)  # (batch, units): averaged over steps
            if per == "batch":
                act = act.mean(0, keepdim=True)
            sims.append(F.cosine_similarity(act, means[name].to(act.dtype)[None, :], dim=-1).expand(x.shape[0]))
        columns.append(torch.stack(sims).mean(0))
    return torch.stack(columns, -1)


def infer_tasks(model, x, tasks: list[int], allowed, method: str, per: str, statistics: str = "batch") -> torch.Tensor:
    """The inferred task of every input (batch,), among ``tasks``."""
    if len(tasks) == 1:
        return torch.full((x.shape[0],), tasks[0], dtype=torch.long, device=x.device)
    if method == "entropy":
        scores = -entropy_task_scores(model, x, tasks, allowed, statistics)
        if per == "batch":
            scores = scores.mean(0, keepdim=True).expand_as(scores)
    else:
        scores = similarity_task_scores(model, x, tasks, per)
    return torch.as_tensor(tasks, device=x.device)[scores.argmax(-1)]


# ---------------------------------------------------------------------------- the rule
@RULES.register
class Supermask(Rule):
    """SupSup: a binary mask per task over frozen random weights; task inference by alpha."""

    name = "supermask"
    config_class = SupermaskConfig

    def __init__(self, config: SupermaskConfig):
        super().__init__(config)
        self.current = 0

    def setup(self, ctx: Context) -> None:
        model = ctx.model
        if not hasattr(model, "set_task") or not hasattr(model, "forward_mixture"):
            raise ValueError(
                f"the supermask rule needs a supermask model (kind: masked-mlp, e.g. model: supsup-fc300), "
                f"not {type(model).__name__}"
            )
        if model.n_tasks < len(ctx.tasks):
            raise ValueError(
                f"the model has masks for {model.n_tasks} tasks but the protocol has {len(ctx.tasks)} (set model.n_tasks)"
            )

    def _aware(self, ctx: Context) -> torch.Tensor:
        n_out = ctx.class_mask.shape[1]
        aware = torch.zeros(len(ctx.tasks), n_out, dtype=torch.bool, device=ctx.class_mask.device)
        for j, t in enumerate(ctx.tasks):
            aware[j, list(t.classes)] = True
        return aware

    # ------------------------------------------------------------------ training
    def start_task(self, task_index: int, ctx: Context) -> None:
        self.current = task_index
        ctx.model.set_task(task_index)
        if self.config.init_scores == "most-similar" and task_index > 0:
            source = self.most_similar_earlier_task(task_index, ctx)
            with torch.no_grad():
                for layer in ctx.model.layers:
                    layer.scores[task_index].copy_(layer.scores[source])
            ctx.log_metric("similar_task", source, task=task_index)

    def most_similar_earlier_task(self, task_index: int, ctx: Context) -> int:
        device = ctx.extra.get("device", torch.device("cpu"))
        x = ctx.tasks[task_index].train.x[: self.config.similarity_examples].to(device)
        earlier = list(range(task_index))
        with torch.no_grad(), _eval_mode(ctx.model):
            scores = similarity_task_scores(ctx.model, x, earlier, "batch")
        return earlier[int(scores[0].argmax())]

    def before_step(self, ctx: Context) -> None:
        # Only the active task's scores may move: drop every other task's gradient so that
        # optimiser momentum or weight decay cannot change a finished task's mask.
        for task in range(ctx.model.n_tasks):
            if task != self.current:
                for p in ctx.model.task_parameters(task):
                    p.grad = None

    # ------------------------------------------------------------------ evaluation
    def predict(self, ctx: Context, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        model = ctx.model
        if task_index is not None:
            return model(x, task=task_index)
        inferred = self.infer(ctx, x)
        return self.outputs_for(ctx, x, inferred)

    def infer(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        tasks = list(range(self.current + 1))
        allowed = self._aware(ctx)[: self.current + 1].any(0, keepdim=True)
        with _eval_mode(ctx.model):
            c = self.config
            return infer_tasks(ctx.model, x, tasks, allowed, c.task_inference, c.infer_per, c.inference_statistics)

    @torch.no_grad()
    def outputs_for(self, ctx: Context, x: torch.Tensor, inferred: torch.Tensor) -> torch.Tensor:
        """Each input through its inferred task's network (alpha one-hot on that task)."""
        out = None
        with _eval_mode(ctx.model):
            for task in inferred.unique().tolist():
                rows = inferred == task
                z = ctx.model(x[rows], task=task)
                if out is None:
                    out = z.new_empty((x.shape[0], *z.shape[1:]))
                out[rows] = z
        return out

    # ------------------------------------------------------------------ records
    def end_task(self, task_index: int, ctx: Context) -> None:
        started = time.perf_counter()
        last = task_index == len(ctx.tasks) - 1
        when = self.config.inference_metrics
        if when == "every-task" or (when == "end" and last):
            self.record_inference(task_index, ctx)
        if last and self.config.analyses:
            self.record_analyses(task_index, ctx)
        if last:
            # The runner's `time` of the last task includes these records: say how long they took.
            ctx.log_metric("analysis_time", time.perf_counter() - started, task=task_index)

    def _test_batches(self, ctx: Context, j: int):
        device = ctx.extra.get("device", torch.device("cpu"))
        split = ctx.tasks[j].test
        bs = ctx.protocol.evaluation.batch_size
        for start in range(0, len(split), bs):
            part = split.subset(slice(start, start + bs))
            yield part.x.to(device), part.y.to(device)

    def record_inference(self, task_index: int, ctx: Context) -> None:
        for j in range(task_index + 1):
            right_task = correct = count = 0
            for x, y in self._test_batches(ctx, j):
                inferred = self.infer(ctx, x)
                z = outputs_for_targets(self.outputs_for(ctx, x, inferred), y)
                # As if the inferred task were given: its mask and its classes.
                pred = masked_logits(z, self._aware(ctx)[inferred]).argmax(-1)
                right_task += int((inferred == j).sum())
                correct += int((pred == y).sum()) if y.dim() == 1 else 0
                count += len(y)
            ctx.log_metric("task_inference_acc", right_task / max(count, 1), task=task_index, eval_task=j)
            if ctx.tasks[j].test.y.dim() == 1:
                ctx.log_metric("acc_inferred", correct / max(count, 1), task=task_index, eval_task=j)

    @torch.no_grad()
    def record_analyses(self, task_index: int, ctx: Context) -> None:
        model = ctx.model
        trained = range(task_index + 1)
        masks = [{k: v.cpu() for k, v in model.task_masks(t).items()} for t in trained]
        for t, m in enumerate(masks):
            for layer, mask in m.items():
                ctx.log_metric("mask_density", float(mask.float().mean()), task=t, layer=layer)
        gen = torch.Generator().manual_seed(int(ctx.protocol.seed))
        for row in mask_overlaps(masks, method=self.config.permutation_test, n_permutations=self.config.n_permutations, generator=gen):
            keys = dict(task=row["task_a"], eval_task=row["task_b"], layer=row["layer"])
            ctx.log_metric("mask_jaccard", row["jaccard"], **keys)
            ctx.log_metric("mask_jaccard_chance", row["chance"], **keys)
            ctx.log_metric("mask_jaccard_p", row["p_value"], **keys)
        if model.config.batch_norm:
            for row in norm_mean_similarity([model.norm_means(t) for t in trained]):
                ctx.log_metric("bn_mean_cosine", row["cosine"], task=row["task_a"], eval_task=row["task_b"], layer=row["layer"])
        aware = self._aware(ctx)
        with _eval_mode(model):
            for j in trained:
                if ctx.tasks[j].test.y.dim() != 1:
                    continue
                preds, truth = [], []
                for x, y in self._test_batches(ctx, j):
                    z = outputs_for_targets(model(x, task=j), y)
                    preds.append(masked_logits(z, aware[j].expand(len(y), -1)).argmax(-1).cpu())
                    truth.append(y.cpu())
                scores = macro_scores(torch.cat(truth), torch.cat(preds), labels=list(ctx.tasks[j].classes))
                for name, value in scores.items():
                    ctx.log_metric(name, value, task=task_index, eval_task=j)

    # ------------------------------------------------------------------ checkpoints
    # Scores and per-task batch-norm statistics live in the model's state dict.
    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.current = int(state.get("current", 0))
