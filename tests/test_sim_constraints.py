"""Dale's law, connectivity and fixed synapses survive training; initialisation is right."""

import numpy as np
import pytest
import torch

import neurocl
from neurocl.sim.connectivity import spectral_radius


def _train(model, steps=200, lr=0.5, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    u = torch.rand(16, 10, model.config.n_in)
    y = torch.randint(0, model.config.n_out, (16,))
    for _ in range(steps):
        opt.zero_grad()
        z = model(u)[:, -1]
        loss = torch.nn.functional.cross_entropy(z, y) + 0.1 * z.pow(2).mean()
        loss.backward()
        opt.step()
        yield model


@pytest.mark.parametrize("phi", ["rectify", "abs"])
def test_signs_connectivity_and_fixed_synapses_hold_after_every_adam_step(phi):
    model = neurocl.build_model("ei-rnn-64", seed=3, phi=phi, plastic_fraction=0.8, p_connect=0.7, n_in=5, omega_lambda=0.0)
    fixed = (model.connectivity_mask - model.plastic_mask).bool()
    assert fixed.sum() > 100  # the test must actually exercise fixed synapses
    w0 = model.effective_weights()["W_rec"].detach().clone()
    exc = model.sign > 0
    changed = False
    for m in _train(model):
        w = m.effective_weights()
        assert torch.all(w["W_rec"][:, exc] >= 0) and torch.all(w["W_rec"][:, ~exc] <= 0)
        assert torch.all(w["W_out"][:, exc] >= 0) and torch.all(w["W_out"][:, ~exc] <= 0)
        assert torch.all(w["W_in"] >= 0)
        assert torch.all(w["W_rec"][model.connectivity_mask == 0] == 0)
        # Non-plastic synapses: bit-identical, not merely close.
        assert torch.equal(w["W_rec"][fixed], w0[fixed])
        assert m.check_constraints() == []
    changed = not torch.equal(model.effective_weights()["W_rec"], w0)
    assert changed, "training did not change the plastic weights at all"


def test_unconstrained_ablation_can_break_dale():
    model = neurocl.build_model("ei-rnn-64", seed=3, constraint="unconstrained", n_in=5, omega_lambda=0.0)
    w0 = model.effective_weights()["W_rec"].detach().clone()
    ref = neurocl.build_model("ei-rnn-64", seed=3, n_in=5, omega_lambda=0.0)
    # The ablation starts from the very same effective matrix.
    assert torch.allclose(w0, ref.effective_weights()["W_rec"])
    for _ in _train(model, steps=100):
        pass
    w = model.effective_weights()["W_rec"]
    exc = model.sign > 0
    assert torch.any(w[:, exc] < 0) or torch.any(w[:, ~exc] > 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("init", ["gamma", "normal", "orthogonal"])
def test_initial_spectral_radius_equals_rho0(dtype, init):
    model = neurocl.build_model("ei-rnn-64", seed=7, dtype=dtype, init=init, rho0=1.5)
    rho = spectral_radius(model.effective_weights()["W_rec"].detach().double().numpy())
    assert abs(rho - 1.5) < 1e-6


def test_population_split_and_signs():
    model = neurocl.build_model("ei-rnn-64")
    assert int((model.sign > 0).sum()) == 51 and int((model.sign < 0).sum()) == 13
    assert torch.all(model.sign[:51] == 1) and torch.all(model.sign[51:] == -1)
    assert torch.all(torch.diagonal(model.connectivity_mask) == 0)


def test_gamma_init_balances_excitation_and_inhibition():
    model = neurocl.build_model("ei-rnn-64", seed=1, p_connect=1.0)
    w = model.effective_weights()["W_rec"].detach().double()
    # Each unit's summed E input equals its summed I input (before any training).
    assert torch.allclose(w.sum(dim=1), torch.zeros(64, dtype=torch.float64), atol=1e-5)


def test_connection_and_plastic_fractions():
    model = neurocl.build_model("ei-rnn-64", n=200, seed=2, p_connect=0.5, plastic_fraction=0.9)
    conn = model.connectivity_mask
    frac = conn.sum() / (200 * 199)
    assert abs(frac.item() - 0.5) < 0.02
    assert torch.all(model.plastic_mask <= conn)
    assert int(model.plastic_mask.sum()) == round(0.9 * int(conn.sum()))


def test_block_connection_probabilities():
    model = neurocl.build_model("ei-rnn-64", n=200, seed=2, p_connect={"EE": 1.0, "EI": 0.0, "IE": 0.5, "II": 1.0})
    c, ne = model.connectivity_mask, model.config.n_exc
    assert c[:ne, ne:].sum() == 0  # onto E from I: absent
    ee = c[:ne, :ne]
    assert ee.sum() == ne * (ne - 1)
    assert 0.4 < c[ne:, :ne].mean().item() < 0.6


def test_excitatory_readout_reads_only_excitatory_units():
    model = neurocl.build_model("ei-rnn-64", readout="excitatory")
    w_out = model.effective_weights()["W_out"]
    assert torch.all(w_out[:, model.sign < 0] == 0)
    assert torch.all(w_out[:, model.sign > 0] >= 0) and w_out.abs().sum() > 0


def test_forward_uses_exactly_the_effective_weights():
    """Change a raw entry whose effective value is clamped to 0: the output must not move."""
    model = neurocl.build_model("ei-rnn-64", seed=0, sigma_in=0, sigma_rec=0)
    u = torch.rand(2, 5, 28)
    z0 = model(u).detach()
    with torch.no_grad():
        i, j = torch.nonzero(model.plastic_mask)[0]
        model.W_rec[i, j] = -5.0  # rectify(-5) = 0
        z1 = model(u).detach()
        model.W_rec[i, j] = 5.0
        z2 = model(u).detach()
    eff = model.effective_weights()["W_rec"][i, j].item()
    assert eff == pytest.approx(5.0 * model.sign[j].item())
    assert not torch.equal(z0, z2)
    model2 = neurocl.build_model("ei-rnn-64", seed=0, sigma_in=0, sigma_rec=0)
    with torch.no_grad():
        model2.W_rec[i, j] = 0.0
    assert torch.allclose(z1, model2(u).detach())
