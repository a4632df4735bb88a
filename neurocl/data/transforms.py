"""Per-task transforms: class subsets, relabelling, and the registered image transforms
(pixel permutation, rotation).

An image transform is switched on by a task key of the same name in a protocol
(``rotation: 45``); :data:`TASK_TRANSFORMS` holds them, and the protocol's task schema, the
task builder and the checks of non-image datasets all read it. A new one is a function of the
images and the key's value plus one registration::

    TASK_TRANSFORMS.register(ImageTransform("blur", float | None, blur_images, order=30))

(in this module, or in a module of its own added to the registry's module list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..registry import Registry
from .errors import DataError


@dataclass(frozen=True)
class ImageTransform:
    """A per-task transform of the images, named by the task key that switches it on."""

    name: str
    annotation: Any  # the key's type in a protocol (None, the default, leaves the images alone)
    apply: Callable[[np.ndarray, Any], np.ndarray]  # (images (n, H, W), value) -> images
    order: int  # transforms apply in increasing order
    description: str = ""


TASK_TRANSFORMS: Registry[ImageTransform] = Registry("task transform", modules=("neurocl.data.transforms",))


def image_transforms(values: Mapping[str, Any]) -> list[tuple[ImageTransform, Any]]:
    """The registered transforms ``values`` switches on (value not None), in their order;
    DataError for a name that is no registered transform."""
    chosen = []
    for name, value in values.items():
        if name not in TASK_TRANSFORMS:
            raise DataError(TASK_TRANSFORMS.unknown(name))
        if value is not None:
            chosen.append((TASK_TRANSFORMS[name], value))
    return sorted(chosen, key=lambda tv: tv[0].order)


def class_indices(
    labels: np.ndarray, classes: Sequence[int], dataset: str = "dataset"
) -> np.ndarray:
    """Indices of items whose label is in ``classes``; unknown classes raise naming them."""
    present = set(np.unique(labels).tolist())
    missing = sorted(set(int(c) for c in classes) - present)
    if missing:
        raise DataError(f"classes {missing} do not exist in {dataset} (it has {sorted(present)})")
    return np.flatnonzero(np.isin(labels, np.asarray(classes)))


def relabel_map(classes: Sequence[int], relabel: Mapping | None) -> dict[int, int]:
    """Old -> new label for each of ``classes``, from a relabel spec.

    ``None`` keeps labels; ``{"offset": k}`` subtracts k (``"min"``: the smallest
    class of the task, so classes 2, 3 become 0, 1); ``{"floor_division": k}``
    maps label to label // k (k=2: digit pairs 0-1, 2-3, ... to 0..4);
    ``{"map": {old: new}}`` is explicit and must cover every class.
    """
    classes = [int(c) for c in classes]
    if not relabel:
        return {c: c for c in classes}
    if len(relabel) != 1:
        raise DataError(
            f"relabel takes exactly one of offset, floor_division, map; got {dict(relabel)}"
        )
    ((kind, arg),) = relabel.items()
    if kind == "offset":
        offset = min(classes) if arg == "min" else arg
        if not isinstance(offset, (int, np.integer)):
            raise DataError(f"relabel offset must be an integer or 'min', got {arg!r}")
        mapping = {c: c - int(offset) for c in classes}
    elif kind == "floor_division":
        if not isinstance(arg, (int, np.integer)) or arg < 1:
            raise DataError(f"relabel floor_division needs an integer k >= 1, got {arg!r}")
        mapping = {c: c // int(arg) for c in classes}
    elif kind == "map":
        table = {int(k): int(v) for k, v in dict(arg).items()}
        missing = [c for c in classes if c not in table]
        if missing:
            raise DataError(f"relabel map has no entry for classes {missing}")
        mapping = {c: table[c] for c in classes}
    else:
        raise DataError(f"unknown relabel {kind!r}; use offset, floor_division or map")
    negative = {c: v for c, v in mapping.items() if v < 0}
    if negative:
        raise DataError(f"relabel {dict(relabel)} gives negative labels {negative}")
    return mapping


def apply_map(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    out = np.empty_like(labels)
    for old, new in mapping.items():
        out[labels == old] = new
    return out


def pixel_permutation(seed: int | str | None, n_pixels: int) -> np.ndarray:
    """A bijection on ``n_pixels`` pixel positions, reproducible from ``seed``.

    ``None`` or ``"identity"`` gives the identity (the first, unpermuted task).
    """
    if seed is None or seed == "identity":
        return np.arange(n_pixels)
    if isinstance(seed, str):
        raise DataError(f"permutation seed must be an integer, None or 'identity', got {seed!r}")
    return np.random.default_rng(seed).permutation(n_pixels)


def permute_pixels(images: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Shuffle the H*W pixels of each (H, W) image by ``perm`` (new pixel i = old pixel perm[i])."""
    n, h, w = images.shape
    return images.reshape(n, h * w)[:, perm].reshape(n, h, w)


def rotate_images(images: np.ndarray, angle: float) -> np.ndarray:
    """Rotate each image by ``angle`` degrees, counter-clockwise as displayed by imshow.

    Counter-clockwise with row 0 at the top (``imshow``'s default), the same
    direction as ``np.rot90``: 90 degrees equals ``np.rot90(image)``. Bilinear
    (order 1), same size, zero fill outside the original frame.
    """
    from scipy.ndimage import rotate

    if angle % 360 == 0:
        return np.array(images, dtype=np.float32)
    out = rotate(images, angle, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
    # Interpolation rounding can leave values like -1e-9; E/I inputs must stay >= 0.
    return np.clip(out, 0.0, None).astype(np.float32)


def _permute(images: np.ndarray, seed: Any) -> np.ndarray:
    h, w = images.shape[1:]
    return permute_pixels(images, pixel_permutation(seed, h * w))


def _rotate(images: np.ndarray, angle: float) -> np.ndarray:
    return rotate_images(images, angle) if angle else images


# Rotate, then permute: a permuted task scrambles whatever image it is given.
TASK_TRANSFORMS.register(ImageTransform(
    "rotation", float | None, _rotate, order=10,
    description="rotate each image by this many degrees, counter-clockwise (bilinear, zero fill)"))
TASK_TRANSFORMS.register(ImageTransform(
    "permutation_seed", int | Literal["identity"] | None, _permute, order=20,
    description="shuffle the pixels by the permutation this seed draws ('identity': none)"))
