"""Fixed connectivity, plasticity masks and initial weights of the E/I network.

Everything here is drawn once from the seed (float64, numpy) and never changed by training.
Convention: ``W[i, j]`` is the synapse from presynaptic unit j onto postsynaptic unit i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import BlockProbabilities, EIRNNConfig


@dataclass
class InitialNetwork:
    sign: np.ndarray  # (n,) +1 excitatory, -1 inhibitory presynaptic unit
    connectivity: np.ndarray  # (n, n) 0/1: the synapse exists
    plastic: np.ndarray  # (n, n) 0/1: the synapse exists and may change
    w_rec_raw: np.ndarray  # (n, n) raw parameter values (before phi and signs)
    w_in_raw: np.ndarray  # (n, n_in)
    w_out_raw: np.ndarray  # (n_out, n)


def unit_signs(cfg: EIRNNConfig) -> np.ndarray:
    sign = -np.ones(cfg.n)
    sign[: cfg.n_exc] = 1.0
    return sign


def connection_mask(cfg: EIRNNConfig, rng: np.random.Generator) -> np.ndarray:
    n, n_e = cfg.n, cfg.n_exc
    p = cfg.p_connect
    if not isinstance(p, BlockProbabilities):
        p = BlockProbabilities(EE=p, EI=p, IE=p, II=p)
    prob = np.empty((n, n))
    post_e, pre_e = slice(0, n_e), slice(0, n_e)
    post_i, pre_i = slice(n_e, n), slice(n_e, n)
    # Block names read presynaptic-to-postsynaptic as "post pre": EI = onto E from I.
    prob[post_e, pre_e] = p.EE
    prob[post_e, pre_i] = p.EI
    prob[post_i, pre_e] = p.IE
    prob[post_i, pre_i] = p.II
    mask = (rng.random((n, n)) < prob).astype(np.float64)
    if not cfg.self_connections:
        np.fill_diagonal(mask, 0.0)
    return mask


def plastic_mask(cfg: EIRNNConfig, connectivity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(plastic_fraction * #connections) existing synapses are plastic."""
    idx = np.flatnonzero(connectivity)
    n_plastic = int(round(cfg.plastic_fraction * idx.size))
    chosen = rng.permutation(idx)[:n_plastic]
    mask = np.zeros(connectivity.size)
    mask[chosen] = 1.0
    return mask.reshape(connectivity.shape)


def spectral_radius(w: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(w, dtype=np.float64)))))


def _signed_magnitudes(cfg: EIRNNConfig, conn: np.ndarray, sign: np.ndarray, rng) -> np.ndarray:
    """Effective (signed) recurrent matrix before scaling to rho0."""
    n = cfg.n
    if cfg.init == "gamma":
        mag = rng.gamma(cfg.gamma_shape, 1.0, size=(n, n)) * conn
        # Song et al. 2016: balance each unit's summed E and I input magnitudes.
        exc, inh = sign > 0, sign < 0
        e_sum = mag[:, exc].sum(axis=1)
        i_sum = mag[:, inh].sum(axis=1)
        scale = np.divide(e_sum, i_sum, out=np.ones(n), where=i_sum > 0)
        mag[:, inh] *= scale[:, None]
        return mag * sign[None, :]
    if cfg.init == "normal":
        w = rng.standard_normal((n, n)) * conn
    else:  # orthogonal
        q, r = np.linalg.qr(rng.standard_normal((n, n)))
        w = (q * np.sign(np.diag(r))[None, :]) * conn
    if cfg.constraint == "unconstrained":
        return w
    return np.abs(w) * sign[None, :]


def initial_network(cfg: EIRNNConfig, seed: int) -> InitialNetwork:
    rng = np.random.default_rng(seed)
    # The unconstrained ablation keeps the population labels and starts from the same
    # effective matrix, so the only difference from the E/I network is the constraint.
    sign = unit_signs(cfg)
    conn = connection_mask(cfg, rng)
    plastic = plastic_mask(cfg, conn, rng)
    w_eff = _signed_magnitudes(cfg, conn, sign, rng)
    rho = spectral_radius(w_eff)
    if rho > 0:
        w_eff = w_eff * (cfg.rho0 / rho)
    # phi(|w|) = |w| for both rectify and abs, so magnitudes reproduce w_eff exactly.
    w_rec_raw = np.abs(w_eff) if cfg.constraint == "dale" else w_eff
    lo, hi = cfg.w_in_range
    w_in = rng.uniform(lo, hi, size=(cfg.n, cfg.n_in))
    lo, hi = cfg.w_out_range
    w_out = rng.uniform(lo, hi, size=(cfg.n_out, cfg.n))
    return InitialNetwork(sign=sign, connectivity=conn, plastic=plastic, w_rec_raw=w_rec_raw, w_in_raw=w_in, w_out_raw=w_out)
