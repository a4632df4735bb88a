"""Accuracy and loss of every task's test split, as the runner measures them after each epoch."""

from __future__ import annotations

from typing import Callable

import torch

from .training import Batch, correct_counts, masked_logits, outputs_for_targets, per_example_loss


class Evaluator:
    """Evaluates ``model`` (through the rules' ``predict`` first, e.g. supermasks) on each task.

    ``aware`` and ``agnostic`` are the (n_tasks, n_out) output masks of the scenario; ``record``
    takes each number as :meth:`neurocl.recording.Recorder.record` does.
    """

    def __init__(self, proto, tasks, model, rules, ctx, aware: torch.Tensor, agnostic: torch.Tensor,
                 device: torch.device, record: Callable[..., None]):
        self.proto, self.tasks, self.model, self.rules, self.ctx = proto, tasks, model, rules, ctx
        self.aware, self.agnostic, self.device, self.record = aware, agnostic, device, record

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
        """Every task, recorded as ``acc`` and ``test_loss`` (class-incremental runs also record
        ``acc_aware`` and ``acc_agnostic``); returns the accuracies."""
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
