"""The E/I rate network: parameters, effective weights, and the dynamics its backends run.

Per step (batch first, a = dt / tau)::

    x_t = (1 - a) x_{t-1} + a (W_rec_eff r_{t-1} + b_rec + W_in_eff u~_t) + sqrt(2 a) sigma_rec xi_t
    r_t = f(x_t),   z_t = W_out_eff r_t + b_out
    u~_t = [u_t + sqrt(2 tau_in / dt) sigma_in xi'_t]_+
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets.base import MODEL_KINDS, Model
from .activations import activation_derivative
from .backends import BACKENDS, Backend, select_backend
from .config import EIRNNConfig
from .connectivity import initial_network
from .weights import PHI, effective_weights

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class EIRNN(Model):
    """The E/I rate network (module docstring: the Euler step).

    ``config`` (:class:`~neurocl.sim.config.EIRNNConfig`) fixes its size, the Dale variant
    (``colei``: signed columns; ``dann``: excitatory units with interneurons per pathway), time
    constants, noise, connectivity and what is trainable; ``seed`` draws the connectivity and
    the initial weights. Every weight is read through :meth:`effective_weights` (the one place
    the constraints live); ``model(u)`` integrates inputs ``u`` (batch, time, n_in) on the
    configured backend and returns the outputs (batch, time, n_out). Build one with
    :func:`neurocl.build_model` (``"ei-rnn-64"``, a YAML file, a dict or a config).
    """

    def __init__(self, config: EIRNNConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = int(seed)
        dtype = DTYPES[config.dtype]
        init = initial_network(config, self.seed)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        tr = config.trainable

        self.register_buffer("sign", t(init.sign))
        self.register_buffer("connectivity_mask", t(init.connectivity))
        self.register_buffer("plastic_mask", t(init.plastic))
        # Fixed synapses keep their initial raw value outside the trainable parameter.
        self.register_buffer("w_fixed", t(init.w_rec_raw * (init.connectivity - init.plastic)))

        self.W_in = nn.Parameter(t(init.w_in_raw), requires_grad=tr.W_in)
        self.W_rec = nn.Parameter(t(init.w_rec_raw * init.plastic), requires_grad=tr.W_rec)
        self.W_out = nn.Parameter(t(init.w_out_raw), requires_grad=tr.W_out)
        self.b_rec = nn.Parameter(torch.zeros(config.n, dtype=dtype), requires_grad=tr.b_rec)
        self.b_out = nn.Parameter(torch.zeros(config.n_out, dtype=dtype), requires_grad=tr.b_out)
        self.x0 = nn.Parameter(torch.full((config.n,), config.x0_init, dtype=dtype), requires_grad=tr.x0)
        self.dann_factors: list[str] = []
        if init.factors is not None:
            # Each interneuron factor trains with the pathway it belongs to (trainable.W_rec etc.).
            for name, value in init.factors.items():
                pathway = name.rsplit("_", 1)[0]
                setattr(self, name, nn.Parameter(t(value), requires_grad=getattr(tr, pathway)))
                self.register_buffer(name + "_mask", t(init.factor_masks[name]))
                self.dann_factors.append(name)
        if not config.scalar_tau:
            taus = torch.as_tensor(config.taus, dtype=dtype)
            if config.train_tau:
                # tau = dt + (tau_max - dt) sigmoid(tau_raw): tau stays in [dt, tau_max] whatever Adam does.
                share = ((taus - config.dt) / (config.tau_max - config.dt)).clamp(1e-6, 1 - 1e-6)
                self.tau_raw = nn.Parameter(torch.logit(share))
            else:
                self.register_buffer("tau_fixed", taus)
        self.noise = True  # set False to simulate the deterministic network

    # ---------------------------------------------------------------- weights
    def effective_weights(self) -> dict[str, torch.Tensor]:
        c = self.config
        dann = {k: getattr(self, k) for k in self.dann_factors}
        masks = {k: getattr(self, k + "_mask") for k in self.dann_factors}
        return effective_weights(
            W_in=self.W_in, W_rec=self.W_rec, W_out=self.W_out,
            plastic=self.plastic_mask, w_fixed=self.w_fixed, sign=self.sign,
            phi=c.phi, constraint=c.constraint, readout=c.readout,
            dann=dann or None, dann_masks=masks or None,
        )

    def plasticity_masks(self) -> dict[str, torch.Tensor]:
        masks = {"W_rec": self.plastic_mask}
        masks.update({k: getattr(self, k + "_mask") for k in self.dann_factors})
        return masks

    def constrained_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """The raw parameters that phi turns into non-negative magnitudes, with the mask of the
        synapses that exist and may change (None: all); empty for the unconstrained ablation."""
        if self.config.constraint != "dale":
            return {}
        factors = {"W_rec": (self.W_rec, self.plastic_mask), "W_in": (self.W_in, None), "W_out": (self.W_out, None)}
        factors.update({k: (getattr(self, k), getattr(self, k + "_mask")) for k in self.dann_factors})
        return factors

    @property
    def tau(self) -> float | torch.Tensor:
        """The time constant: a number, or one per unit (differentiable when train_tau)."""
        c = self.config
        if c.scalar_tau:
            return float(c.tau)
        if c.train_tau:
            return c.dt + (c.tau_max - c.dt) * torch.sigmoid(self.tau_raw)
        return self.tau_fixed

    @property
    def alpha(self) -> float | torch.Tensor:
        """The leak a = dt / tau: a number, or a tensor of one per unit."""
        return self.config.dt / self.tau

    def extra_repr(self) -> str:
        c = self.config
        tau = f"{c.tau:g}" if isinstance(c.tau, (int, float)) else "per unit"
        units = (f"{c.n} E units, interneurons {'/'.join(map(str, c.dann.pools(c.n)))} (rec/in/out)" if c.is_dann
                 else f"{c.n} units ({c.n_exc} E, {c.n - c.n_exc} I)" if c.constraint == "dale" else f"{c.n} units")
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return (f"{units}, n_in={c.n_in}, n_out={c.n_out}, constraint={c.constraint}"
                f"{', dale=' + c.dale if c.constraint == 'dale' else ''}, phi={c.phi}, activation={c.activation}, "
                f"dt={c.dt:g}, tau={tau}{' (trained)' if c.train_tau else ''}, backend={c.backend}, seed={self.seed}, "
                f"{trainable:,} trainable parameters")

    def check_constraints(self) -> list[str]:
        """What breaks the network's constraints, one sentence each (empty when they hold):
        Dale's signs, absent connections exactly zero, fixed synapses at their values."""
        problems = []
        with torch.no_grad():
            absent = self.connectivity_mask == 0
            if self.dann_factors:
                return self._dann_problems(absent)
            w = self.effective_weights()
            if torch.any(w["W_rec"][absent] != 0):
                problems.append("absent recurrent connections are not exactly 0")
            if self.config.constraint == "dale":
                exc, inh = self.sign > 0, self.sign < 0
                if torch.any(w["W_rec"][:, exc] < 0) or torch.any(w["W_out"][:, exc] < 0):
                    problems.append("an excitatory unit has a negative outgoing weight")
                if torch.any(w["W_rec"][:, inh] > 0) or torch.any(w["W_out"][:, inh] > 0):
                    problems.append("an inhibitory unit has a positive outgoing weight")
                if torch.any(w["W_in"] < 0):
                    problems.append("an input weight is negative")
        return problems

    def _dann_problems(self, absent: torch.Tensor) -> list[str]:
        """DANN obeys Dale's law factor by factor: E->E, E->I and I->E magnitudes are non-negative
        (the effective matrix has both signs, as E minus I does); absent E->E synapses are 0."""
        f = PHI[self.config.phi]
        problems = []
        rec = self.plastic_mask * self.W_rec + self.w_fixed
        if torch.any(f(rec)[absent] != 0):
            problems.append("absent E->E connections are not exactly 0")
        for name, (raw, _) in self.constrained_factors().items():
            magnitude = f(rec if name == "W_rec" else raw)
            if torch.any(magnitude < 0):
                problems.append(f"the DANN factor {name} has a negative weight")
        return problems

    # ---------------------------------------------------------------- dynamics
    def draw_noise(self, batch: int, steps: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Standard-normal noise for one batch (scaled inside the forward pass)."""
        dev, dt = self.W_rec.device, self.W_rec.dtype
        c = self.config
        return {
            "rec": torch.randn(batch, steps, c.n, generator=generator, device=dev, dtype=dt),
            "in": torch.randn(batch, steps, c.n_in, generator=generator, device=dev, dtype=dt),
        }

    def backend(self, device: torch.device | None = None, backend: str | None = None) -> Backend:
        """The backend that runs this network on ``device`` (default: its weights' device):
        ``backend`` or the configured one; ``auto`` picks numba for CPU tensors when it can."""
        device = self.W_rec.device if device is None else device
        return select_backend(self, device, backend or self.config.backend)

    def resolved_backend(self, device: torch.device | None = None, backend: str | None = None) -> str:
        """The name of :meth:`backend`."""
        return self.backend(device, backend).name

    def numba_supported(self) -> bool:
        """Whether the numba kernels run this configuration (fixed time constants: not train_tau)."""
        return BACKENDS.lookup("numba").unsupported(self, None) is None

    def _as_sequence(self, u: torch.Tensor) -> torch.Tensor:
        """(batch, n_in) as one step, in the model's dtype: (batch, time, n_in)."""
        if u.dim() == 2:
            u = u[:, None, :]
        return u.to(self.W_rec.dtype)

    def forward(self, u: torch.Tensor, noise: Any = None, return_states: bool = False, backend: str | None = None):
        """u: (batch, time, n_in) -> z: (batch, time, n_out).

        ``noise``: None draws fresh noise (when ``self.noise``), False disables it, or a dict
        ``{"rec": (B, T, n), "in": (B, T, n_in)}`` of standard normals to use, or ``{"seed": int}``
        (the normals :func:`neurocl.sim.train_kernel.kernel_noise` returns, which the numba
        backend draws inside its kernel). ``backend`` overrides the configured one for this call
        (a name in :data:`neurocl.sim.backends.BACKENDS`, or ``auto``).
        """
        u = self._as_sequence(u)
        return self.backend(u.device, backend).forward(self, u, noise, return_states)

    # The fused training path of a backend that has one; switch off to compare with the general path.
    use_fused_loss: bool = True

    def fused_loss(self, u: torch.Tensor, loss_of_z):
        """(loss, z, states) from the backend's fused training step (the numba backend has one),
        or None. Used when gradients are on and none is asked of the input; the states then hold
        only what :meth:`regulariser` needs (Omega, already computed)."""
        u = self._as_sequence(u)
        if not self.use_fused_loss or not torch.is_grad_enabled() or u.requires_grad:
            return None
        return self.backend(u.device).fused_loss(self, u, loss_of_z)

    # ---------------------------------------------------------------- Omega
    def regulariser(self, loss: torch.Tensor, states: dict[str, Any] | None) -> torch.Tensor:
        if self.config.omega_lambda == 0 or states is None or not loss.requires_grad:
            return loss.new_zeros(())
        if "omega" in states:
            # The fused path computed Omega with the loss (for this same loss).
            return self.config.omega_lambda * states["omega"]
        return self.config.omega_lambda * self.omega(loss, states["x"])

    def omega(self, loss: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
        """Pascanu et al. (2013) vanishing-gradient regulariser.

        ``Omega = mean_{t, batch} (||v_{t+1} dx_{t+1}/dx_t|| / ||v_{t+1}|| - 1)^2`` with
        ``v_t = dL/dx_t`` held constant (as in the paper); steps where ``v`` vanishes are
        left out. Averaging (not summing) keeps lambda comparable across sequence lengths.
        """
        kernel = getattr(xs, "kernel", None)
        if kernel is not None:
            # States from the numba backend: the same regulariser as one fused kernel.
            return kernel.omega(loss, xs)
        grads = torch.autograd.grad(loss, xs, retain_graph=True, allow_unused=True)
        v = torch.stack([g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs)], dim=1).detach()
        x = torch.stack(xs, dim=1)
        a = self.alpha
        w_rec = self.effective_weights()["W_rec"]
        v_next = v[:, 1:]
        fprime = activation_derivative(self.config.activation, x[:, :-1])
        if isinstance(a, float):
            propagated = (1 - a) * v_next + a * (v_next @ w_rec) * fprime
        else:
            # a per unit belongs to the postsynaptic unit: v^T J = (1 - a) v + ((a v) W) f'(x).
            propagated = (1 - a) * v_next + ((a * v_next) @ w_rec) * fprime
        num = propagated.norm(dim=-1)
        den = v_next.norm(dim=-1)
        valid = den > 1e-20
        if not torch.any(valid):
            return loss.new_zeros(())
        ratio = num[valid] / den[valid]
        return ((ratio - 1) ** 2).mean()


MODEL_KINDS.register((EIRNNConfig, EIRNN), name="ei-rnn")
