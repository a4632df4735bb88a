"""The trainability report of an E/I network: spectra, balance, silent units, pinned synapses.

Section 4.2 of the Dale's-law spec: what makes a sign-constrained RNN hard to train shows in its
recurrent matrix before any training (Li et al. 2023 tie the normalised SVD entropy to the test
error) and in two things the matrix does not show, the leak a = dt/tau and the units or synapses
that no longer pass a gradient. The functions below are pure, on float64 numpy; :func:`report`
reads a model once and gathers them into one JSON-serialisable dict with a list of warnings,
each saying what is wrong and what to change.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NSE_LOW = 0.85
NON_NORMAL_RATIO = 5.0
SILENT_HIGH = 0.5
PINNED_HIGH = 0.2
INTEGRATION_LOW = 0.63  # 1 - 1/e: one time constant fits in the trial
SILENT_STEPS = 0.95
PROBE_TRIALS, PROBE_STEPS, PROBE_SEED = 64, 28, 0
EI_KINDS = ("ei-rnn",)  # model kinds with column signs and an n x n effective W_rec


class NotAnEINetwork(ValueError):
    """The model has no sign-constrained recurrent matrix to report on."""


# ---------------------------------------------------------------------------- spectra
def singular_values(W) -> np.ndarray:
    """Singular values of ``W``, largest first."""
    return np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)


def nse(W=None, *, s=None) -> float:
    """Normalised SVD entropy (Li et al. 2023): how evenly the singular values share the matrix.

    With p = s / sum(s) (the singular values, not their squares), NSE = -sum p log p / log N,
    N the number of singular values; zero singular values contribute 0. 1 for an orthogonal
    matrix (all equal), 0 for rank 1. NaN for the zero matrix, where no share is defined.
    """
    s = singular_values(W) if s is None else np.asarray(s, dtype=np.float64)
    if s.size < 2:
        return 1.0  # one singular value is trivially spread evenly
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s[s > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(s.size))


def singular_value_stats(W=None, *, s=None) -> dict[str, float]:
    """sigma1 (the largest gain one step can apply to a state), sigma1/sigma2 (a single dominant
    direction) and sigma1/median (how far the top stands out of the bulk)."""
    s = singular_values(W) if s is None else np.asarray(s, dtype=np.float64)
    med = float(np.median(s))
    return {
        "sigma1": float(s[0]),
        "sigma1_over_sigma2": _ratio(s[0], s[1]) if s.size > 1 else float("nan"),
        "sigma1_over_median": _ratio(s[0], med),
    }


def eigen_stats(W) -> dict[str, float]:
    """Spectral radius, the gap |lambda1| - |lambda2| (an outlier eigenvalue, such as the Perron
    mode of an unbalanced E/I matrix, shows as a large gap), 1^T W 1 / N (the gain along the
    uniform direction that outlier lives on), and the departure from normality
    ||W W^T - W^T W||_F / ||W||_F^2 (0 for a normal matrix, whose eigenvalues tell the gains;
    the larger it is, the more sigma1 exceeds the spectral radius)."""
    W = np.asarray(W, dtype=np.float64)
    mod = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    fro2 = float((W * W).sum())
    commutator = W @ W.T - W.T @ W
    return {
        "spectral_radius": float(mod[0]),
        "eig_gap": float(mod[0] - mod[1]) if mod.size > 1 else 0.0,
        "uniform_gain": float(W.sum() / W.shape[0]),
        "non_normality": float(np.linalg.norm(commutator) / fro2) if fro2 > 0 else 0.0,
    }


def leak_jacobian(W, alpha, fprime) -> np.ndarray:
    """J = diag(1 - a) + diag(a) W diag(f'(x*)): dx_t/dx_{t-1} of the leaky Euler step, the
    matrix backpropagation through time multiplies once per step. ``alpha`` is a number or one
    leak per unit (a postsynaptic row scaling); ``fprime`` is f' at the operating point."""
    W = np.asarray(W, dtype=np.float64)
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (W.shape[0],))
    f = np.asarray(fprime, dtype=np.float64)
    return np.diag(1 - a) + a[:, None] * W * f[None, :]


def integration_fraction(alpha, steps: int) -> float:
    """1 - (1 - a)^T: the share of a constant drive a leaky unit reaches after T steps."""
    return float(1 - (1 - float(np.mean(alpha))) ** steps)


# ---------------------------------------------------------------------------- E/I balance
def ei_balance(W, col_sign=None) -> np.ndarray:
    """Per postsynaptic unit (row), (sum E - sum I) / (sum E + sum I) of its input weights.

    E and I are the presynaptic columns' signs (``col_sign``: +1 E, -1 I). Where no signs are
    given, or all are +1 (a DANN matrix: only E units are state, and the subtracted
    interneuron path makes entries of either sign), the entries' own signs split it: the
    positive part against the magnitude of the negative part. 0 is balanced, +1 purely
    excitatory; a row without input is NaN.
    """
    W = np.asarray(W, dtype=np.float64)
    if col_sign is None or np.all(np.asarray(col_sign) > 0):
        exc, inh = np.clip(W, 0, None).sum(1), np.clip(-W, 0, None).sum(1)
    else:
        s = np.asarray(col_sign)
        exc, inh = np.abs(W[:, s > 0]).sum(1), np.abs(W[:, s < 0]).sum(1)
    total = exc + inh
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (exc - inh) / np.where(total > 0, total, 1), np.nan)


def current_balance(W, rates, col_sign=None) -> np.ndarray:
    """ei_balance on mean input currents: each weight times the mean rate of its presynaptic
    unit over a probe batch (``rates`` (..., n)), so silent inputs count for nothing."""
    mean_rate = np.asarray(rates, dtype=np.float64).reshape(-1, np.shape(W)[1]).mean(0)
    return ei_balance(np.asarray(W, dtype=np.float64) * mean_rate[None, :], col_sign)


# ---------------------------------------------------------------------------- dead units and synapses
def silent_fraction(rates, sign=None, threshold: float = SILENT_STEPS) -> dict[str, float | None]:
    """Share of units whose rate is exactly 0 on more than ``threshold`` of the (trial, step)
    pairs of ``rates`` (trials, steps, units): with a rectified activation these pass no
    gradient. Overall, and per population when ``sign`` is given (None where a population is
    empty)."""
    r = np.asarray(rates, dtype=np.float64)
    silent = (r.reshape(-1, r.shape[-1]) == 0).mean(0) > threshold
    out: dict[str, float | None] = {"silent_fraction": float(silent.mean())}
    if sign is not None:
        s = np.asarray(sign)
        for name, pop in (("E", s > 0), ("I", s < 0)):
            out[f"silent_fraction_{name}"] = float(silent[pop].mean()) if pop.any() else None
    return out


def pinned_fraction(factors: dict[str, tuple[Any, Any]], phi: str, sign=None) -> dict[str, Any]:
    """Share of constrained synapses whose raw parameter is <= 0 under ``phi: rectify``: their
    effective weight is relu(raw) = 0 and so is their gradient, for the rest of training.

    ``factors`` maps a name to (raw, mask); only entries where mask == 1 (the synapse exists
    and is plastic; None = all) count. Under ``phi: abs`` no synapse is pinned (|w| flips back),
    so every share is 0. With ``sign``, the n x n ``W_rec`` factor is also split into the blocks
    EE, EI, IE, II (postsynaptic population first, as in ``p_connect``).
    """
    pinned = total = 0
    by_factor: dict[str, float | None] = {}
    by_block: dict[str, float | None] = {}
    for name, (raw, mask) in factors.items():
        raw = np.asarray(raw, dtype=np.float64)
        keep = np.ones(raw.shape, bool) if mask is None else np.asarray(mask) == 1
        hit = (raw <= 0) & keep if phi == "rectify" else np.zeros(raw.shape, bool)
        pinned, total = pinned + int(hit.sum()), total + int(keep.sum())
        by_factor[name] = _share(hit.sum(), keep.sum())
        if name == "W_rec" and sign is not None and raw.shape == (len(sign),) * 2:
            pops = {"E": np.asarray(sign) > 0, "I": np.asarray(sign) < 0}
            for post, rows in pops.items():
                for pre, cols in pops.items():
                    block = np.ix_(rows, cols)
                    by_block[post + pre] = _share(hit[block].sum(), keep[block].sum())
    return {"pinned_fraction": _share(pinned, total) or 0.0, "pinned_count": pinned, "pinned_of": total,
            "pinned_by_factor": by_factor, "pinned_by_block": by_block}


def constrained_factors(model) -> dict[str, tuple[Any, Any]]:
    """The raw sign-constrained parameters with their plastic masks, as tensors."""
    method = getattr(model, "constrained_factors", None)
    if method is not None:
        return method()
    return {"W_rec": (model.W_rec, getattr(model, "plastic_mask", None)), "W_in": (model.W_in, None),
            "W_out": (model.W_out, None)}


# ---------------------------------------------------------------------------- the ColEI recipe
def colei_li_init(n: int, i_fraction: float = 0.1, radius: float = 1.5, seed: int = 0) -> np.ndarray:
    """Li et al. (2023)'s ColEI recurrent matrix at init, re-implemented from the spec (1.1).

    n_i = ceil(n * i_fraction) inhibitory units (their ceil(N / (ratio + 1)) with ratio 9 for
    10%), n_e = n - n_i; E columns ~ Exponential(sigma_e), I columns ~ -Exponential(sigma_i)
    with denom = ((2 pi - 1) / (2 pi)) (n_e + n_e^2 / n_i), sigma_e = sqrt(1 / denom),
    sigma_i = (n_e / n_i) sigma_e (rows balanced in expectation); zero diagonal; then scaled
    to spectral radius ``radius``.
    """
    n_i = math.ceil(round(n * i_fraction, 9))  # round: 300 * 0.1 is 30.000000000000004
    n_e = n - n_i
    denom = ((2 * math.pi - 1) / (2 * math.pi)) * (n_e + n_e**2 / n_i)
    sigma_e = math.sqrt(1 / denom)
    sigma_i = (n_e / n_i) * sigma_e
    rng = np.random.default_rng(seed)
    W = np.concatenate([rng.exponential(sigma_e, (n, n_e)), -rng.exponential(sigma_i, (n, n_i))], axis=1)
    np.fill_diagonal(W, 0.0)
    return W * (radius / np.abs(np.linalg.eigvals(W)).max())


# ---------------------------------------------------------------------------- the report
def synthetic_probe(n_in: int, trials: int = PROBE_TRIALS, steps: int = PROBE_STEPS, seed: int = PROBE_SEED) -> np.ndarray:
    """The probe used when no data is given: uniform(0, 1) inputs (non-negative, like pixel
    rows), the same for every call, so two reports differ only by the network."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (trials, steps, n_in))


def require_ei(model) -> None:
    kind = getattr(getattr(model, "config", None), "kind", type(model).__name__)
    if kind not in EI_KINDS or not hasattr(model, "sign"):
        raise NotAnEINetwork(f"the trainability report reads an E/I network (kind ei-rnn); {kind} has no "
                             "recurrent weight matrix of that form")


def report(model, probe_u=None) -> dict[str, Any]:
    """Every diagnostic of ``model`` (an E/I network) at its present weights, with warnings.

    ``probe_u`` (trials, steps, n_in) drives the network for the operating point, the rates
    and the leak check; default :func:`synthetic_probe`. The network runs without noise.
    """
    import torch

    from ..sim.activations import activation_derivative

    require_ei(model)
    cfg = model.config
    u = synthetic_probe(cfg.n_in) if probe_u is None else np.asarray(probe_u, dtype=np.float64)
    with torch.no_grad():
        w = {k: v.detach().cpu().double().numpy() for k, v in model.effective_weights().items()}
        param = next(model.parameters())
        _, states = model(torch.as_tensor(u, dtype=param.dtype, device=param.device), noise=False,
                          return_states=True, backend="torch")
        r = states["r"].detach().cpu().double().numpy()
        x_star = torch.stack(states["x"], 1).double().mean((0, 1)).cpu()
        fprime = activation_derivative(cfg.activation, x_star).numpy()
        raw = {k: tuple(None if t is None else t.detach().cpu().double().numpy() for t in pair)
               for k, pair in constrained_factors(model).items()}
        alpha = model.alpha
        alpha = alpha.detach().cpu().double().numpy() if isinstance(alpha, torch.Tensor) else float(alpha)
    sign = model.sign.detach().cpu().numpy()
    dale = getattr(cfg, "constraint", "dale") == "dale"
    W = w["W_rec"]
    s = singular_values(W)
    J = leak_jacobian(W, alpha, fprime)
    exc = sign > 0
    rep: dict[str, Any] = {
        "kind": cfg.kind, "n": int(W.shape[0]), "n_exc": int(exc.sum()), "n_inh": int((sign < 0).sum()),
        "nse": nse(s=s),
        # The E->E block: Li et al.'s entropy on the part the inhibitory columns do not touch.
        "nse_ee": nse(W[np.ix_(exc, exc)]) if 1 < exc.sum() < len(sign) else None,
        **singular_value_stats(s=s), **eigen_stats(W),
        "alpha": float(np.mean(alpha)), "probe_trials": int(u.shape[0]), "probe_steps": int(u.shape[1]),
        "integration": integration_fraction(alpha, u.shape[1]),
        "jacobian_sigma1": float(singular_values(J)[0]), "jacobian_nse": nse(J),
    }
    rep["sigma1_over_radius"] = _ratio(rep["sigma1"], rep["spectral_radius"])
    col_sign = sign if dale else None
    bal, cur = ei_balance(W, col_sign), current_balance(W, r, col_sign)
    rep.update({
        "ei_balance": _nanstat(np.nanmean, bal), "ei_balance_sd": _nanstat(np.nanstd, bal),
        "ei_balance_current": _nanstat(np.nanmean, cur), "ei_balance_current_sd": _nanstat(np.nanstd, cur),
        "ei_balance_by": "column signs" if col_sign is not None and (sign < 0).any() else "entry signs",
    })
    rep.update(silent_fraction(r, sign))
    phi = getattr(cfg, "phi", "rectify") if dale else "none"
    rep.update(pinned_fraction(raw, phi, sign))
    rep["pinned_note"] = {"rectify": "raw <= 0 under phi: rectify (zero weight, zero gradient)",
                          "abs": "0 by definition: under phi: abs a raw weight below 0 flips back",
                          "none": "0 by definition: constraint unconstrained applies no phi"}.get(phi, phi)
    rep["warnings"] = warnings_for(rep, dt=getattr(cfg, "dt", 1.0))
    return _jsonable(rep)


def warnings_for(rep: dict[str, Any], dt: float = 1.0) -> list[str]:
    """What in ``rep`` stands in the way of training, and what to change."""
    out = []
    if rep["nse"] is not None and rep["nse"] < NSE_LOW:
        out.append(f"NSE {rep['nse']:.3f} < {NSE_LOW}: the singular values are dominated by a few directions "
                   "(Li et al. 2023 tie this to worse learning); more inhibitory units (a lower e_fraction), a "
                   "larger n, init: normal, or dale: dann raise it")
    rho, s1 = rep["spectral_radius"], rep["sigma1"]
    if s1 > NON_NORMAL_RATIO * rho:
        out.append(f"sigma1 {s1:.3g} is {s1 / rho:.1f}x the spectral radius {rho:.3g}: W_rec is strongly non-normal, "
                   "so rho0 understates the gain backpropagation sees along one direction; init: normal or "
                   "orthogonal, or dale: dann (which removes the mean excitatory drive) bring sigma1 down")
    if rep["silent_fraction"] > SILENT_HIGH:
        out.append(f"{100 * rep['silent_fraction']:.0f}% of the units are silent (rate 0 on over "
                   f"{100 * SILENT_STEPS:.0f}% of probe steps) and pass no gradient; raise the input drive "
                   "(w_in_range), make b_rec or x0 trainable, or use activation: softplus")
    if rep["pinned_fraction"] > PINNED_HIGH:
        out.append(f"{100 * rep['pinned_fraction']:.0f}% of the constrained synapses have a raw value <= 0 under "
                   "phi: rectify: their weight and gradient are 0 for good; use phi: abs")
    if rep["integration"] < INTEGRATION_LOW:
        a, T = rep["alpha"], rep["probe_steps"]
        out.append(f"with dt/tau = {a:.3g} the units integrate only {100 * rep['integration']:.0f}% of a step input "
                   f"over the {T}-step probe, and backpropagation sees a near-identity Jacobian; lower tau "
                   f"(dt/tau >= 0.1, tau <= {10 * dt:g} at dt = {dt:g}, for row-sequential inputs)")
    return out


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("inf")


def _share(part, whole) -> float | None:
    return float(part) / float(whole) if whole else None


def _nanstat(fn, v: np.ndarray) -> float | None:
    return float(fn(v)) if np.isfinite(v).any() else None


def _jsonable(obj):
    # NaN and infinity are not JSON: a missing or unbounded number reads as null.
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
