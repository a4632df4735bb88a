"""Magnitude-stabilised plasticity (study R2): strong synapses change less.

Each entry of a weight gets a learning-rate scale ``eta_ij = eta_0 * (1 - kappa * tanh(beta * |w_ij|))``
measured before the step. The rule rescales the optimiser's final update,
``theta <- theta_before + eta * (theta_after - theta_before)``: with plain SGD that is the
step ``-lr * eta * g``; with Adam or RMSprop it is the optimiser's own step times ``eta``, and the
optimiser's moments are updated as usual (the thesis code bypassed them).

``paper_variant: true`` reproduces the thesis code instead: ``w <- w - eta * g``, a plain
gradient step with ``eta`` as the absolute learning rate that ignores the optimiser for the
scaled parameters (with the defaults, ``w <- w - (1 - tanh(5 |w|)) * g``). It is kept only to
reproduce that study; the thesis's author lists it as a likely implementation flaw.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import RULES, Context, Rule, RuleConfig, parameter_masks, trainable_parameters


class MagnitudeConfig(RuleConfig):
    name: Literal["magnitude"] = "magnitude"
    kappa: float = Field(1.0, ge=0, le=1)
    beta: float = Field(5.0, ge=0)
    eta_0: float = Field(1.0, gt=0)  # a factor on the optimiser's step (or the learning rate of paper_variant)
    include_biases: bool = False  # also scale 1-D parameters (biases, the E/I network's x0)
    # E/I network: the magnitude of the raw parameter or of the effective (signed) weight.
    magnitude_of: Literal["raw", "effective"] = "raw"
    paper_variant: bool = False


def plasticity_scale(magnitude: torch.Tensor, config: MagnitudeConfig) -> torch.Tensor:
    """``eta_0 * (1 - kappa * tanh(beta * |w|))``."""
    return config.eta_0 * (1.0 - config.kappa * torch.tanh(config.beta * magnitude.abs()))


@RULES.register
class Magnitude(Rule):
    name = "magnitude"
    config_class = MagnitudeConfig

    def __init__(self, config: MagnitudeConfig):
        super().__init__(config)
        self._before: dict[str, torch.Tensor] = {}
        self._scale: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def scaled_parameters(self, model) -> dict[str, torch.nn.Parameter]:
        params = trainable_parameters(model)
        if self.config.include_biases:
            return params
        weights = set(model.weight_parameter_names())
        return {n: p for n, p in params.items() if n in weights}

    def magnitudes(self, model, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """|w| per scaled parameter: raw, or the effective weight of the same name and shape.

        Models whose effective weights are their raw parameters (MLP, LSTM) have no such names
        and use the raw magnitude either way.
        """
        effective = {}
        if self.config.magnitude_of == "effective" and hasattr(model, "effective_weights"):
            effective = model.effective_weights()
        out = {}
        for n, p in params.items():
            e = effective.get(n)
            out[n] = (e if e is not None and e.shape == p.shape else p).detach().abs()
        return out

    @torch.no_grad()
    def before_step(self, ctx: Context) -> None:
        model = ctx.model
        params = self.scaled_parameters(model)
        masks = parameter_masks(model)
        magnitude = self.magnitudes(model, params)
        # The mask makes the scale 0 on absent and fixed synapses: they are restored exactly.
        self._scale = {n: plasticity_scale(magnitude[n], self.config) * masks[n].to(p.dtype) for n, p in params.items()}
        self._before = {n: p.detach().clone() for n, p in params.items()}
        if self.config.paper_variant:
            self._grad = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}

    @torch.no_grad()
    def after_step(self, ctx: Context) -> None:
        params = trainable_parameters(ctx.model)
        for n, before in self._before.items():
            p, scale = params[n], self._scale[n]
            if self.config.paper_variant:
                g = self._grad.get(n)
                p.copy_(before if g is None else before - scale * g)
            else:
                p.copy_(before + scale * (p - before))
        self._before, self._scale, self._grad = {}, {}, {}
