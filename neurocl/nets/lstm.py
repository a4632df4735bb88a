"""LSTM baseline of study R1: Linear 28->64, LSTM(64), ReLU, Linear 64->10."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import Strict
from .base import MODEL_KINDS, Model


class LSTMConfig(Strict):
    kind: Literal["lstm"] = "lstm"
    n_in: int = Field(28, ge=1)
    n_embed: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    n_out: int = Field(10, ge=1)
    output: Literal["last", "all"] = "last"
    dtype: Literal["float32", "float64"] = "float32"


class LSTM(Model):
    def __init__(self, config: LSTMConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = int(seed)
        # Initialisation depends on the model seed alone, not on the global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.embed = nn.Linear(config.n_in, config.n_embed)
            self.lstm = nn.LSTM(config.n_embed, config.hidden, batch_first=True)
            self.readout = nn.Linear(config.hidden, config.n_out)
        if config.dtype == "float64":
            self.double()

    def forward(self, u: torch.Tensor, noise=None, return_states: bool = False):
        if u.dim() == 2:
            u = u[:, None, :]
        h, _ = self.lstm(self.embed(u.to(self.embed.weight.dtype)))
        z = self.readout(torch.relu(h))
        if return_states:
            return z, {"h": h}
        return z

    def effective_weights(self) -> dict[str, torch.Tensor]:
        return {
            "embed": self.embed.weight,
            "lstm_ih": self.lstm.weight_ih_l0,
            "lstm_hh": self.lstm.weight_hh_l0,
            "readout": self.readout.weight,
        }


MODEL_KINDS.register((LSTMConfig, LSTM), name="lstm")
