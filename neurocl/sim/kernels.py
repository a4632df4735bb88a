"""numba kernels for the E/I network (compiled once, cached on disk with ``cache=True``)."""

from __future__ import annotations

import numpy as np
from numba import njit

ACTIVATION_CODES = {"rectify": 0, "tanh": 1, "softplus": 2, "sigmoid": 3}


@njit(cache=True, inline="always")
def _act(v, code):
    if code == 0:
        return v if v > 0 else v * 0
    if code == 1:
        return np.tanh(v)
    if code == 2:
        # torch's softplus switches to the identity above 20 for accuracy.
        return v if v > 20 else np.log1p(np.exp(v))
    return 1 / (1 + np.exp(-v))


@njit(cache=True)
def simulate_forward(drive, w_rec, x0, rec_noise, alpha, act_code, use_noise):
    """Euler-integrate the rate network.

    drive: (B, T, n) = W_in_eff u~_t + b_rec; w_rec: (n, n) effective; x0: (n,);
    rec_noise: (B, T, n) already scaled by sqrt(2 a) sigma_rec (ignored unless use_noise).
    Returns x and r, each (B, T, n).
    """
    batch, steps, n = drive.shape
    xs = np.empty_like(drive)
    rs = np.empty_like(drive)
    x = np.empty((batch, n), dtype=drive.dtype)
    r = np.empty((batch, n), dtype=drive.dtype)
    for b in range(batch):
        for i in range(n):
            x[b, i] = x0[i]
            r[b, i] = _act(x0[i], act_code)
    keep = 1 - alpha
    w_t = np.ascontiguousarray(w_rec.T)
    for t in range(steps):
        rec = r @ w_t
        for b in range(batch):
            for i in range(n):
                v = keep * x[b, i] + alpha * (rec[b, i] + drive[b, t, i])
                if use_noise:
                    v = v + rec_noise[b, t, i]
                x[b, i] = v
                r[b, i] = _act(v, act_code)
                xs[b, t, i] = v
                rs[b, t, i] = r[b, i]
    return xs, rs
