"""Forward simulation without gradients, on any backend, returning numpy arrays."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from .backends import AUTO, select_backend
from .ei_rnn import EIRNN
from .kernels import standard_normal


def random_seed(seed: int | None) -> int:
    """``seed`` as the kernels' unsigned 64-bit seed; a fresh random one for None."""
    return int(np.random.default_rng().integers(2**63)) if seed is None else int(seed) % 2**64


def standard_noise(model: EIRNN, batch: int, steps: int, seed: int | None, dtype) -> dict[str, np.ndarray]:
    """Standard normals for one batch: exactly those the numba kernel draws for ``seed``."""
    c = model.config
    seed = random_seed(seed)
    return {
        "rec": standard_normal(seed, (batch, steps, c.n), 1, dtype),
        "in": standard_normal(seed, (batch, steps, c.n_in), 0, dtype),
    }


def simulate(
    model,
    u,
    backend: str = "numba",
    noise: Any = None,
    seed: int | None = None,
    record: Iterable[str] = ("x", "r"),
) -> dict[str, np.ndarray]:
    """Simulate ``model`` on inputs ``u`` (batch, time, n_in).

    ``backend``: a registered backend (:data:`neurocl.sim.backends.BACKENDS`) or ``auto``.
    ``noise``: a dict ``{"rec": (B, T, n), "in": (B, T, n_in)}`` of standard normals (so that
    both backends can be fed the same noise), ``False`` for the noiseless network, or None to
    draw it from ``seed`` (both backends draw the same normals, :func:`standard_noise`; the
    numba kernel draws them as it goes). Returns ``z`` (batch, time, n_out) and the recorded
    states.
    """
    record = tuple(record)
    if not isinstance(model, EIRNN):
        if backend not in (AUTO, "torch"):
            raise ValueError(f"the {backend} backend simulates the E/I network only, not {type(model).__name__}")
        with torch.no_grad():
            z, states = model(torch.as_tensor(np.asarray(u)), return_states=True)
        out = {"z": z.cpu().numpy()}
        for k in record:
            if states and k in states:
                out[k] = states[k].cpu().numpy()
        return out

    dtype = np.float64 if model.config.dtype == "float64" else np.float32
    u_np = np.asarray(u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else u, dtype=dtype)
    if u_np.ndim == 2:
        u_np = u_np[:, None, :]
    # A named backend simulates wherever the weights are (the numba kernels copy them to the
    # CPU, as the inputs are numpy); auto decides by the weights' device.
    chosen = select_backend(model, model.W_rec.device if backend == AUTO else None, backend)
    return chosen.simulate(model, np.ascontiguousarray(u_np), noise, seed, record)
