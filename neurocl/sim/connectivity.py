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
    # dale: dann only: the interneuron factors of each pathway and their connection masks,
    # e.g. "W_rec_ix" (n_i_rec, n): E -> I, "W_rec_ei" (n, n_i_rec): I -> E.
    factors: dict[str, np.ndarray] | None = None
    factor_masks: dict[str, np.ndarray] | None = None


def unit_signs(cfg: EIRNNConfig) -> np.ndarray:
    if cfg.is_dann:
        return np.ones(cfg.n)  # every state unit is excitatory; the interneurons are not state
    sign = -np.ones(cfg.n)
    sign[: cfg.n_exc] = 1.0
    return sign


def _block_probability(cfg: EIRNNConfig, block: str) -> float:
    p = cfg.p_connect
    return getattr(p, block) if isinstance(p, BlockProbabilities) else p


def connection_mask(cfg: EIRNNConfig, rng: np.random.Generator) -> np.ndarray:
    n, n_e = cfg.n, cfg.n_exc
    prob = np.empty((n, n))
    post_e, pre_e = slice(0, n_e), slice(0, n_e)
    post_i, pre_i = slice(n_e, n), slice(n_e, n)
    # Block names read presynaptic-to-postsynaptic as "post pre": EI = onto E from I.
    prob[post_e, pre_e] = _block_probability(cfg, "EE")
    prob[post_e, pre_i] = _block_probability(cfg, "EI")
    prob[post_i, pre_e] = _block_probability(cfg, "IE")
    prob[post_i, pre_i] = _block_probability(cfg, "II")
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


def _dann_pathway(rng, n_post: int, n_pre: int, n_i: int, numerator: float, ex_mask, ix_mask, ei_mask):
    """The DANN init of one pathway (Li et al. 2023's recurrent form of Cornford et al. 2021):
    W_ex exponential with the variance of PyTorch's default uniform init (numerator / fan-in);
    every interneuron receives the mean excitatory column, and each unit's inhibitory weights sum
    to 1, so ``W_ei W_ix`` is the mean row of ``W_ex``: inhibition removes the mean drive and
    leaves a zero-mean matrix with the singular values of an unconstrained RNN."""
    std = np.sqrt(n_pre / max(n_pre - 1, 1) * numerator / n_pre)
    w_ex = rng.exponential(std, size=(n_post, n_pre)) * ex_mask
    w_ix = np.repeat(w_ex.mean(axis=0, keepdims=True), n_i, axis=0) * ix_mask
    w_ei = rng.exponential(1.0, size=(n_post, n_i)) * ei_mask
    sums = w_ei.sum(axis=1, keepdims=True)
    w_ei = np.divide(w_ei, sums, out=np.zeros_like(w_ei), where=sums > 0)
    return w_ex, w_ix, w_ei


def dann_network(cfg: EIRNNConfig, rng: np.random.Generator) -> InitialNetwork:
    n, n_in, n_out = cfg.n, cfg.n_in, cfg.n_out
    n_i_rec, n_i_in, n_i_out = cfg.dann.pools(n)
    sign = unit_signs(cfg)
    conn = connection_mask(cfg, rng)  # E -> E: all blocks are EE when every unit is E
    plastic = plastic_mask(cfg, conn, rng)
    ix_mask = (rng.random((n_i_rec, n)) < _block_probability(cfg, "IE")).astype(np.float64)
    ei_mask = (rng.random((n, n_i_rec)) < _block_probability(cfg, "EI")).astype(np.float64)
    w_ex, w_ix, w_ei = _dann_pathway(rng, n, n, n_i_rec, 1 / 3, conn, ix_mask, ei_mask)
    ones = np.ones
    u_ex, u_ix, u_ei = _dann_pathway(rng, n, n_in, n_i_in, 1 / 3, ones((n, n_in)), ones((n_i_in, n_in)),
                                     ones((n, n_i_in)))
    o_ex, o_ix, o_ei = _dann_pathway(rng, n_out, n, n_i_out, 2.0, ones((n_out, n)), ones((n_i_out, n)),
                                     ones((n_out, n_i_out)))
    factors = {"W_rec_ix": w_ix, "W_rec_ei": w_ei, "W_in_ix": u_ix, "W_in_ei": u_ei,
               "W_out_ix": o_ix, "W_out_ei": o_ei}
    masks = {name: ones(f.shape) for name, f in factors.items()}
    masks.update(W_rec_ix=ix_mask, W_rec_ei=ei_mask)
    return InitialNetwork(sign=sign, connectivity=conn, plastic=plastic, w_rec_raw=w_ex, w_in_raw=u_ex,
                          w_out_raw=o_ex, factors=factors, factor_masks=masks)


def initial_network(cfg: EIRNNConfig, seed: int) -> InitialNetwork:
    rng = np.random.default_rng(seed)
    if cfg.is_dann:
        return dann_network(cfg, rng)
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
