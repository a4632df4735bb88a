"""The torch backend: the Euler step as a Python loop of torch operations (CPU or CUDA).

It runs every configuration (per-unit and trained tau included) and is the reference the numba
kernels are tested against. torch is imported inside the methods: looking the backend up
(validating a config) imports nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any

from .backends import BACKENDS, Backend


class TorchBackend(Backend):
    name = "torch"
    auto_devices = ("cpu", "cuda", "mps")
    auto_priority = 0

    def forward(self, model, u, noise: Any, return_states: bool):
        import torch

        from .activations import ACTIVATIONS

        c = model.config
        batch, steps, _ = u.shape
        if isinstance(noise, dict) and "seed" in noise:
            # The numba kernel's normals for this seed, so that both backends agree.
            from .train_kernel import kernel_noise

            noise = {k: v.to(u.device) for k, v in kernel_noise(model, batch, steps, noise["seed"]).items()}
        if noise is None:
            noise = model.draw_noise(batch, steps) if model.noise else False
        w = model.effective_weights()
        a = model.alpha
        f = ACTIVATIONS[c.activation]

        u_tilde = u
        if noise is not False and c.sigma_in > 0:
            u_tilde = u + math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in * noise["in"]
        if c.rectify_inputs:
            u_tilde = torch.relu(u_tilde)
        drive = u_tilde @ w["W_in"].T + model.b_rec  # (B, T, n)
        if noise is not False and c.sigma_rec > 0:
            scale = math.sqrt(2 * a) if isinstance(a, float) else torch.sqrt(2 * a)
            rec_noise = scale * c.sigma_rec * noise["rec"]
        else:
            rec_noise = None

        x = model.x0.expand(batch, c.n)
        r = f(x)
        xs, rs = [], []
        w_rec_t = w["W_rec"].T
        # unbind, not drive[:, t]: the backward of T indexings writes T full-size zero tensors
        # (O(T^2) memory traffic; it halved GPU throughput at N = 4096), unbind's is one stack.
        drive_t = drive.unbind(1)
        noise_t = rec_noise.unbind(1) if rec_noise is not None else None
        for t in range(steps):
            x = (1 - a) * x + a * (r @ w_rec_t + drive_t[t])
            if noise_t is not None:
                x = x + noise_t[t]
            r = f(x)
            xs.append(x)
            rs.append(r)
        r_all = torch.stack(rs, dim=1)
        z = r_all @ w["W_out"].T + model.b_out
        if return_states:
            return z, {"x": xs, "r": r_all}
        return z

    def simulate(self, model, u, noise: Any, seed: int | None, record: tuple[str, ...]) -> dict:
        import torch

        from .simulate import standard_noise

        batch, steps, _ = u.shape
        if noise is None:
            noise = standard_noise(model, batch, steps, seed, u.dtype)
        device = model.W_rec.device
        tnoise = False if noise is False else {k: torch.as_tensor(v, device=device) for k, v in noise.items()}
        with torch.no_grad():
            z, states = self.forward(model, torch.as_tensor(u, device=device), tnoise, True)
        out = {"z": z.cpu().numpy()}
        if "x" in record:
            out["x"] = torch.stack(states["x"], dim=1).cpu().numpy()
        if "r" in record:
            out["r"] = states["r"].cpu().numpy()
        return out


BACKENDS.register(TorchBackend())
