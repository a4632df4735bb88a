"""Multilayer perceptron baseline (studies R2, R3, R5)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from ..config import Strict
from .base import MODEL_KINDS, Model


class MLPConfig(Strict):
    kind: Literal["mlp"] = "mlp"
    n_in: int = Field(784, ge=1)
    hidden: list[Annotated[int, Field(ge=1)]] = [128]
    n_out: int = Field(10, ge=1)
    activation: Literal["relu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    output: Literal["last", "all"] = "last"
    init: Literal["torch", "kaiming"] = "torch"
    dtype: Literal["float32", "float64"] = "float32"


class MLP(Model):
    """Applied independently at every time step: flat inputs are one step of 784."""

    def __init__(self, config: MLPConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = int(seed)
        # Initialisation depends on the model seed alone, not on the global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            act = nn.ReLU if config.activation == "relu" else nn.Tanh
            layers: list[nn.Module] = []
            width = config.n_in
            for h in config.hidden:
                lin = nn.Linear(width, h)
                if config.init == "kaiming":
                    nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                    nn.init.zeros_(lin.bias)
                layers += [lin, act()]
                if config.dropout > 0:
                    layers.append(nn.Dropout(config.dropout))
                width = h
            layers.append(nn.Linear(width, config.n_out))
            self.layers = nn.Sequential(*layers)
        if config.dtype == "float64":
            self.double()

    def forward(self, u: torch.Tensor, noise=None, return_states: bool = False):
        squeeze = u.dim() == 2
        if squeeze:
            u = u[:, None, :]
        z = self.layers(u.to(next(self.parameters()).dtype))
        if return_states:
            return z, None
        return z

    def effective_weights(self) -> dict[str, torch.Tensor]:
        lin = [m for m in self.layers if isinstance(m, nn.Linear)]
        return {f"layer{i}": m.weight for i, m in enumerate(lin)}


MODEL_KINDS.register((MLPConfig, MLP), name="mlp")
