"""Corrected SGD (cSGD) for ``dale: dann``: Cornford et al. (2021)'s scaling of the interneuron
factors' gradients (spec sections 1.2 and 4.1).

A DANN pathway ``W = phi(W_ex) - phi(W_ei) phi(W_ix)`` maps ``n_pre`` presynaptic units onto
``n_post`` excitatory units through a pool of interneurons. One entry of ``W_ix`` moves a whole
column of the effective matrix (every one of the ``n_post`` units), one entry of ``W_ei`` a whole
row (all ``n_pre`` inputs of one unit), so their raw gradients are large against ``W_ex``'s.
cSGD divides them, before clipping and the optimiser step::

    grad(W_ix) /= sqrt(n_post)      grad(W_ei) /= n_pre

which, per pathway, is

    recurrent (input: the previous state)  W_rec_ix: sqrt(n)      W_rec_ei: n
    input                                  W_in_ix:  sqrt(n)      W_in_ei:  n_in
    readout (a feed-forward layer n -> n_out) W_out_ix: sqrt(n_out)  W_out_ei: n

The recurrent and input lines are Li et al. 2023's recurrent cSGD (``grad(W_ix) /= sqrt(n_e)``,
``grad(W_ei) /= n_e`` "as the input is the previous hidden state"; ``grad(U_ix) /= sqrt(n_e)``,
``grad(U_ei) /= n_input``). The readout is Cornford et al.'s feed-forward rule applied to the
layer it is: ``n_e`` is the layer's number of excitatory outputs (``n_out``) and ``n_input`` its
number of inputs (the ``n`` state units). The excitatory factors (``W_rec``, ``W_in``, ``W_out``)
and the biases are left alone.

Under SGD the scaling is a per-factor learning rate. Adam divides each parameter's step by its
own running gradient scale, so a constant divisor of a gradient cancels (up to Adam's eps); the
divisors applied to the learning rates of those factors instead (which Adam keeps) did not help
on the adding problem either: ``docs/dale.md``, "cSGD under Adam", has the numbers.
"""

from __future__ import annotations

import math

import torch


def csgd_divisors(config) -> dict[str, float]:
    """The divisor of each DANN interneuron factor's gradient (see the module docstring)."""
    n, n_in, n_out = config.n, config.n_in, config.n_out
    return {
        "W_rec_ix": math.sqrt(n), "W_rec_ei": float(n),
        "W_in_ix": math.sqrt(n), "W_in_ei": float(n_in),
        "W_out_ix": math.sqrt(n_out), "W_out_ei": float(n),
    }


def apply_csgd(model) -> bool:
    """Divide the interneuron factors' gradients in place when the model is a DANN with
    ``dann.csgd: true``; returns whether it did. Call it after backward, before clipping and the
    optimiser step. Every other model, and a DANN without cSGD, is left untouched."""
    config = getattr(model, "config", None)
    if not (getattr(config, "is_dann", False) and config.dann.csgd):
        return False
    with torch.no_grad():
        for name, divisor in csgd_divisors(config).items():
            grad = getattr(model, name).grad
            if grad is not None:
                grad.div_(divisor)
    return True
