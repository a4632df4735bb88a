"""The numba backend: fused CPU kernels for the forward pass, backpropagation through time and
simulation (:mod:`neurocl.sim.train_kernel`, :mod:`neurocl.sim.kernels`).

The kernels take the effective weights and fixed leaks (one, or one per unit); gradients reach
the raw parameters (ColEI weights or DANN factors) through autograd on
:func:`effective_weights`. torch and numba are imported inside the methods: looking the backend
up (validating a config) imports neither.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backends import BACKENDS, Backend


class NumbaBackend(Backend):
    name = "numba"
    auto_devices = ("cpu",)
    auto_priority = 10  # faster than the torch loop on CPU at every size measured

    def unsupported(self, model, device) -> str | None:
        if model.config.train_tau:
            return ("the numba backend takes fixed time constants (one or one per unit); run "
                    "train_tau on backend 'torch' (or 'auto', which picks it)")
        if device is not None and device.type != "cpu":
            return "the numba backend runs on CPU tensors only (use backend 'torch' or 'auto' on CUDA)"
        return None

    def forward(self, model, u, noise: Any, return_states: bool):
        from .train_kernel import kernel_forward

        z, states = kernel_forward(model, u, noise)
        return (z, states) if return_states else z

    def fused_loss(self, model, u, loss_of_z):
        from .train_kernel import kernel_fused_loss

        loss, omega, z = kernel_fused_loss(model, u, loss_of_z, want_omega=model.config.omega_lambda != 0)
        return loss, z, {"omega": omega}

    def simulate(self, model, u, noise: Any, seed: int | None, record: tuple[str, ...]) -> dict:
        import numba
        import torch

        from .kernels import ACTIVATION_CODES, forward_kernel
        from .simulate import random_seed
        from .train_kernel import leak_arrays, noise_spec, single_threaded_blas

        c = model.config
        dtype = u.dtype.type
        with torch.no_grad():
            w = {k: np.ascontiguousarray(v.detach().cpu().numpy(), dtype=dtype)
                 for k, v in model.effective_weights().items()}
            b_rec, b_out, x0 = (np.ascontiguousarray(p.detach().cpu().numpy(), dtype=dtype)
                                for p in (model.b_rec, model.b_out, model.x0))
        batch, steps, _ = u.shape
        leak = leak_arrays(model)
        spec = noise_spec({"seed": random_seed(seed)} if noise is None else noise, dtype)
        empty = np.empty((0, 0, 0), dtype=dtype)
        xs = np.empty((batch, steps, c.n), dtype=dtype) if "x" in record else empty
        rs = np.empty((batch, steps, c.n), dtype=dtype) if "r" in record else empty
        zs = np.empty((batch, steps, c.n_out), dtype=dtype)
        with single_threaded_blas():
            forward_kernel(
                u, spec["xi_in"], spec["xi_rec"], spec["key_in"], spec["key_rec"], spec["mode"],
                dtype(math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in), leak["rec_scale"],
                bool(c.rectify_inputs), w["W_in"], w["W_rec"], w["W_out"], b_rec, b_out, x0,
                leak["alpha"], leak["keep"], ACTIVATION_CODES[c.activation], max(1, min(numba.get_num_threads(), batch)),
                "x" in record, "r" in record, 0, empty, xs, rs, zs,
            )
        out = {"z": zs}
        if "x" in record:
            out["x"] = xs
        if "r" in record:
            out["r"] = rs
        return out


BACKENDS.register(NumbaBackend())
