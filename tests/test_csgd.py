"""cSGD (``dann.csgd``): Cornford et al.'s scaling of the DANN interneuron factors' gradients.

Known answers (each factor's gradient is the raw one divided by its stated divisor, nothing else
moves), off by default (gradients and run ids unchanged), Dale's law after every step with it,
and the runner applying it between backward and the clip.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

import neurocl.training
from neurocl.protocol import config_run_id, load_protocol, resolved_config
from neurocl.run import run_protocol
from neurocl.sim.config import EIRNNConfig
from neurocl.sim.csgd import apply_csgd, csgd_divisors
from neurocl.sim.ei_rnn import EIRNN
from neurocl.sim.weights import PHI
from neurocl.training import prepare_gradients

FACTORS = ["W_rec_ix", "W_rec_ei", "W_in_ix", "W_in_ei", "W_out_ix", "W_out_ei"]
ALL_TRAINABLE = {"W_in": True, "W_rec": True, "W_out": True, "b_rec": True, "b_out": True, "x0": True}


def dann(csgd: bool = False, **kw) -> EIRNN:
    seed = kw.pop("seed", 0)
    kw.setdefault("trainable", ALL_TRAINABLE)
    return EIRNN(EIRNNConfig(dale="dann", init="dann", dann={"csgd": csgd}, **kw), seed=seed)


def backward(model: EIRNN, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(8, 5, model.config.n_in, generator=g, dtype=torch.float64).to(model.W_rec.dtype)
    y = torch.randint(0, model.config.n_out, (8,), generator=g)
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(u, noise=False)[:, -1], y) + 0.1 * model(u, noise=False).pow(2).mean()
    loss.backward()


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- known answers
def test_divisors_are_the_stated_ones():
    # n = 20 state units, n_in = 3 inputs, n_out = 2 outputs.
    d = csgd_divisors(EIRNNConfig(n=20, n_in=3, n_out=2, dale="dann", init="dann"))
    assert d == {
        "W_rec_ix": math.sqrt(20), "W_rec_ei": 20.0,  # recurrent: sqrt(n_e), n_e (input: previous state)
        "W_in_ix": math.sqrt(20), "W_in_ei": 3.0,  # input: sqrt(n_e), n_in
        "W_out_ix": math.sqrt(2), "W_out_ei": 20.0,  # readout, feed-forward n -> n_out: sqrt(n_out), n
    }


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_csgd_divides_each_factor_gradient_and_nothing_else(backend):
    kw = dict(n=20, n_in=3, n_out=2, dtype="float64", p_connect=0.8, backend=backend, seed=4)
    plain, scaled = dann(csgd=False, **kw), dann(csgd=True, **kw)
    backward(plain)
    backward(scaled)
    raw = grads(plain)
    assert raw.keys() == grads(scaled).keys()
    for name in raw:  # same network, same batch: the raw gradients agree before cSGD
        torch.testing.assert_close(grads(scaled)[name], raw[name], rtol=0, atol=0)
    assert apply_csgd(scaled) is True
    after = grads(scaled)
    expected = {"W_rec_ix": math.sqrt(20), "W_rec_ei": 20, "W_in_ix": math.sqrt(20), "W_in_ei": 3,
                "W_out_ix": math.sqrt(2), "W_out_ei": 20}
    for name, g in raw.items():
        want = g / expected[name] if name in expected else g
        torch.testing.assert_close(after[name], want, rtol=1e-15, atol=0)
        if name in expected:
            assert g.abs().sum() > 0, f"{name} got no gradient: the test would prove nothing"
    # The excitatory factors and biases are untouched, bit for bit.
    for name in ("W_rec", "W_in", "W_out", "b_rec", "b_out", "x0"):
        assert torch.equal(after[name], raw[name])


def test_prepare_gradients_scales_before_the_clip():
    # Cornford et al.'s order: cSGD, then the norm clip over all parameters sees the scaled gradients.
    kw = dict(n=20, n_in=3, n_out=2, dtype="float64", seed=1)
    model, ref = dann(csgd=True, **kw), dann(csgd=True, **kw)
    backward(model)
    backward(ref)
    params = [p for p in model.parameters() if p.requires_grad]
    apply_csgd(ref)
    ref_grads = grads(ref)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in ref_grads.values()))
    clip = float(norm) / 4
    prepare_gradients(model, params, clip)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, ref_grads[name] * (clip / (float(norm) + 1e-6)), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- off by default
def test_off_by_default_leaves_gradients_alone():
    assert EIRNNConfig().dann.csgd is False
    kw = dict(n=16, n_in=4, dtype="float64")
    model = dann(**kw)
    backward(model)
    before = grads(model)
    assert apply_csgd(model) is False
    prepare_gradients(model, [p for p in model.parameters() if p.requires_grad], None)
    for name, g in grads(model).items():
        assert torch.equal(g, before[name]), name
    # A ColEI network (and any other model) is never touched, whatever its dann block says.
    colei = EIRNN(EIRNNConfig(n=16, n_in=4), seed=0)
    backward(colei)
    before = grads(colei)
    assert apply_csgd(colei) is False
    assert apply_csgd(torch.nn.Linear(2, 2)) is False
    for name, g in grads(colei).items():
        assert torch.equal(g, before[name])


def _dann_protocol(**dann_block) -> dict:
    model = {"preset": "ei-rnn-64", "n_in": 8, "n": 16, "tau": 2.0, "dale": "dann", "init": "dann"}
    if dann_block:
        model["dann"] = dann_block
    return {
        "name": "csgd", "dataset": {"name": "digits", "encoding": "rows", "max_train": 48, "max_test": 20},
        "tasks": [{"classes": [0, 1]}], "model": model, "seed": 3,
        "training": {"epochs": 1, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.5}, "grad_clip": 5.0},
        "evaluation": {"untrained": False}, "recording": {"weight_stats": False},
        "execution": {"progress": "none"},
    }


def test_run_id_unchanged_unless_csgd_is_switched_on():
    def run_id(proto):
        return config_run_id(resolved_config(load_protocol(proto)))

    default = run_id(_dann_protocol())
    assert run_id(_dann_protocol(csgd=False)) == default
    assert run_id(_dann_protocol(csgd=True)) != default


def test_csgd_needs_dann():
    with pytest.raises(ValidationError, match="dann.csgd .* needs dale: dann"):
        EIRNNConfig(dann={"csgd": True})
    with pytest.raises(ValidationError, match="dann.csgd .* needs dale: dann"):
        EIRNNConfig(dale="dann", init="dann", constraint="unconstrained", dann={"csgd": True})


# ----------------------------------------------------------------------------- Dale's law
@pytest.mark.parametrize("phi", ["rectify", "abs"])
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_dale_holds_after_every_step_with_csgd(phi, backend):
    model = dann(csgd=True, seed=2, n=24, n_in=5, phi=phi, p_connect=0.7, plastic_fraction=0.6, backend=backend)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=2.0)  # large steps: many weights are pushed across zero
    f = PHI[phi]
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(20):
        backward(model, seed=step)
        prepare_gradients(model, params, 10.0)
        opt.step()
        assert model.check_constraints() == [], step
        with torch.no_grad():
            for name, (raw, mask) in model.constrained_factors().items():
                assert torch.all(f(raw) >= 0), name
                if mask is not None:
                    assert torch.equal(raw[mask == 0], start[name][mask == 0]), name
    for name in FACTORS:
        assert not torch.equal(getattr(model, name), start[name]), f"{name} never trained"


def test_the_runner_applies_csgd_on_every_step(tmp_path, monkeypatch):
    calls, models = [], []
    original = neurocl.training.apply_csgd

    def spy(model):
        calls.append(original(model))
        models.append(model)
        return calls[-1]

    monkeypatch.setattr(neurocl.training, "apply_csgd", spy)
    run_protocol(load_protocol(_dann_protocol(csgd=True)), out=tmp_path / "on")
    assert len(calls) == 3 and all(calls), "one cSGD call per step (48 examples in batches of 16)"
    on = models[-1]
    assert on.check_constraints() == []
    calls.clear()
    run_protocol(load_protocol(_dann_protocol()), out=tmp_path / "off")
    assert len(calls) == 3 and not any(calls)
    off = models[-1]
    # Same data, seed and batches: the interneuron factors moved differently, the scaling took effect.
    assert not torch.allclose(on.W_rec_ix, off.W_rec_ix)
