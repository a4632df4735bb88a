"""Configuration of the E/I rate network (validated; unknown keys are errors)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Strict
from .backends import check_backend_name


class BlockProbabilities(Strict):
    """Connection probability per block; EI means from I (presynaptic) to E (postsynaptic)."""

    EE: float = Field(1.0, ge=0, le=1)
    EI: float = Field(1.0, ge=0, le=1)
    IE: float = Field(1.0, ge=0, le=1)
    II: float = Field(1.0, ge=0, le=1)


class Trainable(Strict):
    W_in: bool = True
    W_rec: bool = True
    W_out: bool = True
    b_rec: bool = False
    b_out: bool = False
    x0: bool = True


class TauDistribution(Strict):
    """Per-unit time constants drawn once, from their own seed (the network's seed does not move them)."""

    distribution: Literal["uniform", "log-uniform"] = "log-uniform"
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _check(self):
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self

    def draw(self, n: int) -> list[float]:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        if self.distribution == "uniform":
            return rng.uniform(self.low, self.high, size=n).tolist()
        return np.exp(rng.uniform(np.log(self.low), np.log(self.high), size=n)).tolist()


class DANNConfig(Strict):
    """Dale's ANN (Cornford et al. 2021; recurrent form of Li et al. 2023): every state unit is
    excitatory; each pathway has its own pool of instantaneous linear inhibitory interneurons,
    so the effective matrix of a pathway is ``phi(W_ex) - phi(W_ei) phi(W_ix)``."""

    # None: max(1, n // 10) (Li et al.: 10 interneurons per 100 excitatory units).
    n_i_rec: int | None = Field(None, ge=1)
    n_i_in: int | None = Field(None, ge=1)
    n_i_out: int = Field(1, ge=1)
    # cSGD (Cornford et al. 2021): divide the interneuron factors' gradients by sqrt(n_post)
    # (W_ix) and n_pre (W_ei) before clipping and the step (neurocl/sim/csgd.py). Meant for
    # SGD: Adam cancels a constant gradient scale (docs/dale.md, "cSGD under Adam").
    csgd: bool = False

    def pools(self, n: int) -> tuple[int, int, int]:
        default = max(1, n // 10)
        return (self.n_i_rec or default, self.n_i_in or default, self.n_i_out)


class EIRNNConfig(Strict):
    """A rate-based E/I recurrent network (Song, Yang & Wang 2016 style)."""

    kind: Literal["ei-rnn"] = "ei-rnn"
    n_in: int = Field(28, ge=1)
    n: int = Field(64, ge=2)
    n_out: int = Field(10, ge=1)
    e_fraction: float = Field(0.8, gt=0, le=1)

    dt: float = Field(1.0, gt=0)
    # One tau for every unit, one per unit (a list of n), or drawn per unit from a distribution.
    tau: Annotated[float, Field(gt=0)] | list[Annotated[float, Field(gt=0)]] | TauDistribution = 50.0
    # Train tau (per unit), kept in [dt, tau_max] by a sigmoid parameterisation.
    train_tau: bool = False
    tau_max: float = Field(1000.0, gt=0)
    tau_in: float = Field(100.0, gt=0)
    sigma_rec: float = Field(0.01, ge=0)
    sigma_in: float = Field(0.01, ge=0)
    rectify_inputs: bool = True

    activation: Literal["rectify", "tanh", "softplus", "sigmoid"] = "rectify"
    # dale: phi(M * W + W_fixed) @ diag(sign); unconstrained: the ablation without constraints.
    constraint: Literal["dale", "unconstrained"] = "dale"
    # colei: column signs (Song et al. 2016), E and I units are both state units; dann: E state
    # units with interneuron pools per pathway (see DANNConfig). Only read when constraint: dale.
    dale: Literal["colei", "dann"] = "colei"
    dann: DANNConfig = DANNConfig()
    phi: Literal["rectify", "abs"] = "rectify"
    readout: Literal["all", "excitatory"] = "all"

    p_connect: Annotated[float, Field(ge=0, le=1)] | BlockProbabilities = 1.0
    self_connections: bool = False
    plastic_fraction: float = Field(1.0, ge=0, le=1)

    # gamma/normal/orthogonal: ColEI inits scaled to rho0; dann: the DANN init (the interneurons
    # remove each unit's mean excitatory input at init), the only init of dale: dann.
    init: Literal["gamma", "normal", "orthogonal", "dann"] = "gamma"
    gamma_shape: float = Field(2.0, gt=0)
    rho0: float = Field(1.5, gt=0)
    w_in_range: tuple[float, float] = (0.0, 0.2)
    w_out_range: tuple[float, float] = (0.0, 0.2)
    x0_init: float = 0.1

    trainable: Trainable = Trainable()
    output: Literal["last", "all"] = "last"
    # Pascanu et al. 2013 vanishing-gradient regulariser weight (study R1 uses 2).
    omega_lambda: float = Field(0.0, ge=0)

    # 'auto' or a name in neurocl.sim.backends.BACKENDS (torch, numba).
    backend: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        return check_backend_name(name)

    @model_validator(mode="after")
    def _check(self):
        n_e = round(self.e_fraction * self.n)
        if self.constraint == "dale" and not 1 <= n_e <= self.n:
            raise ValueError(f"e_fraction {self.e_fraction} gives {n_e} excitatory units of {self.n}")
        if self.w_in_range[0] > self.w_in_range[1] or self.w_out_range[0] > self.w_out_range[1]:
            raise ValueError("ranges must be (low, high) with low <= high")
        if self.constraint == "dale" and (self.w_in_range[0] < 0 or self.w_out_range[0] < 0):
            raise ValueError("with Dale's law, input and output weight ranges must be non-negative")
        if isinstance(self.tau, list) and len(self.tau) != self.n:
            raise ValueError(f"tau lists one time constant per unit: {len(self.tau)} given for n = {self.n}")
        taus = self.taus
        tau_min = min(taus)
        if self.dt > tau_min:
            raise ValueError(f"dt {self.dt} is larger than tau {tau_min}: the Euler step (a = dt/tau = "
                             f"{self.dt / tau_min:.3g}) would overshoot; use dt <= tau")
        if self.train_tau and not self.dt < self.tau_max:
            raise ValueError(f"train_tau keeps tau in [dt, tau_max]: tau_max {self.tau_max} must exceed dt {self.dt}")
        if self.train_tau and max(taus) >= self.tau_max:
            raise ValueError(f"train_tau: tau {max(taus):g} must lie below tau_max {self.tau_max:g}")
        if self.dann.csgd and not self.is_dann:
            raise ValueError("dann.csgd scales the gradients of DANN interneurons: it needs dale: dann")
        if self.is_dann != (self.init == "dann"):
            raise ValueError("dale: dann goes with init: dann, and init: dann with dale: dann (set both)"
                             if self.is_dann else "init: dann needs dale: dann (and constraint: dale)")
        return self

    @property
    def taus(self) -> list[float]:
        """The time constant of every unit."""
        if isinstance(self.tau, TauDistribution):
            return self.tau.draw(self.n)
        if isinstance(self.tau, list):
            return [float(t) for t in self.tau]
        return [float(self.tau)] * self.n

    @property
    def scalar_tau(self) -> bool:
        """One fixed tau for all units: the leak is a number, as in every network before per-unit tau."""
        return isinstance(self.tau, (int, float)) and not self.train_tau

    @property
    def is_dann(self) -> bool:
        return self.constraint == "dale" and self.dale == "dann"

    @property
    def n_exc(self) -> int:
        # DANN: every state unit is excitatory (the interneurons are not state units).
        return self.n if self.is_dann else round(self.e_fraction * self.n)
