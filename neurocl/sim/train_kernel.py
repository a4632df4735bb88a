"""Fused numba training kernels for the E/I network, wrapped as torch autograd Functions.

Per step (batch first, a = dt / tau, see :mod:`neurocl.sim.ei_rnn`)::

    x_t = (1 - a) x_{t-1} + a (W_rec r_{t-1} + W_in u~_t + b_rec) + s_rec xi_t,   r_t = f(x_t)
    z_t = W_out r_t + b_out,   u~_t = [u_t + s_in xi'_t]_+

The Functions take the EFFECTIVE weights (the output of :func:`neurocl.sim.weights.effective_weights`)
as inputs, so torch autograd carries the gradient from effective to raw parameters through
phi, the masks and the signs: the constraints stay in one place.

Two Functions, so that ``states["x"]`` behaves as in the torch backend:

* :class:`Trajectory`: (u, W_in, W_rec, b_rec, x0) -> x (B, T, n), plus a scalar ``link``.
  One fused kernel draws the noise, integrates the network, computes the readout and keeps
  everything the backward pass needs (the :class:`Tape`).
* :class:`Readout`: (link, W_out, b_out, stack(x_1, ..., x_T)) -> (z, r). Its backward runs the
  backward-through-time recurrence and returns, for each x_t, the TOTAL derivative dL/dx_t
  (what autograd returns for x_t in the torch backend, where x_t feeds the next step). So
  ``torch.autograd.grad(loss, states["x"])`` and code written for the torch backend work
  unchanged. It leaves the totals on the tape and a gradient on ``link`` that says so;
  Trajectory's backward then receives (totals + any direct partials, e.g. from Omega through
  f'(x)) on x, runs the recurrence only on the difference (the direct partials, usually none)
  and forms the weight gradients from the sum.

:class:`OmegaFunction` is the Pascanu Omega regulariser of :meth:`EIRNN.omega` as one kernel.

Storage per sequence is time-shifted by one row, so that every weight gradient is a single
matrix product over the flattened (batch x (T + 1)) rows, with no copies:
``X[b, 0] = x0, X[b, t] = x_t``; ``R[b, t] = r_t``; ``U[b, t] = u~_{t+1}`` and
``G[b, t] = dL/dx_{t+1}`` with a zero last row; then dW_rec = a G^T R, dW_in = a G^T U.

Work is split over batch chunks, one per thread: sequences are independent, so a chunk runs the
whole time loop without synchronising; only the weight gradients are summed over chunks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from .kernels import (
    ACTIVATION_CODES, NOISE_GIVEN, NOISE_KERNEL, NOISE_OFF, dact_row, forward_kernel, stream_key,
)


# ---------------------------------------------------------------- kernels
# Loops over units are kept branch-free (flags are tested once per row, the activation is picked
# once per row by act_row / dact_row) so that LLVM vectorises them; at N = 64 the elementwise
# work costs as much as the matrix products.
#
# Each parallel kernel is a thin prange over batch chunks around a serial per-chunk function
# (numba's parallel compiler is slow on large bodies). Slice assignments are written as loops:
# numba compiles each ``a[:, 1:] = b`` into seconds' worth of generic code.
@njit(cache=True)
def _chunk(c, n_chunks, batch):
    return c * batch // n_chunks, (c + 1) * batch // n_chunks


@njit(cache=True, inline="always", error_model="numpy")
def _leak_product(v, av, alpha, uniform, w_rec, out):
    """out = v W_rec with one leak (scaled after, by the caller), (a v) W_rec with one per unit."""
    if uniform:
        np.dot(v, w_rec, out)
    else:
        for b in range(v.shape[0]):
            for i in range(v.shape[1]):
                av[b, i] = alpha[i] * v[b, i]
        np.dot(av, w_rec, out)


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _bptt_chunk(xs, rs, w_rec, w_out, alpha, keep, pscale, uniform, act, n_chunks,
                gz, gr, gx, use_gz, use_gr, use_gx, g, gx0, gw_out, gb_out,
                omega, want_dx, q, gxo, om_sums, gw_om, c):
    batch, rows, n = xs.shape
    steps = rows - 1
    n_out = w_out.shape[0]
    b0, b1 = _chunk(c, n_chunks, batch)
    nb = b1 - b0
    xc = xs[b0:b1]
    rc = rs[b0:b1]
    gc = g[b0:b1]
    # Readout: dL/dr_t = gz_t W_out for all steps in one product (row 0 of gzc is 0).
    dr = np.empty((nb * rows if use_gz else 0, n), dtype=xs.dtype)
    if use_gz:
        gzc = np.zeros((nb, rows, n_out), dtype=xs.dtype)
        for b in range(nb):
            for t in range(steps):
                for k in range(n_out):
                    gzc[b, t + 1, k] = gz[b0 + b, t, k]
        gzf = gzc.reshape(nb * rows, n_out)
        np.dot(gzf, w_out, dr)
        np.dot(gzf.T, rc.reshape(nb * rows, n), gw_out[c])
        for k in range(n_out):
            gb_out[c, k] = 0
        for j in range(nb * rows):
            for k in range(n_out):
                gb_out[c, k] += gzf[j, k]
    nxt = np.zeros((nb, n), dtype=xs.dtype)  # dL/dx_{t+1}
    # Per-unit leaks: the product takes a * dL/dx_{t+1} (a of each postsynaptic unit); one leak:
    # the product takes dL/dx_{t+1} and pscale = a scales after it, as it always has.
    anxt = np.zeros((0 if uniform else nb, n), dtype=xs.dtype)
    prop = np.zeros((nb, n), dtype=xs.dtype)  # (a dL/dx_{t+1}) W_rec (0 past the end)
    s = np.empty(n, dtype=xs.dtype)
    fp = np.empty(n, dtype=xs.dtype)
    # Omega (when asked): the pair (v_{t+1} = dL/dx_{t+1}, x_t) needs v_{t+1} W_rec, which the
    # recurrence computes anyway (prop). Q[b, t] = d(sum)/dp * f'(x_t) lines up with
    # G[b, t] = v_{t+1}, so the W_rec gradient is one product a G^T Q per chunk.
    qc = q[b0:b1]
    ofp = np.empty(n, dtype=xs.dtype)
    ofpp = np.empty(n, dtype=xs.dtype)
    p = np.empty(n, dtype=xs.dtype)
    total = 0.0
    count = 0.0
    if omega:
        for b in range(nb):
            for i in range(n):
                qc[b, 0, i] = 0
                qc[b, steps, i] = 0
    for t in range(steps, 0, -1):
        if t < steps:
            _leak_product(nxt, anxt, alpha, uniform, w_rec, prop)
        for b in range(nb):
            pb = prop[b]
            dact_row(xc[b, t], rc[b, t], fp, act)
            nb_ = nxt[b]
            out = gc[b, t - 1]
            if omega and t < steps:
                term, valid = _omega_row(nb_, pb, xc[b, t], rc[b, t], pscale, keep, act, want_dx,
                                         ofp, ofpp, p, qc[b, t], gxo[b0 + b, t - 1] if want_dx else p)
                total += term
                count += valid
            if use_gz and not use_gr and not use_gx:
                # The common case (a loss on z only), in one pass.
                drb = dr[b * rows + t]
                for i in range(n):
                    v = keep[i] * nb_[i] + fp[i] * (pscale * pb[i] + drb[i])
                    out[i] = v
                    nb_[i] = v
                continue
            for i in range(n):
                s[i] = pscale * pb[i]
            if use_gz:
                drb = dr[b * rows + t]
                for i in range(n):
                    s[i] += drb[i]
            if use_gr:
                grb = gr[b0 + b, t - 1]
                for i in range(n):
                    s[i] += grb[i]
            for i in range(n):
                out[i] = keep[i] * nb_[i] + fp[i] * s[i]
            if use_gx:
                gxb = gx[b0 + b, t - 1]
                for i in range(n):
                    out[i] += gxb[i]
            for i in range(n):
                nb_[i] = out[i]
    for b in range(nb):
        gl = gc[b, steps]
        for i in range(n):
            gl[i] = 0
    _leak_product(nxt, anxt, alpha, uniform, w_rec, prop)
    for i in range(n):
        gx0[c, i] = 0
    for b in range(nb):
        dact_row(xc[b, 0], rc[b, 0], fp, act)
        nb_ = nxt[b]
        pb = prop[b]
        for i in range(n):
            gx0[c, i] += keep[i] * nb_[i] + pscale * pb[i] * fp[i]
    if omega:
        om_sums[c, 0] = total
        om_sums[c, 1] = count
        np.dot(gc.reshape(nb * rows, n).T, qc.reshape(nb * rows, n), gw_om[c])
        for i in range(n):
            for k in range(n):
                gw_om[c, i, k] *= alpha[i]


@njit(cache=True, parallel=True, error_model="numpy")
def bptt_kernel(xs, rs, w_rec, w_out, alpha, keep, pscale, uniform, act, n_chunks,
                gz, gr, gx, use_gz, use_gr, use_gx, g, gx0, gw_out, gb_out,
                omega, want_dx, q, gxo, om_sums, gw_om):
    """The adjoint recurrence: g[b, t - 1] = dL/dx_t (t = 1..T), g[b, T] = 0.

    Direct partials: gz (B, T, n_out) on z, gr (B, T, n) on r, gx (B, T, n) on x (each used
    only if its flag is set). Per chunk c: gx0[c] (dL/dx0 summed over the chunk) and, when
    use_gz, gw_out[c], gb_out[c] (the readout gradients).

    With ``omega``, also Pascanu's Omega for v = the g being computed, as :func:`omega_kernel`
    defines it: om_sums[c] = (sum of (ratio - 1)^2, number of valid pairs), gw_om[c] = its
    gradient with respect to W_rec and, when want_dx, gxo (B, T, n) = its partials on x
    (q (B, T + 1, n) is workspace).
    """
    for c in prange(n_chunks):
        _bptt_chunk(xs, rs, w_rec, w_out, alpha, keep, pscale, uniform, act, n_chunks,
                    gz, gr, gx, use_gz, use_gr, use_gx, g, gx0, gw_out, gb_out,
                    omega, want_dx, q, gxo, om_sums, gw_om, c)


@njit(cache=True, error_model="numpy")
def _weight_grad_chunk(g, rs, us, w_in, alpha, pscale, uniform, rectify, n_chunks, want_w_rec, want_w_in, want_b_rec,
                       want_u, gw_rec, gw_in, gb_rec, gu, c):
    batch, rows, n = g.shape
    n_in = us.shape[2]
    steps = rows - 1
    b0, b1 = _chunk(c, n_chunks, batch)
    nb = b1 - b0
    gf = g[b0:b1].reshape(nb * rows, n)
    if want_w_rec:
        np.dot(gf.T, rs[b0:b1].reshape(nb * rows, n), gw_rec[c])
        for i in range(n):
            for j in range(n):
                gw_rec[c, i, j] *= alpha[i]
    if want_w_in:
        np.dot(gf.T, us[b0:b1].reshape(nb * rows, n_in), gw_in[c])
        for i in range(n):
            for j in range(n_in):
                gw_in[c, i, j] *= alpha[i]
    if want_b_rec:
        for i in range(n):
            gb_rec[c, i] = 0
        for j in range(nb * rows):
            for i in range(n):
                gb_rec[c, i] += gf[j, i]
        for i in range(n):
            gb_rec[c, i] *= alpha[i]
    if want_u:
        du = np.empty((nb * rows, n_in), dtype=g.dtype)
        if uniform:
            np.dot(gf, w_in, du)
        else:
            ga = np.empty((nb * rows, n), dtype=g.dtype)
            for j in range(nb * rows):
                for i in range(n):
                    ga[j, i] = alpha[i] * gf[j, i]
            np.dot(ga, w_in, du)
        for b in range(nb):
            for t in range(steps):
                for k in range(n_in):
                    v = pscale * du[b * rows + t, k]
                    if rectify and not us[b0 + b, t, k] > 0:
                        v = v * 0
                    gu[b0 + b, t, k] = v


@njit(cache=True, parallel=True, error_model="numpy")
def weight_grad_kernel(g, rs, us, w_in, alpha, pscale, uniform, rectify, n_chunks, want_w_rec, want_w_in, want_b_rec,
                       want_u, gw_rec, gw_in, gb_rec, gu):
    """Per chunk: a G^T R, a G^T U, a sum(G) (partials to be summed), and dL/du (B, T, n_in)."""
    for c in prange(n_chunks):
        _weight_grad_chunk(g, rs, us, w_in, alpha, pscale, uniform, rectify, n_chunks, want_w_rec, want_w_in, want_b_rec,
                           want_u, gw_rec, gw_in, gb_rec, gu, c)


@njit(cache=True, error_model="numpy")
def _direct_partials(gx, g, subtract, out):
    """out = gx - g[:, :-1] (or gx); True if anything nonzero is left."""
    batch, steps, n = gx.shape
    nonzero = False
    for b in range(batch):
        for t in range(steps):
            src = gx[b, t]
            dst = out[b, t]
            if subtract:
                gr = g[b, t]
                for i in range(n):
                    dst[i] = src[i] - gr[i]
            else:
                for i in range(n):
                    dst[i] = src[i]
            for i in range(n):
                if dst[i] != 0:
                    nonzero = True
    return nonzero


# ---------------------------------------------------------------- BLAS threads
_BLAS_THREADS: list | None = None

# (get, set) symbol names of the BLAS thread count, per threadpoolctl internal_api.
_THREAD_SYMBOLS = {
    "openblas": [(f"{p}openblas_get_num_threads{x}", f"{p}openblas_set_num_threads{x}")
                 for p in ("", "scipy_") for x in ("", "64_")],
    "mkl": [("MKL_Get_Max_Threads", "MKL_Set_Num_Threads")],
    "blis": [("bli_thread_get_num_threads", "bli_thread_set_num_threads")],
}


def _blas_thread_controls() -> list:
    """(get, set) callables for each BLAS library loaded in the process (found once)."""
    global _BLAS_THREADS
    if _BLAS_THREADS is None:
        _BLAS_THREADS = []
        try:
            import ctypes

            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls)
            from threadpoolctl import ThreadpoolController

            for lib in ThreadpoolController().lib_controllers:
                if lib.user_api != "blas":
                    continue
                # Direct ctypes calls: a kernel call toggles these several times per step,
                # and threadpoolctl's wrappers cost tens of microseconds each time.
                found = None
                handle = ctypes.CDLL(lib.filepath)
                for get, set_ in _THREAD_SYMBOLS.get(lib.internal_api, []):
                    try:
                        fget, fset = getattr(handle, get), getattr(handle, set_)
                    except AttributeError:
                        continue
                    fget.restype, fget.argtypes = ctypes.c_int, []
                    fset.restype, fset.argtypes = None, [ctypes.c_int]
                    found = (fget, fset)
                    break
                _BLAS_THREADS.append(found or (lib.get_num_threads, lib.set_num_threads))
        except Exception:  # pragma: no cover - threadpoolctl missing: nothing to control
            _BLAS_THREADS = []
    return _BLAS_THREADS


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread while a kernel runs: the kernels already put one batch chunk on each
    thread, and a threaded BLAS called inside them would oversubscribe the cores (OpenBLAS also
    warns when it is called inside an OpenMP region)."""
    changed = []
    for get, set_ in _blas_thread_controls():
        k = get()
        if k != 1:
            set_(1)
            changed.append((set_, k))
    try:
        yield
    finally:
        for set_, k in changed:
            set_(k)


# ---------------------------------------------------------------- autograd
@dataclass
class Tape:
    """What the forward kernel computed and the backward passes read (numpy, shared memory)."""

    act: int
    rectify: bool
    alpha: np.ndarray  # a and 1 - a per unit, in the model's dtype
    keep: np.ndarray
    pscale: Any  # a (one leak: the kernels scale after the W_rec products) or 1 (a per unit)
    uniform: bool
    n_chunks: int
    w_out: np.ndarray | None = None
    us: np.ndarray | None = None
    xs: np.ndarray | None = None
    rs: np.ndarray | None = None
    zs: np.ndarray | None = None
    w_in: np.ndarray | None = None
    w_rec: np.ndarray | None = None
    # Set by Readout.backward: dL/dx_t (totals) and dL/dx0 per chunk; cache_key: the (gz, gr)
    # they came from and the results, reused when Omega and loss.backward() ask twice.
    g: np.ndarray | None = None
    gx0: np.ndarray | None = None
    cache_key: tuple | None = field(default=None, repr=False)


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t.detach().numpy())


def _empty3(dtype) -> np.ndarray:
    return np.empty((0, 0, 0), dtype=dtype)


def _bptt(tape: Tape, gz, gr, gx, w_out, omega: bool = False):
    """Run the adjoint recurrence; returns (g (B, T + 1, n), gx0 per chunk, gw_out, gb_out),
    plus, with ``omega``, (Omega's sum, count, its W_rec gradient (summed), its x partials or None)."""
    xs = tape.xs
    dt = xs.dtype
    batch, rows, n = xs.shape
    n_out = w_out.shape[0]
    k = tape.n_chunks
    g = np.empty_like(xs)
    gx0 = np.empty((k, n), dtype=dt)
    gw_out = np.empty((k, n_out, n), dtype=dt)
    gb_out = np.empty((k, n_out), dtype=dt)
    want_dx = omega and tape.act != ACTIVATION_CODES["rectify"]
    q = np.empty_like(xs) if omega else _empty3(dt)
    gxo = np.zeros((batch, rows - 1, n) if want_dx else (0, 0, 0), dtype=dt)
    om_sums = np.zeros((k, 2), dtype=np.float64)
    gw_om = np.empty((k, n, n) if omega else (0, 0, 0), dtype=dt)
    with single_threaded_blas():
        bptt_kernel(
            xs, tape.rs, tape.w_rec, w_out, tape.alpha, tape.keep, tape.pscale, tape.uniform, tape.act, k,
            gz if gz is not None else _empty3(dt), gr if gr is not None else _empty3(dt),
            gx if gx is not None else _empty3(dt), gz is not None, gr is not None, gx is not None,
            g, gx0, gw_out, gb_out, omega, want_dx, q, gxo, om_sums, gw_om,
        )
    if not omega:
        return g, gx0, gw_out, gb_out
    total, count = om_sums.sum(0)
    return g, gx0, gw_out, gb_out, (float(total), int(count), gw_om.sum(0), gxo if want_dx else None)


def _run_forward(tape: Tape, u, w_in, w_rec, b_rec, x0, noise: dict) -> None:
    """The forward kernel: fills the tape's us, xs, rs, zs (B, T + 1, .)."""
    dt = tape.alpha.dtype
    u_np = _np(u)
    batch, steps, n_in = u_np.shape
    n = w_rec.shape[0]
    n_out = tape.w_out.shape[0]
    rows = steps + 1
    tape.w_in, tape.w_rec = _np(w_in), _np(w_rec)
    tape.us = np.empty((batch, rows, n_in), dtype=dt)
    tape.xs = np.empty((batch, rows, n), dtype=dt)
    tape.rs = np.empty((batch, rows, n), dtype=dt)
    tape.zs = np.empty((batch, rows, n_out), dtype=dt)
    with single_threaded_blas():
        forward_kernel(
            u_np, noise["xi_in"], noise["xi_rec"], noise["key_in"], noise["key_rec"], noise["mode"],
            dt.type(noise["in_scale"]), noise["rec_scale"], tape.rectify,
            tape.w_in, tape.w_rec, tape.w_out, _np(b_rec), noise["b_out"], _np(x0),
            tape.alpha, tape.keep, tape.act, tape.n_chunks,
            True, True, 1, tape.us, tape.xs, tape.rs, tape.zs,
        )


def _weight_grads(tape: Tape, g: np.ndarray, need_u: bool, need_w_in: bool, need_w_rec: bool, need_b_rec: bool):
    """(gu, gW_in, gW_rec, gb_rec) from g = dL/dx_t (each None unless asked for)."""
    dt = g.dtype
    batch, rows, n = g.shape
    n_in = tape.us.shape[2]
    k = tape.n_chunks
    gw_rec = np.empty((k, n, n) if need_w_rec else (0, 0, 0), dtype=dt)
    gw_in = np.empty((k, n, n_in) if need_w_in else (0, 0, 0), dtype=dt)
    gb_rec = np.empty((k, n) if need_b_rec else (0, 0), dtype=dt)
    gu = np.empty((batch, rows - 1, n_in) if need_u else (0, 0, 0), dtype=dt)
    if need_w_rec or need_w_in or need_b_rec or need_u:
        with single_threaded_blas():
            weight_grad_kernel(g, tape.rs, tape.us, tape.w_in, tape.alpha, tape.pscale, tape.uniform, tape.rectify, k,
                               need_w_rec, need_w_in, need_b_rec, need_u, gw_rec, gw_in, gb_rec, gu)
    return (
        gu if need_u else None,
        gw_in.sum(0) if need_w_in else None,
        gw_rec.sum(0) if need_w_rec else None,
        gb_rec.sum(0) if need_b_rec else None,
    )


class Trajectory(torch.autograd.Function):
    """(u, W_in, W_rec, b_rec, x0) -> (x (B, T, n), link); see the module docstring."""

    @staticmethod
    def forward(ctx, tape: Tape, u, w_in, w_rec, b_rec, x0, noise: dict):
        ctx.set_materialize_grads(False)
        _run_forward(tape, u, w_in, w_rec, b_rec, x0, noise)
        ctx.tape = tape
        # Saved so that autograd notices in-place changes to the weights before backward.
        ctx.save_for_backward(w_in, w_rec)
        link = torch.zeros((), dtype=w_rec.dtype)
        return torch.from_numpy(tape.xs)[:, 1:], link

    @staticmethod
    @once_differentiable
    def backward(ctx, gx, glink):
        tape: Tape = ctx.tape
        ctx.saved_tensors  # raises if the weights were changed in place
        need_u, need_w_in, need_w_rec, need_b_rec, need_x0 = ctx.needs_input_grad[1:6]
        readout_ran = glink is not None and tape.g is not None
        g, gx0 = (tape.g, tape.gx0) if readout_ran else (None, None)
        if gx is not None:
            gx_np = np.ascontiguousarray(gx.detach().numpy())
            direct = np.empty_like(gx_np)
            # gx holds the totals Readout returned plus any direct partials: keep the latter.
            if _direct_partials(gx_np, g if readout_ran else tape.xs, readout_ran, direct):
                gp, gx0p, _, _ = _bptt(tape, None, None, direct, tape.w_out)
                g, gx0 = (gp, gx0p) if g is None else (g + gp, gx0 + gx0p)
        if g is None:
            return (None,) * 7
        gu, gw_in, gw_rec, gb_rec = _weight_grads(tape, g, need_u, need_w_in, need_w_rec, need_b_rec)
        t = _tensor
        return None, t(gu), t(gw_in), t(gw_rec), t(gb_rec), t(gx0.sum(0)) if need_x0 else None, None


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


class Readout(torch.autograd.Function):
    """(link, W_out, b_out, stack(x_1..x_T)) -> (z, r); backward returns dL/dx_t as totals."""

    @staticmethod
    def forward(ctx, tape: Tape, link, w_out, b_out, x_steps):
        ctx.set_materialize_grads(False)
        ctx.tape = tape
        ctx.save_for_backward(w_out)
        return torch.from_numpy(tape.zs)[:, 1:], torch.from_numpy(tape.rs)[:, 1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, gz, gr):
        tape: Tape = ctx.tape
        (w_out,) = ctx.saved_tensors
        steps = tape.xs.shape[1] - 1
        if gz is None and gr is None:
            return (None,) * 5
        gz_np, gr_np = _np(gz), _np(gr)
        # The Omega regulariser asks for dL/dx before loss.backward() asks again with the same
        # gz: the second time, reuse the recurrence.
        key = (gz_np, gr_np)
        cached = tape.cache_key
        if (cached is not None and _same(cached[0], gz_np) and _same(cached[1], gr_np)):
            g, gx0, gw_out, gb_out = cached[2]
        else:
            g, gx0, gw_out, gb_out = _bptt(tape, gz_np, gr_np, None, tape.w_out)
            tape.cache_key = (*key, (g, gx0, gw_out, gb_out))
        tape.g, tape.gx0 = g, gx0
        need_w_out, need_b_out = ctx.needs_input_grad[2:4]
        t = torch.from_numpy
        use_gz = gz_np is not None
        g_t = t(g)
        return (
            None,
            torch.ones((), dtype=g_t.dtype),
            t(gw_out.sum(0)) if (need_w_out and use_gz) else None,
            t(gb_out.sum(0)) if (need_b_out and use_gz) else None,
            g_t[:, :steps],
        )


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(a, b)


# ---------------------------------------------------------------- model entry point
def _n_chunks(batch: int) -> int:
    # One chunk per thread; very small chunks do not pay for the threading.
    return max(1, min(numba.get_num_threads(), batch // 4 or 1))


def _prepare(model, u: torch.Tensor, noise: Any):
    """Effective weights, the noise spec and an empty tape for one kernel call."""
    c = model.config
    if u.device.type != "cpu":
        raise ValueError("the numba backend runs on CPU tensors only (use backend 'torch' or 'auto' on CUDA)")
    w = model.effective_weights()
    dtype = np.dtype(c.dtype)
    batch = u.shape[0]
    if noise is None and model.noise:
        noise = {"seed": int(torch.randint(0, 2**62, (), dtype=torch.int64))}
    spec = noise_spec(noise, dtype)
    spec["in_scale"] = math.sqrt(2 * c.tau_in / c.dt) * c.sigma_in
    spec["b_out"] = _np(model.b_out)
    leak = leak_arrays(model)
    spec["rec_scale"] = leak["rec_scale"]
    tape = Tape(
        act=ACTIVATION_CODES[c.activation], rectify=bool(c.rectify_inputs),
        alpha=leak["alpha"], keep=leak["keep"], pscale=leak["pscale"], uniform=leak["uniform"],
        n_chunks=_n_chunks(batch), w_out=_np(w["W_out"]),
    )
    return w, spec, tape


def noise_spec(noise: Any, dtype) -> dict[str, Any]:
    """How the forward kernel gets its noise: ``{"seed": s}`` draws it inside from s's streams;
    a dict ``{"in", "rec"}`` of standard normals (tensors or arrays) gives it; None or False
    switches it off. Returns the kernel's mode, keys and arrays."""
    dtype = np.dtype(dtype)
    empty = _empty3(dtype)
    spec = {"xi_in": empty, "xi_rec": empty, "key_in": np.uint64(0), "key_rec": np.uint64(0), "mode": NOISE_OFF}
    if isinstance(noise, dict) and "seed" in noise:
        seed = np.uint64(int(noise["seed"]) % 2**64)
        spec.update(mode=NOISE_KERNEL, key_in=np.uint64(stream_key(seed, 0)), key_rec=np.uint64(stream_key(seed, 1)))
    elif isinstance(noise, dict):
        arrays = {k: noise[k].detach().cpu().numpy() if isinstance(noise[k], torch.Tensor) else noise[k] for k in ("in", "rec")}
        spec.update(mode=NOISE_GIVEN, xi_in=np.ascontiguousarray(np.asarray(arrays["in"], dtype=dtype)),
                    xi_rec=np.ascontiguousarray(np.asarray(arrays["rec"], dtype=dtype)))
    elif noise is not None and noise is not False:
        raise TypeError(f"noise must be None, False or a dict, not {type(noise).__name__}")
    return spec


def leak_arrays(model) -> dict[str, Any]:
    """The leak as the kernels take it: a, 1 - a and the noise scale sqrt(2 a) sigma_rec per
    unit (model dtype), and pscale, uniform (see :class:`Tape`). One leak gives the numbers the
    kernels have always used; a leak per unit gives what the torch backend computes."""
    c = model.config
    dtype = np.dtype(c.dtype)
    a = model.alpha
    if isinstance(a, float):
        full = lambda v: np.full(c.n, v, dtype=dtype)  # noqa: E731
        return {"alpha": full(a), "keep": full(1 - a), "rec_scale": full(math.sqrt(2 * a) * c.sigma_rec),
                "pscale": dtype.type(a), "uniform": True}
    with torch.no_grad():
        a = a.detach().cpu()
        arr = lambda t: np.ascontiguousarray(t.numpy(), dtype=dtype)  # noqa: E731
        return {"alpha": arr(a), "keep": arr(1 - a), "rec_scale": arr(torch.sqrt(2 * a) * c.sigma_rec),
                "pscale": dtype.type(1), "uniform": False}


def kernel_forward(model, u: torch.Tensor, noise: Any):
    """The numba backend of :meth:`EIRNN.forward`: returns z (B, T, n_out) and the states.

    ``noise``: None draws it inside the kernel (the stream's seed comes from torch's global
    generator, so ``torch.manual_seed`` makes it reproducible), False switches it off, a dict
    ``{"rec", "in"}`` of standard normals uses those, and ``{"seed": int}`` draws it inside the
    kernel from that seed (the same normals as :func:`kernel_noise` returns).
    """
    w, spec, tape = _prepare(model, u, noise)
    x, link = Trajectory.apply(tape, u, w["W_in"], w["W_rec"], model.b_rec, model.x0, spec)
    xs = StepStates(x.unbind(1))
    xs.kernel = _OmegaContext(tape, x, w["W_rec"], model.config.activation)
    # Readout reads the steps through xs (one stacked tensor: Function.apply costs per argument),
    # so that gradients with respect to states["x"] pass through its backward.
    z, r = Readout.apply(tape, link, w["W_out"], model.b_out, torch.stack(xs, 1))
    return z, {"x": xs, "r": r}


# ---------------------------------------------------------------- fused training loss
class FusedLoss(torch.autograd.Function):
    """(W_in, W_rec, W_out, b_rec, b_out, x0) -> (loss, Omega, z) in one call.

    The forward pass runs the forward kernel, the loss on z (``loss_of_z``, torch code run on a
    detached copy of z, so that the loss is written once for both backends) and the
    backward-through-time kernel for dL/dx_t, which also computes Omega when asked (Omega needs
    dL/dx_t and the products the recurrence makes anyway). The backward pass only forms the
    weight gradients from what is stored, scaled by the incoming gradients of loss and Omega. This skips the per-step autograd graph of
    :func:`kernel_forward` (unbinding and stacking the steps, two Functions, a second
    autograd pass for Omega), most of a step's cost at R1's size.
    """

    @staticmethod
    def forward(ctx, tape: Tape, noise: dict, loss_of_z, want_omega: bool, u, w_in, w_rec, w_out, b_rec, b_out, x0):
        ctx.set_materialize_grads(False)
        _run_forward(tape, u, w_in, w_rec, b_rec, x0, noise)
        z = torch.from_numpy(tape.zs)[:, 1:]
        z_leaf = z.detach().requires_grad_()
        with torch.enable_grad():
            loss = loss_of_z(z_leaf)
        (gz,) = torch.autograd.grad(loss, z_leaf)
        out = _bptt(tape, np.ascontiguousarray(gz.numpy()), None, None, tape.w_out, omega=want_omega)
        g, gx0, gw_out, gb_out = out[:4]
        ctx.tape = tape
        ctx.task = (g, gx0.sum(0), gw_out.sum(0), gb_out.sum(0))
        ctx.omega = None
        omega = torch.zeros((), dtype=w_rec.dtype)
        if want_omega and out[4][1]:
            total, count, gw, gx = out[4]
            omega = torch.tensor(total / count, dtype=w_rec.dtype)
            g_om = gx0_om = None
            if gx is not None and np.any(gx):
                # Omega reaches x_t through f'(x_t): run the recurrence on those partials.
                g_om, gx0_om, _, _ = _bptt(tape, None, None, gx, tape.w_out)
                g_om /= count
                gx0_om = gx0_om.sum(0) / count
            ctx.omega = (g_om, gx0_om, gw / count)
        # Saved so that autograd notices in-place changes to the weights before backward.
        ctx.save_for_backward(w_in, w_rec, w_out)
        ctx.mark_non_differentiable(z)
        return loss.detach(), omega, z

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_omega, g_z):
        tape: Tape = ctx.tape
        ctx.saved_tensors  # raises if the weights were changed in place
        need_w_in, need_w_rec, need_w_out, need_b_rec, need_b_out, need_x0 = ctx.needs_input_grad[5:11]
        none = (None,) * 11
        s_loss = None if g_loss is None else float(g_loss)
        s_om = None if (g_omega is None or ctx.omega is None) else float(g_omega)
        if s_loss is None and s_om is None:
            return none
        g, gx0, gw_out, gb_out = ctx.task
        g_om, gx0_om, gw_om = ctx.omega if s_om is not None else (None, None, None)
        # Weight gradients are linear in dL/dx: one kernel call on the combined adjoint.
        if s_loss is not None and g_om is not None:
            g_all, gx0_all = s_loss * g + s_om * g_om, s_loss * gx0 + s_om * gx0_om
            scale = 1.0
        elif s_loss is not None:
            g_all, gx0_all, scale = g, gx0, s_loss
        elif g_om is not None:
            g_all, gx0_all, scale = g_om, gx0_om, s_om
        else:
            g_all, gx0_all, scale = None, None, 1.0
        gw_in = gw_rec = gb_rec = None
        if g_all is not None:
            _, gw_in, gw_rec, gb_rec = _weight_grads(tape, g_all, False, need_w_in, need_w_rec, need_b_rec)
        dt = tape.xs.dtype.type

        def scaled(a, k):
            if a is None:
                return None
            return torch.from_numpy(a if k == 1.0 else a * dt(k))

        out_w_rec = scaled(gw_rec, scale)
        if need_w_rec and s_om is not None:
            extra = torch.from_numpy(gw_om * dt(s_om))
            out_w_rec = extra if out_w_rec is None else out_w_rec + extra
        has_loss = s_loss is not None
        return (
            None, None, None, None, None,
            scaled(gw_in, scale),
            out_w_rec,
            scaled(gw_out, s_loss) if need_w_out and has_loss else None,
            scaled(gb_rec, scale),
            scaled(gb_out, s_loss) if need_b_out and has_loss else None,
            scaled(gx0_all, scale) if need_x0 and gx0_all is not None else None,
        )


def kernel_fused_loss(model, u: torch.Tensor, loss_of_z, want_omega: bool, noise: Any = None):
    """Loss, Omega and z of a batch through :class:`FusedLoss` (the numba training path).

    ``loss_of_z(z)`` maps the outputs (B, T, n_out) to the scalar loss. Returns (loss, omega, z);
    gradients reach the raw parameters through :func:`effective_weights` as usual.
    """
    w, spec, tape = _prepare(model, u, noise)
    return FusedLoss.apply(tape, spec, loss_of_z, want_omega, u, w["W_in"], w["W_rec"], w["W_out"],
                           model.b_rec, model.b_out, model.x0)


# ---------------------------------------------------------------- Omega
class StepStates(list):
    """states["x"] of the numba backend: the list of x_t, plus what the fused Omega needs."""

    kernel: "_OmegaContext"


@dataclass
class _OmegaContext:
    tape: Tape
    x: torch.Tensor  # Trajectory's output (B, T, n)
    w_rec: torch.Tensor  # the effective W_rec the forward pass used (in the autograd graph)
    activation: str

    def omega(self, loss: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`EIRNN.omega` for the numba backend: same value and gradients, one kernel."""
        grads = torch.autograd.grad(loss, xs, retain_graph=True, allow_unused=True)
        v = torch.stack([g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs)], dim=1)
        return OmegaFunction.apply(self.tape, np.ascontiguousarray(v.detach().numpy()), self.w_rec, self.x)


@njit(cache=True, inline="always", error_model="numpy")
def _omega_derivatives(x, r, d, d2, code):
    """f' as activation_derivative computes it (softplus: sigmoid without torch's threshold)
    and its derivative f'' (the gradient of Omega through f'(x))."""
    n = x.size
    if code == 0:
        for i in range(n):
            d[i] = 1 if x[i] > 0 else 0
            d2[i] = 0
    elif code == 1:
        for i in range(n):
            d[i] = 1 - r[i] * r[i]
            d2[i] = -2 * r[i] * d[i]
    elif code == 2:
        for i in range(n):
            sg = 1 / (1 + np.exp(-x[i]))
            d[i] = sg
            d2[i] = sg * (1 - sg)
    else:
        for i in range(n):
            d[i] = r[i] * (1 - r[i])
            d2[i] = d[i] * (1 - 2 * r[i])


@njit(cache=True, inline="always", error_model="numpy")
def _omega_row(v, pv, x, r, pscale, keep, act, want_dx, fp, fpp, p, q, gx):
    """One (sequence, step) term of Omega for v = v_{t+1}, pv = v_{t+1} W_rec (one leak,
    pscale = a) or (a v_{t+1}) W_rec (a per unit, pscale = 1), and x_t, r_t.

    Returns ((ratio - 1)^2, 1), or (0, 0) where ||v|| vanishes; fills q = d(term)/dp * f'(x_t)
    (the W_rec gradient is a sum of v^T q) and, when want_dx, gx = d(term)/dx_t through f'.
    fp, fpp, p: scratch of length n.
    """
    n = v.size
    _omega_derivatives(x, r, fp, fpp, act)
    num2 = 0.0
    den2 = 0.0
    for i in range(n):
        p[i] = keep[i] * v[i] + pscale * pv[i] * fp[i]
        num2 += p[i] * p[i]
        den2 += v[i] * v[i]
    den = math.sqrt(den2)
    coef = 0.0
    term = 0.0
    valid = 0
    if den > 1e-20:
        num = math.sqrt(num2)
        ratio = num / den
        term = (ratio - 1) ** 2
        valid = 1
        coef = 2 * (ratio - 1) / (num * den) if num > 0 else 0.0
    for i in range(n):
        q[i] = (coef * p[i]) * fp[i]
    if want_dx:
        for i in range(n):
            gx[i] = pscale * pv[i] * (coef * p[i]) * fpp[i]
    return term, valid


@njit(cache=True, error_model="numpy")
def omega_kernel(v, xs, rs, w_rec, alpha, keep, pscale, uniform, act, want_dx, gw, gx):
    """Pascanu's Omega and its gradients, as :meth:`EIRNN.omega` writes them.

    v (B, T, n): dL/dx_t (held constant); xs, rs: the tape (row t = x_t). For the valid (b, t)
    (||v_{t+1}|| > 1e-20): p = (1 - a) v_{t+1} + a (v_{t+1} W) f'(x_t), ratio = ||p|| / ||v_{t+1}||.
    Returns (sum of (ratio - 1)^2, count); fills gw = d(sum)/dW_rec and, when want_dx,
    gx (B, T, n) = d(sum)/dx through f'(x_t) (divide both by count for the mean).
    """
    batch, steps, n = v.shape
    pairs = steps - 1
    m = batch * pairs
    vn = np.empty((m, n), dtype=v.dtype)
    for b in range(batch):
        for k in range(pairs):
            for i in range(n):
                vn[b * pairs + k, i] = v[b, k + 1, i]
    prop = np.empty((m, n), dtype=v.dtype)
    _leak_product(vn, np.empty((0 if uniform else m, n), dtype=v.dtype), alpha, uniform, w_rec, prop)
    qf = np.empty((m, n), dtype=v.dtype)  # d(sum)/dp * f'(x)
    fp = np.empty(n, dtype=v.dtype)
    fpp = np.empty(n, dtype=v.dtype)
    p = np.empty(n, dtype=v.dtype)
    total = 0.0
    count = 0
    if want_dx:
        for b in range(batch):
            for k in range(steps):
                for i in range(n):
                    gx[b, k, i] = 0
    for b in range(batch):
        for k in range(pairs):
            j = b * pairs + k
            term, valid = _omega_row(vn[j], prop[j], xs[b, k + 1], rs[b, k + 1], pscale, keep, act, want_dx,
                                     fp, fpp, p, qf[j], gx[b, k] if want_dx else p)
            total += term
            count += valid
    np.dot(vn.T, qf, gw)
    for i in range(n):
        for k in range(n):
            gw[i, k] *= alpha[i]
    return total, count


class OmegaFunction(torch.autograd.Function):
    """(W_rec, x) -> Omega, with v = dL/dx given (held constant)."""

    @staticmethod
    def forward(ctx, tape: Tape, v: np.ndarray, w_rec, x):
        ctx.set_materialize_grads(False)
        n = w_rec.shape[0]
        dt = v.dtype
        gw = np.empty((n, n), dtype=dt)
        want_dx = tape.act != ACTIVATION_CODES["rectify"]
        gx = np.empty(v.shape if want_dx else (0, 0, 0), dtype=dt)
        with single_threaded_blas():
            total, count = omega_kernel(v, tape.xs, tape.rs, tape.w_rec, tape.alpha, tape.keep, tape.pscale,
                                        tape.uniform, tape.act,
                                        want_dx, gw, gx if want_dx else v)
        ctx.count, ctx.gw, ctx.gx = count, gw, (gx if want_dx else None)
        return torch.tensor(total / count if count else 0.0, dtype=w_rec.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if grad is None or ctx.count == 0:
            return None, None, None, None
        scale = grad / ctx.count
        gw = torch.from_numpy(ctx.gw) * scale if ctx.needs_input_grad[2] else None
        gx = torch.from_numpy(ctx.gx) * scale if (ctx.gx is not None and ctx.needs_input_grad[3]) else None
        return None, None, gw, gx


def kernel_noise(model, batch: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """The standard normals the kernel draws for ``noise={"seed": seed}``, as a noise dict."""
    from .kernels import standard_normal

    c = model.config
    dtype = np.dtype(c.dtype)
    s = int(seed) % 2**64
    return {
        "in": torch.from_numpy(standard_normal(s, (batch, steps, c.n_in), 0, dtype)),
        "rec": torch.from_numpy(standard_normal(s, (batch, steps, c.n), 1, dtype)),
    }
