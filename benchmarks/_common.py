"""Helpers the throughput benchmarks share: the matmul peak they report against, the machine.

Import it only after the benchmark has set its thread environment (OMP_NUM_THREADS,
NUMBA_NUM_THREADS): importing torch fixes the thread pool.
"""

from __future__ import annotations

import math
import platform
import subprocess
import time

import numpy as np
import torch


def matmul_peak(size: int = 2048, repeats: int = 15) -> float:
    """float32 GFLOP/s of torch.mm on large square matrices (median)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / float(np.median(times)) / 1e9


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


class PlainEIRNN(torch.nn.Module):
    """The E/I network as a user would write it: a Python loop over time steps, autograd."""

    def __init__(self, model):
        super().__init__()
        c = model.config
        # Same size, constants and initial weights as the neurocl model.
        self.W_in = torch.nn.Parameter(model.W_in.detach().clone())
        self.W_rec = torch.nn.Parameter(model.W_rec.detach().clone())
        self.W_out = torch.nn.Parameter(model.W_out.detach().clone())
        self.x0 = torch.nn.Parameter(model.x0.detach().clone())
        self.register_buffer("mask", model.plastic_mask.clone())
        self.register_buffer("fixed", model.w_fixed.clone())
        self.register_buffer("sign", model.sign.clone())
        self.alpha = c.dt / c.tau
        self.s_rec = math.sqrt(2 * self.alpha) * c.sigma_rec
        self.s_in = math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in

    def forward(self, u):
        a = self.alpha
        w_in = torch.relu(self.W_in)
        w_rec = torch.relu(self.mask * self.W_rec + self.fixed) * self.sign
        w_out = torch.relu(self.W_out) * self.sign
        batch, steps, _ = u.shape
        x = self.x0.expand(batch, -1)
        r = torch.relu(x)
        xs = []
        for t in range(steps):
            u_t = torch.relu(u[:, t] + self.s_in * torch.randn_like(u[:, t]))
            x = (1 - a) * x + a * (r @ w_rec.T + u_t @ w_in.T) + self.s_rec * torch.randn_like(x)
            r = torch.relu(x)
            xs.append(x)
        return r @ w_out.T, xs, w_rec

    def omega(self, loss, xs, w_rec):
        """Pascanu et al. 2013, written directly (as the torch backend does)."""
        v = torch.stack(torch.autograd.grad(loss, xs, retain_graph=True), 1).detach()
        x = torch.stack(xs, 1)
        v_next = v[:, 1:]
        prop = (1 - self.alpha) * v_next + self.alpha * (v_next @ w_rec) * (x[:, :-1] > 0).to(x.dtype)
        num, den = prop.norm(dim=-1), v_next.norm(dim=-1)
        ok = den > 1e-20
        return ((num[ok] / den[ok] - 1) ** 2).mean()
