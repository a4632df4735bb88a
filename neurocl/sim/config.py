"""Configuration of the E/I rate network (validated; unknown keys are errors)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..config import Strict


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


class EIRNNConfig(Strict):
    """A rate-based E/I recurrent network (Song, Yang & Wang 2016 style)."""

    kind: Literal["ei-rnn"] = "ei-rnn"
    n_in: int = Field(28, ge=1)
    n: int = Field(64, ge=2)
    n_out: int = Field(10, ge=1)
    e_fraction: float = Field(0.8, gt=0, le=1)

    dt: float = Field(1.0, gt=0)
    tau: float = Field(50.0, gt=0)
    tau_in: float = Field(100.0, gt=0)
    sigma_rec: float = Field(0.01, ge=0)
    sigma_in: float = Field(0.01, ge=0)
    rectify_inputs: bool = True

    activation: Literal["rectify", "tanh", "softplus", "sigmoid"] = "rectify"
    # dale: phi(M * W + W_fixed) @ diag(sign); unconstrained: the ablation without constraints.
    constraint: Literal["dale", "unconstrained"] = "dale"
    phi: Literal["rectify", "abs"] = "rectify"
    readout: Literal["all", "excitatory"] = "all"

    p_connect: Annotated[float, Field(ge=0, le=1)] | BlockProbabilities = 1.0
    self_connections: bool = False
    plastic_fraction: float = Field(1.0, ge=0, le=1)

    init: Literal["gamma", "normal", "orthogonal"] = "gamma"
    gamma_shape: float = Field(2.0, gt=0)
    rho0: float = Field(1.5, gt=0)
    w_in_range: tuple[float, float] = (0.0, 0.2)
    w_out_range: tuple[float, float] = (0.0, 0.2)
    x0_init: float = 0.1

    trainable: Trainable = Trainable()
    output: Literal["last", "all"] = "last"
    # Pascanu et al. 2013 vanishing-gradient regulariser weight (study R1 uses 2).
    omega_lambda: float = Field(0.0, ge=0)

    backend: Literal["auto", "torch", "numba"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _check(self):
        n_e = round(self.e_fraction * self.n)
        if self.constraint == "dale" and not 1 <= n_e <= self.n:
            raise ValueError(f"e_fraction {self.e_fraction} gives {n_e} excitatory units of {self.n}")
        if self.w_in_range[0] > self.w_in_range[1] or self.w_out_range[0] > self.w_out_range[1]:
            raise ValueError("ranges must be (low, high) with low <= high")
        if self.constraint == "dale" and (self.w_in_range[0] < 0 or self.w_out_range[0] < 0):
            raise ValueError("with Dale's law, input and output weight ranges must be non-negative")
        if self.dt > self.tau:
            raise ValueError(f"dt {self.dt} is larger than tau {self.tau}: the Euler step (a = dt/tau = "
                             f"{self.dt / self.tau:.3g}) would overshoot; use dt <= tau")
        return self

    @property
    def n_exc(self) -> int:
        return round(self.e_fraction * self.n)
