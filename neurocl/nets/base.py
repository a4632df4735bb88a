"""What every neurocl model offers the runner, the rules and the analyses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import Registry

# kind -> (config class, model class); each model module registers its kind.
MODEL_KINDS: Registry = Registry("model kind", modules=(
    "neurocl.sim.ei_rnn", "neurocl.nets.lstm", "neurocl.nets.mlp", "neurocl.nets.masked"))


class Model(nn.Module):
    """Base class: ``model(u)`` maps (batch, time, n_in) to (batch, time, n_out).

    Subclasses set ``config`` (their pydantic config) and ``seed``, and implement
    :meth:`effective_weights` (what the forward pass really uses).
    """

    config: Any
    seed: int

    @property
    def n_out(self) -> int:
        return self.config.n_out

    @property
    def output_mode(self) -> str:
        """'last': the loss reads the last step; 'all': every step (with a per-step mask)."""
        return getattr(self.config, "output", "last")

    def effective_weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def plasticity_masks(self) -> dict[str, torch.Tensor]:
        """Per trainable parameter, a 0/1 mask of the entries training may change.

        Parameters absent from the dict are plastic everywhere. Rules use this so that
        importance, anchors and step scales never touch absent or fixed synapses.
        """
        return {}

    def weight_parameter_names(self) -> list[str]:
        """Trainable weight matrices (not biases, not initial states)."""
        return [n for n, p in self.named_parameters() if p.requires_grad and p.dim() >= 2]

    def regulariser(self, loss: torch.Tensor, states: dict[str, Any] | None) -> torch.Tensor:
        """An extra loss term the model asks for (0 unless configured)."""
        return loss.new_zeros(())

    def fused_loss(self, u: torch.Tensor, loss_of_z) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
        """(loss, z, states) of one training batch computed in one fused call, or None.

        ``loss_of_z(z)`` is the batch's loss as a function of the outputs. Models with a fused
        training kernel return the same loss (and give the same gradients, including those of
        :meth:`regulariser` when it is called with the returned states) as
        ``loss_of_z(model(u))``; the default has none and the caller runs the plain forward pass.
        """
        return None

    def check_constraints(self) -> list[str]:
        """Violated constraints, as readable messages (empty when all hold)."""
        return []
