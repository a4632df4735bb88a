"""Hidden-unit activation functions and their derivatives (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "rectify": torch.relu,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
}


def activation_derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "rectify":
        return (x > 0).to(x.dtype)
    if name == "tanh":
        return 1 - torch.tanh(x) ** 2
    if name == "softplus":
        return torch.sigmoid(x)
    if name == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    raise KeyError(name)
