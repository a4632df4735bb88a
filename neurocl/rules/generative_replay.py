"""Deep generative replay (Shin et al. 2017), as in study R1.

A *scholar* is a generator plus a solver. After task i the rule keeps a scholar made of

* a generator trained on task i's inputs mixed with samples of the previous generator
  (real : replayed = 1 : ``replayed_per_real``, 1 : 9 by default, or 1 : i with ``tasks``
  so that every task is equally represented), so it covers tasks 0..i; it trains for
  ``epochs`` passes over the real images or a fixed number of updates (``steps``);
* the previous solver: a frozen copy of the model as it was at the end of task i.

Task i + 1's solver learns ``r * CE(real) + (1 - r) * L(replayed)`` on generated inputs
labelled by the previous solver, ``solver_replayed_per_real`` of them per real example (the
generator's mix by default), r the fraction of real data in the mix unless ``real_weight``
sets it. Two readings of "the solver is trained on the same mix" (study R1):

* ``solver_mix: dataset`` (the default and R1's protocols): at the start of the task the
  scholar generates and labels one replay set, which the runner shuffles together with the
  task's data; batches hold real and replayed rows in proportion, an epoch has 1 + k times
  as many steps, and each batch's mean loss gives r = the fraction of real data;
* ``solver_mix: batch``: every real batch of n examples gets k n freshly generated inputs
  appended (as many steps as without replay; the real rows share r of the loss).

L is the cross-entropy to the previous solver's hard labels (``targets: hard``) or, in batch
mode, to its softmax at a temperature (``targets: soft``; the student's logits are not scaled).
In dataset mode the runner's ``train_acc`` counts the replayed rows too.

Generators work in image space, in [0, 1]: the task's encoded inputs are decoded back to
images to train them (:func:`neurocl.data.encodings.decode`), and generated images go
through the protocol's encoding and normalisation like real ones, so the same rule replays
to an MLP (flat), the LSTM or the E/I network (rows as time steps).

Which outputs label a replayed input: in class-incremental learning the classes of every
earlier task; in task- and domain-incremental learning each replayed input is assigned a
uniformly random earlier task (the generator does not know which task an image belongs to)
and labelled within that task's classes; that task id is also what masks its loss.
"""

from __future__ import annotations

import copy
import logging
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from ..data.encodings import decode, encode
from ..data.tasks import TaskSplit
from ..nets.generators import build_generator
from ..progress import EpochProgress
from ..training import masked_logits, outputs_for_targets
from .base import RULES, Batch, Context, Rule, RuleConfig
from .replay import append_replayed

log = logging.getLogger("neurocl.rules.generative_replay")

# Replayed inputs generated and labelled at a time (bounds the memory of a replay set).
REPLAY_CHUNK = 2048

GENERATOR_DEFAULTS = {
    "gan": {"latent": 100, "hidden": [32, 64, 128], "lr": 2e-4},
    "vae": {"latent": 16, "hidden": [256], "lr": 1e-3},
}


class GenerativeReplayConfig(RuleConfig):
    name: Literal["generative-replay"] = "generative-replay"
    generator: Literal["gan", "vae"] = "gan"
    latent: int | None = Field(None, ge=1, description="latent size (gan 100, vae 16)")
    hidden: list[int] | None = Field(None, description="generator hidden sizes (gan [32, 64, 128], vae [256])")
    leak: float = Field(0.2, ge=0, description="GAN LeakyReLU slope")
    dropout: float = Field(0.3, ge=0, lt=1, description="GAN dropout between layers")
    generator_loss: Literal["non-saturating", "minimax"] = "non-saturating"
    lr: float | None = Field(None, gt=0, description="generator learning rate (gan 2e-4, vae 1e-3)")
    epochs: int = Field(20, ge=1, description="generator epochs per task (passes over the real data)")
    steps: int | None = Field(None, ge=1, description="generator updates per task (overrides epochs)")
    batch_size: int = Field(64, ge=2, description="generator batch, real and replayed together")
    # Replayed examples per real one; "tasks": as many as earlier tasks, so every task is
    # equally represented (R1: a fixed 1 : 9).
    replayed_per_real: Annotated[float, Field(ge=0)] | Literal["tasks"] = Field(9.0, description="generator mix")
    solver_replayed_per_real: Annotated[float, Field(ge=0)] | Literal["tasks"] | None = Field(
        None, description="solver mix (default: the generator's)"
    )
    # dataset: the solver trains on one mixed set (the task's data plus generated inputs,
    # shuffled together); batch: every real batch gets freshly generated inputs appended.
    solver_mix: Literal["dataset", "batch"] = "dataset"
    real_weight: Annotated[float, Field(ge=0, le=1)] | Literal["tasks"] | None = Field(
        None, description="r, the real examples' share of the loss (default: their fraction of the mix); "
        "'tasks': 1 / (tasks seen), every task counting the same"
    )
    targets: Literal["hard", "soft"] = "hard"
    # R1's GAN draws isolated bright pixels on the background that real digits never have; the
    # solver then tells replayed (old classes) from real (new classes) by them and sends every
    # real test image to the newest classes (docs/reproductions.md, R1). Off: R1 as written.
    despeckle: bool = Field(False, description="zero generated pixels with fewer than 2 of 8 neighbours above 0.3")
    temperature: float = Field(1.0, gt=0)
    # The last task's scholar would only serve a next task that never comes.
    train_last_generator: bool = False

    @model_validator(mode="after")
    def _soft_targets_need_batches(self):
        if self.targets == "soft" and self.solver_mix == "dataset":
            raise ValueError("targets: soft needs solver_mix: batch (a replay set holds hard labels)")
        return self


@RULES.register
class GenerativeReplay(Rule):
    """Deep generative replay: a generator and the previous solver replay past tasks."""

    name = "generative-replay"
    config_class = GenerativeReplayConfig

    def __init__(self, config: GenerativeReplayConfig):
        super().__init__(config)
        self.scholar_generator = None  # covers tasks 0..tasks_done - 1
        self.previous_solver = None
        self.tasks_done = 0

    # ------------------------------------------------------------------ setup
    def setup(self, ctx: Context) -> None:
        if ctx.tasks[0].train.per_step:
            raise ValueError("generative-replay needs image tasks (one label per sequence), not per-step targets")
        self.model = ctx.model
        self.device = ctx.extra.get("device", torch.device("cpu"))
        ds = ctx.protocol.dataset
        self.encoding, self.normalise = ds.encoding, ds.normalise
        self.norm_stats = ctx.tasks[0].meta.get("norm_stats")
        x = ctx.tasks[0].train.x
        self.n_pixels = x.shape[1] * x.shape[2]
        shape = self._image_shape(ds)
        self.image_shape = shape or tuple(decode(x[:1], self.encoding, self.normalise, self.norm_stats).shape[1:])
        self.seed = int(ctx.protocol.seed)

    @staticmethod
    def _image_shape(ds) -> tuple[int, int] | None:
        try:
            from ..data import load_dataset

            return tuple(load_dataset(ds.name, root=ds.root).image_shape)
        except Exception:  # decode falls back to (T, n_in) rows or square images
            return None

    def _new_generator(self, task_index: int):
        c = self.config
        d = GENERATOR_DEFAULTS[c.generator]
        opts = dict(latent=c.latent or d["latent"], hidden=tuple(c.hidden or d["hidden"]), lr=c.lr or d["lr"])
        if c.generator == "gan":
            opts.update(leak=c.leak, dropout=c.dropout, generator_loss=c.generator_loss)
        # Initialisation depends on the run's seed and the task alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1009 + task_index)
            gen = build_generator(c.generator, self.n_pixels, **opts)
        return gen.to(self.device)

    # ------------------------------------------------------------------ images <-> inputs
    def images_of(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (N, T, n_in) -> flat images (N, n_pixels) in [0, 1]."""
        images = decode(x, self.encoding, self.normalise, self.norm_stats, self.image_shape)
        return images.reshape(x.shape[0], -1).clamp(0.0, 1.0)

    def inputs_of(self, images: torch.Tensor) -> torch.Tensor:
        """Flat images in [0, 1] -> encoded inputs, exactly as real images are encoded."""
        pictures = images.detach().reshape(images.shape[0], *self.image_shape).cpu().numpy()
        return encode(pictures, self.encoding, self.normalise, self.norm_stats).to(self.device)

    def generated(self, gen, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """n flat images from a generator, despeckled if the rule asks for it."""
        images = gen.sample(n, generator)
        return despeckle(images, self.image_shape) if self.config.despeckle else images

    # ------------------------------------------------------------------ replay to the solver
    def real_weight(self, n_real: int, n_replayed: int, ctx: Context) -> float:
        r = self.config.real_weight
        if r == "tasks":
            return 1.0 / (ctx.task_index + 1)
        if r is not None:
            return float(r)
        return n_real / (n_real + n_replayed)

    @torch.no_grad()
    def replay(self, n: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n generated inputs with the previous solver's labels: (x, y, task, soft or None)."""
        x = self.inputs_of(self.generated(self.scholar_generator, n, ctx.generator))
        earlier = torch.randint(self.tasks_done, (n,), generator=ctx.generator).to(self.device)
        aware = _aware_masks(ctx).to(self.device)
        if ctx.protocol.scenario == "class-incremental":
            allowed = aware[: self.tasks_done].any(0, keepdim=True).expand(n, -1)
        else:
            allowed = aware[earlier]
        # The teacher's noise-free answer (noise=False: the E/I network's noise is off).
        z = self.previous_solver(x, noise=False)
        logits = masked_logits(outputs_for_targets(z, torch.zeros(n, dtype=torch.long)), allowed)
        y = logits.argmax(-1)
        soft = torch.softmax(logits / self.config.temperature, -1) if self.config.targets == "soft" else None
        return x, y, earlier, soft

    def _ratio(self, setting) -> float:
        """Replayed per real example; "tasks": the number of tasks the scholar covers."""
        return float(self.tasks_done) if setting == "tasks" else float(setting)

    @property
    def solver_ratio(self) -> float:
        c = self.config
        return self._ratio(c.replayed_per_real if c.solver_replayed_per_real is None else c.solver_replayed_per_real)

    def task_data(self, task_index: int, ctx: Context) -> list[tuple[int, TaskSplit]]:
        """``solver_mix: dataset``: the task's data plus a generated, labelled replay set."""
        own = [(task_index, ctx.tasks[task_index].train)]
        if self.config.solver_mix != "dataset" or self.scholar_generator is None:
            return own
        n = int(round(self.solver_ratio * len(own[0][1])))
        parts = [self.replay(min(REPLAY_CHUNK, n - start), ctx) for start in range(0, n, REPLAY_CHUNK)]
        if not parts:
            return own
        x, y, task = (torch.cat([p[i] for p in parts]).cpu() for i in range(3))
        # One part per earlier task: the runner gives each part's rows that task id.
        return own + [(j, TaskSplit(x=x[task == j], y=y[task == j])) for j in task.unique().tolist()]

    def mix_batch(self, batch: Batch, ctx: Context) -> Batch:
        if self.scholar_generator is None:
            return batch
        if self.config.solver_mix == "dataset":
            return self._reweighted(batch, ctx)
        m = int(round(self.solver_ratio * len(batch)))
        if m == 0:
            return batch
        x, y, task, soft = self.replay(m, ctx)
        return append_replayed(batch, x, y, task, soft=soft, real_weight=self.real_weight(len(batch), m, ctx))

    def _reweighted(self, batch: Batch, ctx: Context) -> Batch:
        """A mixed-set batch with its real rows (the current task's) sharing ``real_weight``."""
        real = batch.task == ctx.task_index
        n_real = int(real.sum())
        if self.config.real_weight is None or n_real in (0, len(batch)):
            return batch  # every row weighs the same: r is the fraction of real rows
        r = self.real_weight(n_real, len(batch) - n_real, ctx)
        weight = torch.where(real, r / n_real, (1.0 - r) / (len(batch) - n_real)).to(torch.float32)
        return batch.replace(weight=weight)

    # ------------------------------------------------------------------ the next scholar
    def end_task(self, task_index: int, ctx: Context) -> None:
        last = task_index == len(ctx.tasks) - 1
        if last and not self.config.train_last_generator:
            return
        self.scholar_generator = self.train_generator(task_index, ctx)
        self.previous_solver = self._frozen_copy(ctx.model)
        self.tasks_done = task_index + 1

    @staticmethod
    def _frozen_copy(model):
        solver = copy.deepcopy(model)
        solver.eval()
        for p in solver.parameters():
            p.requires_grad_(False)
        return solver

    def train_generator(self, task_index: int, ctx: Context):
        """A new generator on task ``task_index``'s images mixed with the scholar's samples."""
        c = self.config
        real = self.images_of(ctx.tasks[task_index].train.x).to(self.device)
        previous = self.scholar_generator
        if previous is None:
            n_real_batch = c.batch_size
        else:
            n_real_batch = max(1, int(round(c.batch_size / (1.0 + self._ratio(c.replayed_per_real)))))
        n_replayed = c.batch_size - n_real_batch if previous is not None else 0
        per_epoch = -(-real.shape[0] // n_real_batch)
        # A fixed number of updates (steps) or of passes over the real images (epochs).
        total = c.steps if c.steps is not None else c.epochs * per_epoch
        epochs = -(-total // per_epoch)
        gen = self._new_generator(task_index)
        desc = f"generator task {task_index}"
        progress = EpochProgress(epochs, ctx.protocol.execution.progress, desc, line_label=desc, logger=log)
        done = 0
        try:
            for epoch in range(epochs):
                order = torch.randperm(real.shape[0], generator=ctx.generator).to(self.device)
                sums: dict[str, float] = {}
                n_batches = 0
                for start in range(0, real.shape[0], n_real_batch):
                    if done == total:
                        break
                    images = real[order[start : start + n_real_batch]]
                    if n_replayed:
                        images = torch.cat([images, self.generated(previous, n_replayed, ctx.generator)])
                    for name, value in gen.fit_batch(images, ctx.generator).items():
                        sums[name] = sums.get(name, 0.0) + value
                    n_batches += 1
                    done += 1
                means = {name: s / n_batches for name, s in sums.items()}
                for name, value in means.items():
                    ctx.log_metric(name, value, task=task_index, epoch=epoch)
                progress.update(" ".join(f"{k.removeprefix('gen_')} {v:.4f}" for k, v in means.items()))
        finally:
            progress.close()
        return gen

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        if self.scholar_generator is None:
            return {"tasks_done": self.tasks_done}
        return {
            "tasks_done": self.tasks_done,
            "generator": self.scholar_generator.state_dict(),
            "solver": self.previous_solver.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.tasks_done = int(state.get("tasks_done", 0))
        if "generator" not in state:
            return
        gen = self._new_generator(self.tasks_done - 1)
        gen.load_state_dict(state["generator"])
        self.scholar_generator = gen
        solver = self._frozen_copy(self.model)
        solver.load_state_dict(state["solver"])
        self.previous_solver = solver


def despeckle(images: torch.Tensor, image_shape, on: float = 0.3, support: int = 2) -> torch.Tensor:
    """Flat images with every pixel zeroed that has fewer than ``support`` of its 8 neighbours
    above ``on`` (isolated speckle); strokes, whose pixels have lit neighbours, are kept."""
    h, w = image_shape[-2], image_shape[-1]
    im = images.reshape(-1, 1, h, w)
    kernel = torch.ones(1, 1, 3, 3, dtype=im.dtype, device=im.device)
    kernel[0, 0, 1, 1] = 0
    lit = torch.nn.functional.conv2d((im > on).to(im.dtype), kernel, padding=1)
    return torch.where(lit >= support, im, torch.zeros_like(im)).reshape(images.shape)


def _aware_masks(ctx: Context) -> torch.Tensor:
    """(n_tasks, n_out) bool: each task's own output classes."""
    n_out = ctx.class_mask.shape[1]
    aware = torch.zeros(len(ctx.tasks), n_out, dtype=torch.bool)
    for j, t in enumerate(ctx.tasks):
        aware[j, list(t.classes)] = True
    return aware
