"""The one effective-weights function.

ColEI (column signs): ``W_eff = phi(M_plastic * W + W_fixed) @ diag(sign)``. DANN: every pathway
is ``phi(W_ex) - (M_ei * phi(W_ei)) @ (M_ix * phi(W_ix))``, excitatory units minus their
interneurons' (instantaneous, linear) inhibition. The forward pass, both backends, the
regularisers, saving and every analysis read weights through :func:`effective_weights`, so the
constraints live here and nowhere else.
"""

from __future__ import annotations

from typing import Callable

import torch

PHI: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "rectify": torch.relu,
    "abs": torch.abs,
}


def effective_weights(
    *,
    W_in: torch.Tensor,
    W_rec: torch.Tensor,
    W_out: torch.Tensor,
    plastic: torch.Tensor,
    w_fixed: torch.Tensor,
    sign: torch.Tensor,
    phi: str = "rectify",
    constraint: str = "dale",
    readout: str = "all",
    dann: dict[str, torch.Tensor] | None = None,
    dann_masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Effective input, recurrent and output weights (differentiable in the raw parameters).

    Columns are presynaptic units, so ``@ diag(sign)`` is a column scaling. Absent synapses have
    ``plastic = 0`` and ``w_fixed = 0`` and come out exactly 0; non-plastic ones come out as
    ``phi(w_fixed)`` whatever the raw parameter holds.
    """
    rec = plastic * W_rec + w_fixed
    exc = (sign > 0).to(W_out.dtype)
    if constraint == "unconstrained":
        w_out = W_out * exc[None, :] if readout == "excitatory" else W_out
        return {"W_in": W_in, "W_rec": rec, "W_out": w_out}
    f = PHI[phi]
    if dann is not None:
        def pathway(ex: torch.Tensor, name: str) -> torch.Tensor:
            ix = f(dann[name + "_ix"]) * dann_masks[name + "_ix"]
            ei = f(dann[name + "_ei"]) * dann_masks[name + "_ei"]
            return f(ex) - ei @ ix

        return {"W_in": pathway(W_in, "W_in"), "W_rec": pathway(rec, "W_rec"), "W_out": pathway(W_out, "W_out")}
    out_sign = exc if readout == "excitatory" else sign
    return {
        # Inputs are non-negative drives: phi without signs.
        "W_in": f(W_in),
        "W_rec": f(rec) * sign[None, :],
        "W_out": f(W_out) * out_sign[None, :],
    }
