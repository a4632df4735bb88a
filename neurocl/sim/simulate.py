"""Forward simulation without gradients, on either backend, returning numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numba
import numpy as np
import torch

from .ei_rnn import EIRNN
from .kernels import (
    ACTIVATION_CODES, NOISE_GIVEN, NOISE_KERNEL, NOISE_OFF, simulate_kernel, standard_normal, stream_key,
)


def _seed(seed: int | None) -> int:
    return int(np.random.default_rng().integers(2**63)) if seed is None else int(seed) % 2**64


def standard_noise(model: EIRNN, batch: int, steps: int, seed: int | None, dtype) -> dict[str, np.ndarray]:
    """Standard normals for one batch: exactly those the numba kernel draws for ``seed``."""
    c = model.config
    seed = _seed(seed)
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

    ``noise``: a dict ``{"rec": (B, T, n), "in": (B, T, n_in)}`` of standard normals (so that
    both backends can be fed the same noise), ``False`` for the noiseless network, or None to
    draw it from ``seed`` (both backends draw the same normals, :func:`standard_noise`; the
    numba kernel draws them as it goes). Returns ``z`` (batch, time, n_out) and the recorded
    states.
    """
    record = tuple(record)
    if backend == "auto":
        backend = "numba" if not isinstance(model, EIRNN) or model.numba_supported() else "torch"
    if not isinstance(model, EIRNN):
        if backend == "numba":
            raise ValueError(f"the numba backend simulates the E/I network only, not {type(model).__name__}")
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
    batch, steps, _ = u_np.shape

    if backend == "torch":
        if noise is None:
            noise = standard_noise(model, batch, steps, seed, dtype)
        device = model.W_rec.device
        tnoise = False if noise is False else {k: torch.as_tensor(v, device=device) for k, v in noise.items()}
        with torch.no_grad():
            z, states = model(torch.as_tensor(u_np, device=device), noise=tnoise, return_states=True, backend="torch")
        out = {"z": z.cpu().numpy()}
        if "x" in record:
            out["x"] = torch.stack(states["x"], dim=1).cpu().numpy()
        if "r" in record:
            out["r"] = states["r"].cpu().numpy()
        return out
    if backend != "numba":
        raise ValueError(f"unknown backend '{backend}' (torch, numba or auto)")

    c = model.config
    model.require_numba()
    with torch.no_grad():
        w = {k: np.ascontiguousarray(v.detach().cpu().numpy(), dtype=dtype)
             for k, v in model.effective_weights().items()}
        b_rec = np.ascontiguousarray(model.b_rec.detach().cpu().numpy(), dtype=dtype)
        b_out = np.ascontiguousarray(model.b_out.detach().cpu().numpy(), dtype=dtype)
        x0 = np.ascontiguousarray(model.x0.detach().cpu().numpy(), dtype=dtype)
    a = c.dt / c.tau
    empty = np.empty((0, 0, 0), dtype=dtype)
    xi_in = xi_rec = empty
    key_in = key_rec = np.uint64(0)
    if noise is None:
        mode = NOISE_KERNEL
        seed = np.uint64(_seed(seed))
        key_in, key_rec = np.uint64(stream_key(seed, 0)), np.uint64(stream_key(seed, 1))
    elif noise is False:
        mode = NOISE_OFF
    else:
        mode = NOISE_GIVEN
        xi_in = np.ascontiguousarray(np.asarray(noise["in"], dtype=dtype))
        xi_rec = np.ascontiguousarray(np.asarray(noise["rec"], dtype=dtype))
    xs = np.empty((batch, steps, c.n), dtype=dtype) if "x" in record else empty
    rs = np.empty((batch, steps, c.n), dtype=dtype) if "r" in record else empty
    zs = np.empty((batch, steps, c.n_out), dtype=dtype)
    from .train_kernel import single_threaded_blas

    with single_threaded_blas():
        simulate_kernel(
            np.ascontiguousarray(u_np), xi_in, xi_rec, key_in, key_rec, mode,
            dtype(math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in), dtype(math.sqrt(2 * a) * c.sigma_rec),
            bool(c.rectify_inputs), w["W_in"], w["W_rec"], w["W_out"], b_rec, b_out, x0,
            dtype(a), dtype(1 - a), ACTIVATION_CODES[c.activation], max(1, min(numba.get_num_threads(), batch)),
            "x" in record, "r" in record, xs, rs, zs,
        )
    out = {"z": zs}
    if "x" in record:
        out["x"] = xs
    if "r" in record:
        out["r"] = rs
    return out
