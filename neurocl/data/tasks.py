"""Tasks for continual learning: what the training runner consumes.

A :class:`TaskSplit` carries inputs (N, T, n_in), targets either one per sequence
(N,) or one per time step (N, T), and an optional per-step loss/eval weight
mask (N, T); ``None`` means "only the last step counts", the usual readout for
sequential image classification. Cognitive tasks fill in per-step targets and
masks instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .datasets import RawDataset
from .encodings import encode, standardisation_stats
from .errors import DataError
from .splits import stratified_sample
from .transforms import TASK_TRANSFORMS, apply_map, class_indices, image_transforms, relabel_map


def _as_index(idx) -> torch.Tensor | slice:
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, torch.Tensor):
        return idx.to(torch.long) if idx.dtype != torch.bool else idx
    arr = np.asarray(idx)
    return torch.from_numpy(arr) if arr.dtype == bool else torch.as_tensor(arr, dtype=torch.long)


@dataclass
class TaskSplit:
    """Inputs, targets and per-step weights of one split (train or test) of a task."""

    x: torch.Tensor  # (N, T, n_in) float32
    y: torch.Tensor  # (N,) int64, or (N, T) int64 per-step targets
    mask: torch.Tensor | None = None  # (N, T) float32; None = last step only
    labels_orig: torch.Tensor | None = None  # (N,) class before relabelling

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise DataError(f"TaskSplit.x must be (N, T, n_in), got {tuple(self.x.shape)}")
        n, t = self.x.shape[:2]
        if self.y.shape not in ((n,), (n, t)):
            raise DataError(f"TaskSplit.y must be ({n},) or ({n}, {t}), got {tuple(self.y.shape)}")
        if self.mask is not None and self.mask.shape != (n, t):
            raise DataError(f"TaskSplit.mask must be ({n}, {t}), got {tuple(self.mask.shape)}")
        if self.labels_orig is not None and self.labels_orig.shape != (n,):
            raise DataError(
                f"TaskSplit.labels_orig must be ({n},), got {tuple(self.labels_orig.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def per_step(self) -> bool:
        """True when ``y`` holds a target per time step."""
        return self.y.ndim == 2

    def step_mask(self) -> torch.Tensor:
        """The (N, T) float32 weights actually used: ``mask``, or 1 at the last step only."""
        if self.mask is not None:
            return self.mask
        m = torch.zeros(self.x.shape[:2], dtype=torch.float32, device=self.x.device)
        m[:, -1] = 1.0
        return m

    def subset(self, idx) -> "TaskSplit":
        """The items at ``idx`` (indices, boolean mask or slice), targets and masks aligned."""
        i = _as_index(idx)
        return TaskSplit(
            self.x[i],
            self.y[i],
            None if self.mask is None else self.mask[i],
            None if self.labels_orig is None else self.labels_orig[i],
        )

    def to(self, device) -> "TaskSplit":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x=move(self.x),
            y=move(self.y),
            mask=move(self.mask),
            labels_orig=move(self.labels_orig),
        )


@dataclass
class Task:
    """One task of a continual-learning sequence."""

    name: str
    classes: list[int]  # output classes (after relabelling) this task uses
    train: TaskSplit
    test: TaskSplit
    meta: dict = field(default_factory=dict)

    @property
    def n_in(self) -> int:
        return self.train.x.shape[2]

    @property
    def n_steps(self) -> int:
        return self.train.x.shape[1]


def _prepare(
    images: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    limit: int | None,
    seed: int,
    mapping: dict[int, int],
    transforms: list,
    encoding: str,
    normalise: str,
    stats,
) -> TaskSplit:
    if limit is not None:
        keep = keep[stratified_sample(labels[keep], limit, seed)]
    x, orig = images[keep], labels[keep]
    for transform, value in transforms:
        x = transform.apply(x, value)
    return TaskSplit(
        x=encode(x, encoding, normalise, stats),
        y=torch.from_numpy(apply_map(orig, mapping)),
        mask=None,
        labels_orig=torch.from_numpy(orig.copy()),
    )


def build_task(
    raw: RawDataset,
    *,
    name: str,
    classes: Sequence[int] | None = None,
    relabel: Mapping | None = None,
    encoding: str = "rows",
    normalise: str = "none",
    max_train: int | None = None,
    max_test: int | None = None,
    subset_seed: int = 0,
    norm_stats: tuple[float, float] | None = None,
    **transforms: Any,
) -> Task:
    """Build one task from a dataset: select classes, relabel, transform the images, encode.

    ``transforms``: values of the registered image transforms (``rotation=40.0``,
    ``permutation_seed=7``; :data:`~neurocl.data.transforms.TASK_TRANSFORMS`); None is off.

    ``classes`` defaults to all classes. ``max_train``/``max_test`` keep a
    deterministic class-stratified subset (seeded by ``subset_seed``).
    ``normalise="standard"`` uses ``norm_stats``, by default the mean/std of the
    whole training set of ``raw`` so every task shares one transform.
    """
    classes = list(raw.classes if classes is None else [int(c) for c in classes])
    if not classes:
        raise DataError(f"task {name!r}: no classes given")
    tr_keep = class_indices(raw.train_labels, classes, f"{raw.name} (train)")
    te_keep = class_indices(raw.test_labels, classes, f"{raw.name} (test)")
    mapping = relabel_map(classes, relabel)
    chosen = image_transforms(transforms)
    if normalise == "standard" and norm_stats is None:
        norm_stats = standardisation_stats(raw.train_images)
    common = dict(
        mapping=mapping,
        transforms=chosen,
        encoding=encoding,
        normalise=normalise,
        stats=norm_stats,
    )
    train = _prepare(raw.train_images, raw.train_labels, tr_keep, max_train, subset_seed, **common)
    test = _prepare(raw.test_images, raw.test_labels, te_keep, max_test, subset_seed, **common)
    meta = {
        "dataset": raw.name,
        "source": raw.source,
        "classes_orig": sorted(classes),
        "label_map": dict(sorted(mapping.items())),
        "relabel": None if relabel is None else dict(relabel),
        **{name: transforms.get(name) for name in TASK_TRANSFORMS},
        "encoding": encoding,
        "normalise": normalise,
        "norm_stats": norm_stats,
        "n_train": len(train),
        "n_test": len(test),
        "subset_seed": subset_seed,
    }
    return Task(name, sorted(set(mapping.values())), train, test, meta)
