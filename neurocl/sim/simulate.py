"""Forward simulation without gradients, on either backend, returning numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch

from .ei_rnn import EIRNN
from .kernels import ACTIVATION_CODES, simulate_forward


def standard_noise(model: EIRNN, batch: int, steps: int, seed: int | None, dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = model.config
    return {
        "rec": rng.standard_normal((batch, steps, c.n)).astype(dtype),
        "in": rng.standard_normal((batch, steps, c.n_in)).astype(dtype),
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
    draw it from ``seed``. Returns ``z`` (batch, time, n_out) and the recorded states.
    """
    record = tuple(record)
    if backend == "auto":
        backend = "numba"
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
    if noise is None:
        noise = standard_noise(model, batch, steps, seed, dtype)

    if backend == "torch":
        device = model.W_rec.device
        tnoise = False if noise is False else {k: torch.as_tensor(v, device=device) for k, v in noise.items()}
        with torch.no_grad():
            z, states = model(torch.as_tensor(u_np, device=device), noise=tnoise, return_states=True)
        out = {"z": z.cpu().numpy()}
        if "x" in record:
            out["x"] = torch.stack(states["x"], dim=1).cpu().numpy()
        if "r" in record:
            out["r"] = states["r"].cpu().numpy()
        return out
    if backend != "numba":
        raise ValueError(f"unknown backend '{backend}' (torch, numba or auto)")

    c = model.config
    with torch.no_grad():
        w = {k: v.detach().cpu().numpy().astype(dtype) for k, v in model.effective_weights().items()}
        b_rec = model.b_rec.detach().cpu().numpy().astype(dtype)
        b_out = model.b_out.detach().cpu().numpy().astype(dtype)
        x0 = model.x0.detach().cpu().numpy().astype(dtype)
    a = c.dt / c.tau
    use_noise = noise is not False
    u_tilde = u_np
    if use_noise and c.sigma_in > 0:
        u_tilde = u_np + dtype(math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in) * np.asarray(noise["in"], dtype=dtype)
    if c.rectify_inputs:
        u_tilde = np.maximum(u_tilde, 0)
    drive = np.ascontiguousarray((u_tilde @ w["W_in"].T + b_rec).astype(dtype))
    if use_noise and c.sigma_rec > 0:
        rec_noise = np.ascontiguousarray(dtype(math.sqrt(2 * a) * c.sigma_rec) * np.asarray(noise["rec"], dtype=dtype))
    else:
        use_noise = False
        rec_noise = np.zeros((1, 1, 1), dtype=dtype)
    xs, rs = simulate_forward(drive, np.ascontiguousarray(w["W_rec"]), x0, rec_noise, a, ACTIVATION_CODES[c.activation], use_noise)
    out = {"z": rs @ w["W_out"].T + b_out}
    if "x" in record:
        out["x"] = xs
    if "r" in record:
        out["r"] = rs
    return out
