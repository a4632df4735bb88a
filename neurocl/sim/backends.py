"""The E/I network's backends: a table from a name to the object that runs the network there.

A backend integrates the network (``forward``, with gradients through autograd), may offer a
fused training step (``fused_loss``) and simulates without gradients (``simulate``). The model
reads its weights through :func:`neurocl.sim.weights.effective_weights` and hands them to the
backend; a backend never sees the raw parameters, so every constraint holds on every backend.

Adding a backend is one module with a :class:`Backend` subclass and its registration,
``BACKENDS.register(MyBackend())``, plus the module's name in ``BACKENDS`` below. ``auto``
picks, for the tensors' device, the supporting backend with the highest ``auto_priority``.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry

# Modules are imported on the first lookup; each keeps its heavy imports (numba) inside its
# methods, so validating a config that names a backend compiles nothing.
BACKENDS: Registry["Backend"] = Registry("backend", modules=("neurocl.sim.torch_backend", "neurocl.sim.numba_backend"))
AUTO = "auto"


class Backend:
    """One way of running the E/I network. Subclasses set ``name`` and implement the methods."""

    name: str = ""
    # Device types on which ``auto`` may pick this backend, and its rank there (higher first).
    auto_devices: tuple[str, ...] = ()
    auto_priority: int = 0

    def unsupported(self, model, device) -> str | None:
        """Why this backend cannot run ``model`` on ``device`` (a sentence with the fix), or None.
        ``device`` None: numpy in and out (simulation), wherever the weights are."""
        return None

    def forward(self, model, u, noise: Any, return_states: bool):
        """z (B, T, n_out), and with ``return_states`` the states {"x": [x_t], "r": (B, T, n)}."""
        raise NotImplementedError

    def fused_loss(self, model, u, loss_of_z):
        """(loss, z, states) from one fused training step, or None where the backend has none."""
        return None

    def simulate(self, model, u, noise: Any, seed: int | None, record: tuple[str, ...]) -> dict:
        """Numpy z (B, T, n_out) and the recorded states, without gradients; ``u`` is numpy
        (B, T, n_in) in the model's dtype, ``noise`` as for :func:`neurocl.sim.simulate.simulate`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def backend_names() -> list[str]:
    """Every name a config's ``backend`` may take: ``auto`` and the registered backends."""
    return [AUTO, *BACKENDS.names()]


def check_backend_name(name: str) -> str:
    """``name`` if it is ``auto`` or a registered backend, else ValueError with a did-you-mean."""
    if name != AUTO and name not in BACKENDS:
        raise ValueError(BACKENDS.unknown(name) + " or 'auto'")
    return name


def select_backend(model, device, name: str) -> Backend:
    """The backend that runs ``model`` on ``device``: ``name``, or for ``auto`` the supporting
    backend with the highest priority on that device type (None: the CPU). ValueError when the
    named one cannot."""
    if name == AUTO:
        if device is None:
            import torch  # not at the top: validating a config that names a backend needs no torch

            device = torch.device("cpu")
        candidates = sorted((b for b in BACKENDS.values() if device.type in b.auto_devices),
                            key=lambda b: -b.auto_priority)
        for backend in candidates:
            if backend.unsupported(model, device) is None:
                return backend
        raise ValueError(f"no backend runs this network on {device.type}")
    backend = BACKENDS.lookup(check_backend_name(name))
    reason = backend.unsupported(model, device)
    if reason is not None:
        raise ValueError(reason)
    return backend
