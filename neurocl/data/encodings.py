"""Turn (N, H, W) images into (N, T, n_in) float32 sequences for the networks.

Every model takes (batch, time, n_in). Encodings:

* ``flat``   -> (N, 1, H*W): one step showing the whole image.
* ``rows``   -> (N, H, W): H steps, one image row per step (sequential MNIST by rows).
* ``pixels`` -> (N, H*W, 1): one pixel per step, row-major (pixel-by-pixel MNIST).

Normalisations:

* ``none``     keep [0, 1]. Use this for E/I (Dale's law) networks: their inputs
  must be non-negative, like firing rates.
* ``standard`` (x - mean) / std with a scalar mean and std of the *training* set,
  passed in explicitly (see :func:`standardisation_stats`) so that test data and
  later tasks get the same transform. Produces negative values: MLP/LSTM only.
* ``tanh``     map to [-1, 1] (2x - 1), the range of a tanh generator in GAN replay.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError

ENCODINGS = ("flat", "rows", "pixels")
NORMALISATIONS = ("none", "standard", "tanh")


def encoded_shape(encoding: str, height: int, width: int) -> tuple[int, int]:
    """(T, n_in) of ``encoding`` for H x W images."""
    shapes = {"flat": (1, height * width), "rows": (height, width), "pixels": (height * width, 1)}
    if encoding not in shapes:
        raise DataError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    return shapes[encoding]


def standardisation_stats(train_images: np.ndarray) -> tuple[float, float]:
    """Scalar (mean, std) of the training images, for ``normalise="standard"``.

    Scalar rather than per pixel: MNIST's border pixels are always 0, and a
    per-pixel std of 0 would blow them up.
    """
    x = np.asarray(train_images, dtype=np.float64)
    return float(x.mean()), float(x.std())


def normalise_images(
    images: np.ndarray, mode: str = "none", stats: tuple[float, float] | None = None
) -> np.ndarray:
    """Apply a normalisation to images in [0, 1]; returns float32."""
    x = np.asarray(images, dtype=np.float32)
    if mode == "none":
        return x
    if mode == "tanh":
        return x * np.float32(2.0) - np.float32(1.0)
    if mode == "standard":
        if stats is None:
            raise DataError(
                "normalise='standard' needs the training set's (mean, std); "
                "compute them with standardisation_stats(train_images) and pass them in"
            )
        mean, std = stats
        if not std > 0:
            raise DataError(f"normalise='standard': std must be > 0, got {std}")
        return (x - np.float32(mean)) / np.float32(std)
    raise DataError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALISATIONS)}")


def encode(
    images: np.ndarray,
    encoding: str = "rows",
    normalise: str = "none",
    stats: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Encode (N, H, W) images in [0, 1] as a float32 tensor (N, T, n_in)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise DataError(f"encode expects images shaped (N, H, W), got {images.shape}")
    n, h, w = images.shape
    t, n_in = encoded_shape(encoding, h, w)
    x = normalise_images(images, normalise, stats)
    return torch.from_numpy(np.ascontiguousarray(x.reshape(n, t, n_in), dtype=np.float32))


def decode(
    x: torch.Tensor,
    encoding: str = "rows",
    normalise: str = "none",
    stats: tuple[float, float] | None = None,
    image_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The inverse of :func:`encode`: (N, T, n_in) back to (N, H, W) images in [0, 1].

    Every encoding is a reshape of the normalised image, so decoding is exact. Generative
    replay uses it to train an image generator on a task's encoded inputs. ``image_shape``
    defaults to (T, n_in) for rows and to a square image for flat and pixels.
    """
    if x.ndim != 3:
        raise DataError(f"decode expects (N, T, n_in), got {tuple(x.shape)}")
    n, t, n_in = x.shape
    if image_shape is None:
        if encoding == "rows":
            image_shape = (t, n_in)
        else:
            side = int(round((t * n_in) ** 0.5))
            if side * side != t * n_in:
                raise DataError(f"decode: {t * n_in} pixels are not a square image; pass image_shape")
            image_shape = (side, side)
    h, w = image_shape
    if encoded_shape(encoding, h, w) != (t, n_in):
        raise DataError(f"decode: ({t}, {n_in}) is not encoding '{encoding}' of {h}x{w} images")
    images = x.reshape(n, h, w)
    if normalise == "none":
        return images
    if normalise == "tanh":
        return (images + 1.0) / 2.0
    if normalise == "standard":
        if stats is None:
            raise DataError("decode: normalise='standard' needs the (mean, std) used to encode")
        mean, std = stats
        return images * std + mean
    raise DataError(f"unknown normalisation {normalise!r}; choose one of {', '.join(NORMALISATIONS)}")
