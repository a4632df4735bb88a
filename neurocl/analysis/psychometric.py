"""Psychometric curves of a two-choice decision task (NeuroGym's PerceptualDecisionMaking).

Per test trial, the signed coherence is ``+coh`` when the correct response is the task's
second response (output class 2, "right") and ``-coh`` when it is the first (class 1,
"left"); zero-coherence trials are 0 whatever their random label. The network's choice is
the response whose logit, averaged over the trial's response-period steps (the test mask), is
largest: fixation is left out, so every trial gives a choice, and how often the network
kept fixating instead is reported separately (``no_response``). The curve is the fraction of
"right" choices at each signed coherence, with a logistic fit on the single trials,
``P(right) = 1 / (1 + exp(-slope * (c - bias)))``, by maximum likelihood.
"""

from __future__ import annotations


from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from .kinds import ANALYSES, run_tasks

LEFT, RIGHT = 1, 2  # output classes of the first and second response of a two-choice task


# ---------------------------------------------------------------------------- logistic fit
@dataclass(frozen=True)
class LogisticFit:
    bias: float  # signed coherence of indifference (P(right) = 0.5)
    slope: float  # per unit of signed coherence

    def p_right(self, c) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.slope * (np.asarray(c, dtype=float) - self.bias)))


def fit_logistic(x, chose_right, ridge: float = 1e-6, iters: int = 100) -> LogisticFit:
    """Maximum-likelihood logistic regression of ``chose_right`` (0/1) on ``x`` (Newton).

    A tiny ridge keeps the fit finite when the choices are perfectly separable (a perfect
    observer); it is negligible otherwise.
    """
    x = np.asarray(x, dtype=float)
    yv = np.asarray(chose_right, dtype=float)
    X = np.stack([np.ones_like(x), x], 1)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (yv - p) - ridge * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    b0, b1 = w
    return LogisticFit(bias=float(-b0 / b1) if b1 != 0 else float("nan"), slope=float(b1))


# ---------------------------------------------------------------------------- curves
@dataclass
class PsychometricCurve:
    coherence: np.ndarray  # signed coherence levels
    p_right: np.ndarray  # fraction of "right" choices per level
    n: np.ndarray  # trials per level
    fit: LogisticFit
    no_response: float = float("nan")  # fraction of response steps where "fixate" won

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "signed_coherence": self.coherence, "p_right": self.p_right, "n": self.n,
            "fit": self.fit.p_right(self.coherence),
        })


def curve_from_choices(signed_coh, chose_right, no_response: float = float("nan")) -> PsychometricCurve:
    c = np.asarray(signed_coh, dtype=float)
    r = np.asarray(chose_right, dtype=float)
    levels = np.unique(c)
    return PsychometricCurve(
        coherence=levels,
        p_right=np.array([r[c == v].mean() for v in levels]),
        n=np.array([int((c == v).sum()) for v in levels]),
        fit=fit_logistic(c, r),
        no_response=no_response,
    )


def signed_coherence(task) -> np.ndarray:
    """+coh for trials whose correct response is "right" (class 2), -coh for "left"."""
    info = task.meta.get("test_trials", {})
    if "coh" not in info:
        raise ValueError(f"task {task.name!r} has no per-trial coherence (not a perceptual decision task)")
    coh = info["coh"].numpy().astype(float)
    target = info["target"].numpy()
    if not set(np.unique(target)) <= {LEFT, RIGHT}:
        raise ValueError(f"task {task.name!r} is not a two-choice task (targets {sorted(set(target.tolist()))})")
    return np.where(target == RIGHT, coh, -coh)


@torch.no_grad()
def model_choices(model, split, seed: int = 0, batch_size: int = 1000) -> tuple[np.ndarray, float]:
    """(choice class per trial, fraction of response steps where fixation had the top logit).

    The network runs with its own noise, as in the runner's evaluation, under a fixed torch
    seed so the same model gives the same curve.
    """
    was_training = model.training
    model.eval()
    choices, fix_steps, steps = [], 0.0, 0.0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(split), batch_size):
                part = split.subset(slice(start, start + batch_size))
                z = model(part.x.to(next(model.parameters()).device)).float().cpu()
                m = part.step_mask().float()
                mean = (z * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-12)
                choices.append(torch.where(mean[:, RIGHT] > mean[:, LEFT], RIGHT, LEFT))
                fix_steps += float(((z.argmax(-1) == 0).float() * (m > 0)).sum())
                steps += float((m > 0).sum())
    finally:
        model.train(was_training)
    return torch.cat(choices).numpy(), fix_steps / max(steps, 1.0)


def psychometric_curve(model, task, seed: int = 0) -> PsychometricCurve:
    """The psychometric curve of ``model`` on ``task``'s test split."""
    choices, no_response = model_choices(model, task.test, seed=seed)
    return curve_from_choices(signed_coherence(task), choices == RIGHT, no_response)


# ---------------------------------------------------------------------------- stored runs
def model_after_task(run_dir: str | Path, task: int):
    """The network of a stored run as it was after training ``task`` (its boundary checkpoint):
    :func:`neurocl.load_model` ``(run_dir, task=task)``."""
    from ..models import load_model

    return load_model(run_dir, task=task)


def plot_psychometric(curves: dict[str, PsychometricCurve], ax=None):
    """Points (data) and lines (logistic fits), one colour per labelled curve."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3))
    for label, curve in curves.items():
        if np.isfinite(curve.no_response) and curve.no_response > 0.05:
            label = f"{label} (kept fixating {curve.no_response:.0%})"  # a forced, not a free, choice
        (pts,) = ax.plot(curve.coherence, curve.p_right, "o", label=label)
        grid = np.linspace(curve.coherence.min(), curve.coherence.max(), 200)
        ax.plot(grid, curve.fit.p_right(grid), "-", color=pts.get_color())
    ax.axhline(0.5, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("signed coherence (%)")
    ax.set_ylabel('fraction "right" choices')
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    return ax.figure


def run_curves(run_dir: str | Path, task: int = 0, after: list[int] | None = None, seed: int = 0) -> dict[str, PsychometricCurve]:
    """Curves of ``task`` of a stored run after training ``task`` and after the last task.

    The test trials are rebuilt from the run's stored configuration (same seed, same trials).
    """
    _, tasks = run_tasks(run_dir)
    after = [task, len(tasks) - 1] if after is None else after
    return {f"after {tasks[i].name}": psychometric_curve(model_after_task(run_dir, i), tasks[task], seed=seed)
            for i in dict.fromkeys(after)}


@click.command("psychometric")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--task", type=int, default=0, show_default=True, help="The decision task's index.")
@click.option("--after", type=int, multiple=True,
              help="Curves after training these tasks (repeatable). Default: the task itself and the last.")
@click.option("--figure", type=click.Path(dir_okay=False), help="Also draw the curves to this file (png, pdf, svg).")
def psychometric_cmd(run_dir: str, task: int, after: tuple[int, ...], figure: str | None) -> None:
    """Psychometric curves (choice against signed coherence, logistic fit) of a stored cognitive
    run's decision task, after training it and after the last task."""
    try:
        curves = run_curves(run_dir, task, list(after) or None)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    for label, c in curves.items():
        click.echo(f"{label}: slope {c.fit.slope:.3f} /%, bias {c.fit.bias:+.2f}%, no response {c.no_response:.3f}")
        click.echo(c.to_frame().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if figure:
        plot_psychometric(curves).savefig(figure, bbox_inches="tight")
        click.echo(f"wrote {figure}")


ANALYSES.register(psychometric_cmd, name="psychometric")


def main(argv: list[str] | None = None) -> None:
    """``python -m neurocl.analysis.psychometric``, the same as ``neurocl analyse psychometric``."""
    psychometric_cmd.main(args=argv, prog_name="neurocl analyse psychometric")


if __name__ == "__main__":
    main()
