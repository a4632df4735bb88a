"""Dale's ANN (``dale: dann``) and per-unit / trained time constants of the E/I network.

Known answers at init (the DANN centring, NSE), Dale's law after every optimiser step on both
backends, backend agreement, bit-identity of the ColEI networks that existed before, and the
per-unit Euler step, noise scale, validation and trainable tau.
"""

import hashlib
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import neurocl
from neurocl.analysis.trainability import nse
from neurocl.sim.config import EIRNNConfig, TauDistribution
from neurocl.sim.ei_rnn import EIRNN
from neurocl.sim.simulate import simulate
from neurocl.sim.weights import PHI
from test_train_kernel import _pair as backend_pair

FACTORS = ["W_rec_ix", "W_rec_ei", "W_in_ix", "W_in_ei", "W_out_ix", "W_out_ei"]
ALL_TRAINABLE = {"W_in": True, "W_rec": True, "W_out": True, "b_rec": True, "b_out": True, "x0": True}


def dann(**kw) -> EIRNN:
    seed = kw.pop("seed", 0)
    return EIRNN(EIRNNConfig(dale="dann", init="dann", **kw), seed=seed)


def excitatory_magnitude(model) -> torch.Tensor:
    """phi(M_plastic * W_rec + W_fixed): the E->E synapses (before the interneurons subtract)."""
    f = PHI[model.config.phi]
    return f(model.plastic_mask * model.W_rec + model.w_fixed)


# ----------------------------------------------------------------------------- 1. DANN init
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dann_init_centres_every_column_and_normalises_inhibition(seed):
    model = dann(seed=seed, dtype="float64")
    assert model.dann_factors == FACTORS
    f = PHI[model.config.phi]
    with torch.no_grad():
        ex = excitatory_magnitude(model)
        inhibition = f(model.W_rec_ei) * model.W_rec_ei_mask @ (f(model.W_rec_ix) * model.W_rec_ix_mask)
        # The interneurons deliver the mean excitatory column to every unit: W_ei W_ix = 1 mean(W_ex, 0).
        col_mean = ex.mean(dim=0, keepdim=True).expand_as(ex)
        torch.testing.assert_close(inhibition, col_mean, rtol=0, atol=1e-12)
        w = model.effective_weights()["W_rec"]
        assert w.dtype == torch.float64
        torch.testing.assert_close(w, ex - col_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(w.sum(dim=0), torch.zeros(64, dtype=torch.float64), rtol=0, atol=1e-5)
        # Each unit's inhibitory weights sum to 1.
        for path in ("W_rec", "W_in", "W_out"):
            ei = f(getattr(model, path + "_ei")) * getattr(model, path + "_ei_mask")
            torch.testing.assert_close(ei.sum(dim=1), torch.ones(ei.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
        # The input and output pathways are centred the same way (per column).
        for path in ("W_in", "W_out"):
            e = model.effective_weights()[path]
            torch.testing.assert_close(e.sum(dim=0), torch.zeros(e.shape[1], dtype=torch.float64), rtol=0, atol=1e-10)
        # Every excitatory magnitude and interneuron factor starts non-negative and not all zero.
        assert torch.all(ex >= 0) and ex.sum() > 0
        assert torch.all(ex[model.connectivity_mask == 0] == 0)
    # The pool sizes: n // 10 for the recurrent and input pathways, one for the readout.
    assert tuple(model.W_rec_ix.shape) == (6, 64) and tuple(model.W_rec_ei.shape) == (64, 6)
    assert tuple(model.W_in_ix.shape) == (6, 28) and tuple(model.W_out_ei.shape) == (10, 1)
    # Every state unit of a DANN is excitatory.
    assert torch.all(model.sign == 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nse_dann_near_unconstrained_colei_lower(seed):
    w_dann = dann(seed=seed, dtype="float64").effective_weights()["W_rec"].detach().numpy()
    w_colei = EIRNN(EIRNNConfig(), seed=seed).effective_weights()["W_rec"].detach().double().numpy()
    # Li et al. 2023: DANN's singular value spectrum is that of an unconstrained RNN (0.938-0.949
    # at n = 64); ColEI's is dominated by a few large singular values.
    assert nse(w_dann) > 0.92
    assert nse(w_colei) < 0.85


def test_dann_needs_both_switches():
    with pytest.raises(ValidationError, match="set both"):
        EIRNNConfig(dale="dann")
    with pytest.raises(ValidationError, match="init: dann needs dale: dann"):
        EIRNNConfig(init="dann")
    with pytest.raises(ValidationError, match="init: dann needs dale: dann"):
        EIRNNConfig(dale="dann", init="dann", constraint="unconstrained")


# ----------------------------------------------------------------------------- 2. Dale after every step
def _train(model, steps, lr=0.5, seed=0, fused=False):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    dt = model.W_rec.dtype
    u = torch.rand(12, 6, model.config.n_in, generator=g, dtype=torch.float64).to(dt)
    y = torch.randint(0, model.config.n_out, (12,), generator=g)

    def loss_of_z(z):
        return torch.nn.functional.cross_entropy(z[:, -1], y) + 0.1 * z.pow(2).mean()

    for _ in range(steps):
        opt.zero_grad()
        out = model.fused_loss(u, loss_of_z) if fused else None
        if out is not None:
            loss = out[0]
        else:
            loss = loss_of_z(model(u))
        loss.backward()
        opt.step()
        yield model


@pytest.mark.parametrize("phi", ["rectify", "abs"])
@pytest.mark.parametrize("backend", ["torch", "numba", "numba-fused"])
def test_dann_obeys_dale_after_every_adam_step(backend, phi):
    model = dann(seed=3, n=32, n_in=5, phi=phi, p_connect=0.7, plastic_fraction=0.5, trainable=ALL_TRAINABLE,
                 backend="numba" if backend.startswith("numba") else "torch")
    assert model.resolved_backend() == ("numba" if backend.startswith("numba") else "torch")
    fixed = (model.connectivity_mask - model.plastic_mask).bool()
    absent = model.connectivity_mask == 0
    assert fixed.sum() > 100 and absent.sum() > 100  # the test must exercise both
    # p_connect also thins the interneuron connections: some factor entries are masked out.
    assert (model.W_rec_ix_mask == 0).any() and (model.W_rec_ei_mask == 0).any()
    f = PHI[phi]
    with torch.no_grad():
        ex0 = excitatory_magnitude(model).clone()
        raw0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    steps = 0
    for m in _train(model, steps=25, fused=backend == "numba-fused"):
        steps += 1
        assert m.check_constraints() == []
        with torch.no_grad():
            ex = excitatory_magnitude(m)
            for name, (raw, mask) in m.constrained_factors().items():
                assert torch.all(f(raw) >= 0), name
                if mask is not None:
                    # Entries outside the mask never move (they get no gradient, so Adam leaves them).
                    assert torch.equal(raw[mask == 0], raw0[name][mask == 0]), name
            assert torch.all(ex >= 0)
            assert torch.all(ex[absent] == 0)
            # Non-plastic E->E synapses: bit-identical, not merely close.
            assert torch.equal(ex[fixed], ex0[fixed])
            # The effective matrix is E minus I: the interneurons make it mixed-sign.
            w = m.effective_weights()
            assert (w["W_rec"] < 0).any() and (w["W_rec"] > 0).any()
    assert steps == 25
    with torch.no_grad():
        assert not torch.equal(excitatory_magnitude(model)[~fixed & ~absent], ex0[~fixed & ~absent])
        for name in FACTORS:
            assert not torch.equal(getattr(model, name), raw0[name]), f"{name} never trained"


# ----------------------------------------------------------------------------- 3. backends agree
def _pair(dtype, seed=5, **kw):
    """A DANN network on both backends, with the ColEI backend tests' random biases."""
    case = dict(n=24, dale="dann", init="dann", p_connect=0.8, plastic_fraction=0.7, omega_lambda=1.0)
    case.update(kw)
    return backend_pair(case, dtype, seed)


def _close(a, b, rtol, what, floor=0.0):
    """Max error within rtol of b's largest entry (or of ``floor``: a gradient that is zero up to
    rounding, as W_out_ix's under softmax cross-entropy, is compared on the scale of the others)."""
    scale = max(b.abs().max().item(), floor)
    assert scale > 0, what
    err = (a - b).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


RTOL = {"float64": 1e-10, "float32": 1e-4}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("noise", ["seed", "off"])
def test_dann_backends_agree_on_outputs_and_every_gradient(dtype, noise):
    ref, num = _pair(dtype)
    assert ref.resolved_backend() == "torch" and num.resolved_backend() == "numba"
    g = torch.Generator().manual_seed(1)
    u = torch.rand(5, 9, 7, generator=g, dtype=torch.float64).to(ref.W_rec.dtype)
    y = torch.randint(0, 10, (5,), generator=g)
    grads = _backends_agree(ref, num, u, y, {"seed": 3} if noise == "seed" else False, RTOL[dtype])
    assert set(FACTORS) <= set(grads)


def _backends_agree(ref, num, u, y, noise, rtol) -> dict:
    """Both models on the same batch (cross-entropy, an activity penalty on r, the model's
    regulariser): z and every gradient agree within rtol. Returns the reference's gradients."""
    zs, grads = [], []
    for model in (ref, num):
        z, states = model(u, noise=noise, return_states=True)
        loss = torch.nn.functional.cross_entropy(z[:, -1], y) + 1e-3 * states["r"].pow(2).mean()
        loss = loss + model.regulariser(loss, states)
        loss.backward()
        zs.append(z.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    _close(zs[1], zs[0], rtol, "z")
    assert set(grads[0]) == set(grads[1])
    floor = max(g.abs().max().item() for g in grads[0].values())
    for name in grads[0]:
        assert grads[0][name] is not None and grads[1][name] is not None, name
        _close(grads[1][name], grads[0][name], rtol, f"grad {name}", floor=1e-3 * floor)
    return grads[0]


def test_dann_fused_loss_gradients_agree_with_torch():
    ref, num = _pair("float64")
    g = torch.Generator().manual_seed(2)
    u = torch.rand(4, 8, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g)
    loss_of_z = lambda z: torch.nn.functional.cross_entropy(z[:, -1], y)  # noqa: E731
    torch.manual_seed(0)
    ref.noise = num.noise = False
    # The fused path draws its own noise: compare without noise.
    num.config = num.config.model_copy(update={"sigma_rec": 0.0, "sigma_in": 0.0})
    ref.config = ref.config.model_copy(update={"sigma_rec": 0.0, "sigma_in": 0.0})
    loss_f, _, states_f = num.fused_loss(u, loss_of_z)
    (loss_f + num.regulariser(loss_f, states_f)).backward()
    z, states = ref(u, noise=False, return_states=True)
    loss_r = loss_of_z(z)
    (loss_r + ref.regulariser(loss_r, states)).backward()
    _close(loss_f.detach(), loss_r.detach(), 1e-10, "loss")
    floor = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, p_r), p_f in zip(ref.named_parameters(), num.parameters()):
        _close(p_f.grad, p_r.grad, 1e-10, f"grad {name}", floor=1e-3 * floor)


# ----------------------------------------------------------------------------- 4. ColEI unchanged
COLEI_NAMES = ["W_in", "W_rec", "W_out", "b_rec", "b_out", "x0"]
COLEI_STATE = {"W_in", "W_rec", "W_out", "b_rec", "b_out", "x0", "sign", "connectivity_mask", "plastic_mask", "w_fixed"}


def _digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("build", ["default", "preset", "float64-normal"])
def test_colei_models_have_the_parameters_they_had(build):
    if build == "default":
        model = EIRNN(EIRNNConfig(), seed=0)
    elif build == "preset":
        model = neurocl.build_model("ei-rnn-64", seed=3)
    else:
        model = EIRNN(EIRNNConfig(p_connect=0.7, plastic_fraction=0.8, dtype="float64", init="normal", n_in=5), seed=1)
    assert [n for n, _ in model.named_parameters()] == COLEI_NAMES
    assert set(model.state_dict()) == COLEI_STATE
    assert model.dann_factors == []
    assert not any(hasattr(model, n) for n in FACTORS + ["tau_raw", "tau_fixed"])
    assert set(model.plasticity_masks()) == {"W_rec"}
    assert set(model.constrained_factors()) == {"W_rec", "W_in", "W_out"}
    # The leak stays a Python number: the arithmetic of every existing network is unchanged.
    assert isinstance(model.tau, float) and isinstance(model.alpha, float)
    assert model.alpha == model.config.dt / model.config.tau
    assert model.numba_supported() and model.resolved_backend() == "numba"


# The state of these networks at the commit before DANN / per-unit tau (computed there).
BEFORE = {
    "default": "9fc556ea8a24bae4db80659f2afd1ccb4f8525b1fcc2781456fac0675f015fad",
    "float64-normal": "b7758b036bcb0ec8d67b93c9c66f9ae9f0d2da9b8f1fd7a365dc2cb5d0df27c3",
}


def test_colei_initial_state_is_bit_identical_to_before():
    assert _digest(EIRNN(EIRNNConfig(), seed=0)) == BEFORE["default"]
    cfg = EIRNNConfig(p_connect=0.7, plastic_fraction=0.8, dtype="float64", init="normal", n_in=5)
    assert _digest(EIRNN(cfg, seed=1)) == BEFORE["float64-normal"]


# ----------------------------------------------------------------------------- 5. per-unit tau
TAUS = [2.0, 3.0, 5.0, 10.0, 50.0]


def _silent(model, x0: float):
    with torch.no_grad():
        model.W_rec.zero_()
        model.W_in.zero_()
        for name in ("W_rec_ix", "W_in_ix"):  # DANN: the interneurons inhibit through these
            if hasattr(model, name):
                getattr(model, name).zero_()
        model.x0.fill_(x0)
        w = model.effective_weights()
        assert torch.all(w["W_rec"] == 0) and torch.all(w["W_in"] == 0)
    return model


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dale", ["colei", "dann"])
def test_per_unit_euler_step_decays_each_unit_with_its_own_tau(dale, backend):
    kw = dict(dale="dann", init="dann") if dale == "dann" else {}
    model = _silent(EIRNN(EIRNNConfig(n=5, n_in=3, tau=TAUS, dtype="float64", backend=backend, **kw), seed=0), 1.0)
    assert model.resolved_backend() == backend and model.numba_supported()
    assert torch.equal(model.tau, torch.tensor(TAUS, dtype=torch.float64))
    steps = 7
    u = torch.zeros(2, steps, 3, dtype=torch.float64)
    _, states = model(u, noise=False, return_states=True)
    expected = [1.0] * 5
    for t in range(steps):
        expected = [(1 - 1.0 / tau) * x for x, tau in zip(expected, TAUS)]
        x = states["x"][t]
        assert torch.equal(x, torch.tensor(expected, dtype=torch.float64).expand(2, 5)), t
        torch.testing.assert_close(x[0], torch.tensor([(1 - 1 / tau) ** (t + 1) for tau in TAUS],
                                                      dtype=torch.float64), rtol=1e-14, atol=0)
    # simulate() agrees, and auto falls back to torch for per-unit tau.
    sim = simulate(model, u, noise=False, backend="auto")
    x_sim = sim["x"] if isinstance(sim, dict) else sim.x
    torch.testing.assert_close(torch.as_tensor(np.asarray(x_sim))[:, -1], states["x"][-1], rtol=1e-12, atol=0)


def test_per_unit_noise_scales_with_sqrt_two_a():
    sigma = 0.3
    model = _silent(EIRNN(EIRNNConfig(n=5, n_in=3, tau=TAUS, dtype="float64", sigma_rec=sigma, sigma_in=0.2), seed=0), 0.0)
    u = torch.zeros(2, 1, 3, dtype=torch.float64)
    noise = {"rec": torch.ones(2, 1, 5, dtype=torch.float64), "in": torch.zeros(2, 1, 3, dtype=torch.float64)}
    _, states = model(u, noise=noise, return_states=True)
    expected = torch.tensor([math.sqrt(2 * 1.0 / tau) * sigma for tau in TAUS], dtype=torch.float64)
    torch.testing.assert_close(states["x"][0], expected.expand(2, 5), rtol=1e-14, atol=0)


def test_scalar_tau_list_of_equal_values_matches_scalar_tau():
    """tau: [t] * n is the per-unit path; it must simulate exactly what tau: t does."""
    a = EIRNN(EIRNNConfig(n=8, n_in=3, tau=4.0, dtype="float64"), seed=2)
    b = EIRNN(EIRNNConfig(n=8, n_in=3, tau=[4.0] * 8, dtype="float64"), seed=2)
    u = torch.rand(3, 6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(b(u, noise={"seed": 1}), a(u, noise={"seed": 1}, backend="torch"), rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(n=5, tau=[2.0, 3.0]), "tau lists one time constant per unit: 2 given for n = 5"),
        (dict(n=3, tau=[2.0, 0.5, 3.0]), "dt 1.0 is larger than tau 0.5"),
        (dict(dt=2.0, tau=1.5), "dt 2.0 is larger than tau 1.5"),
        (dict(n=4, tau={"low": 0.5, "high": 3.0}), "is larger than tau"),
        (dict(tau=50.0, train_tau=True, tau_max=50.0), "tau 50 must lie below tau_max 50"),
        (dict(tau=[10.0, 2000.0], n=2, train_tau=True), "tau 2000 must lie below tau_max 1000"),
        (dict(dt=5.0, tau=10.0, train_tau=True, tau_max=5.0), "tau_max 5.0 must exceed dt 5.0"),
        (dict(tau={"low": 5.0, "high": 2.0}), "low 5.0 is above high 2.0"),
    ],
)
def test_invalid_tau_settings_are_rejected_with_a_clear_message(kw, message):
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        EIRNNConfig(**kw)


@pytest.mark.parametrize("distribution", ["uniform", "log-uniform"])
def test_tau_distribution_is_reproducible_and_in_range(distribution):
    spec = {"distribution": distribution, "low": 5.0, "high": 80.0, "seed": 11}
    taus = EIRNNConfig(n=200, tau=spec).taus
    assert taus == EIRNNConfig(n=200, tau=spec).taus
    assert taus == TauDistribution(**spec).draw(200)
    assert taus != EIRNNConfig(n=200, tau={**spec, "seed": 12}).taus
    assert len(taus) == 200 and min(taus) >= 5.0 and max(taus) <= 80.0
    assert max(taus) - min(taus) > 50  # spread over the range, not one value
    # The network's seed does not move the taus.
    cfg = EIRNNConfig(n=200, tau=spec)
    assert torch.equal(EIRNN(cfg, seed=0).tau, EIRNN(cfg, seed=1).tau)
    logs = np.log(taus)
    if distribution == "log-uniform":  # the median sits at the geometric mean of the range
        assert abs(np.median(logs) - 0.5 * (np.log(5) + np.log(80))) < 0.25
    else:
        assert abs(np.median(taus) - 42.5) < 8


@pytest.mark.parametrize("dale", ["colei", "dann"])
def test_trained_tau_stays_in_range_and_learns(dale):
    kw = dict(dale="dann", init="dann") if dale == "dann" else {}
    cfg = EIRNNConfig(n=16, n_in=4, tau={"low": 1.5, "high": 40.0, "seed": 3}, train_tau=True, tau_max=60.0,
                      dtype="float64", **kw)
    model = EIRNN(cfg, seed=0)
    assert [n for n, _ in model.named_parameters()][-1] == "tau_raw"
    assert "tau_raw" in model.state_dict() and "tau_fixed" not in model.state_dict()
    torch.testing.assert_close(model.tau, torch.tensor(cfg.taus, dtype=torch.float64), rtol=1e-10, atol=0)
    assert model.resolved_backend() == "torch"
    tau0 = model.tau.detach().clone()
    g = torch.Generator().manual_seed(0)
    u = torch.rand(8, 10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    for step in range(30):
        opt.zero_grad()
        z = model(u)
        loss = torch.nn.functional.cross_entropy(z[:, -1], y) + 0.1 * z.pow(2).mean()
        loss.backward()
        if step == 0:
            assert model.tau_raw.grad is not None and model.tau_raw.grad.abs().sum() > 0
        opt.step()
        tau = model.tau.detach()
        assert torch.all(tau >= cfg.dt) and torch.all(tau <= cfg.tau_max), step
        assert torch.isfinite(z).all()
    assert not torch.allclose(model.tau.detach(), tau0)


def test_numba_refuses_trained_tau():
    for cfg in (EIRNNConfig(n=5, n_in=3, tau=10.0, train_tau=True),
                EIRNNConfig(n=5, n_in=3, tau=TAUS, train_tau=True, dale="dann", init="dann")):
        model = EIRNN(cfg, seed=0)
        assert model.resolved_backend() == "torch" and model.resolved_backend(backend="auto") == "torch"
        u = torch.rand(2, 3, 3)
        with pytest.raises(ValueError, match="numba backend takes fixed time constants"):
            model(u, backend="numba")
        with pytest.raises(ValueError, match="numba backend takes fixed time constants"):
            EIRNN(cfg.model_copy(update={"backend": "numba"}), seed=0)(u)
        with pytest.raises(ValueError, match="numba backend takes fixed time constants"):
            simulate(model, u, backend="numba")
        # The fused training path stays off: it would need the numba kernel.
        assert model.fused_loss(u, lambda z: z.sum()) is None


PER_UNIT = {"low": 1.5, "high": 20.0, "seed": 4}


@pytest.mark.parametrize("activation", ["rectify", "tanh"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dale", ["colei", "dann"])
def test_per_unit_tau_backends_agree_on_outputs_and_every_gradient(dale, dtype, activation):
    """Fixed per-unit tau on the numba kernels: z, every gradient (Omega included, whose
    products take a of the postsynaptic unit) and the simulation match the torch loop."""
    case = dict(n=24, tau=PER_UNIT, omega_lambda=1.0, activation=activation, p_connect=0.8)
    if dale == "dann":
        case.update(dale="dann", init="dann")
    ref, num = backend_pair(case, dtype, 5)
    assert ref.resolved_backend() == "torch" and num.resolved_backend() == "numba"
    assert not isinstance(num.alpha, float) and len(set(num.alpha.tolist())) > 10
    g = torch.Generator().manual_seed(1)
    u = torch.rand(6, 9, 7, generator=g, dtype=torch.float64).to(ref.W_rec.dtype)
    y = torch.randint(0, 10, (6,), generator=g)
    rtol = RTOL[dtype]
    _backends_agree(ref, num, u, y, {"seed": 3}, rtol)
    # The fused training step (its own noise: compared without noise) and the simulation.
    for model in (ref, num):
        model.zero_grad()
        model.config = model.config.model_copy(update={"sigma_rec": 0.0, "sigma_in": 0.0})
    loss_of_z = lambda z: torch.nn.functional.cross_entropy(z[:, -1], y)  # noqa: E731
    loss_f, _, states_f = num.fused_loss(u, loss_of_z)
    (loss_f + num.regulariser(loss_f, states_f)).backward()
    z, states = ref(u, noise=False, return_states=True)
    loss_r = loss_of_z(z)
    (loss_r + ref.regulariser(loss_r, states)).backward()
    _close(loss_f.detach(), loss_r.detach(), rtol, "fused loss")
    floor = max(p.grad.abs().max().item() for p in ref.parameters())
    for name, p in ref.named_parameters():
        # W_out_ix's gradient is zero up to rounding under cross-entropy alone (float32: a few
        # 1e-8 against 0.15): compared on 1 % of the largest gradient's scale.
        _close(dict(num.named_parameters())[name].grad, p.grad, rtol, f"fused grad {name}", floor=1e-2 * floor)
    sims = [simulate(m, u, backend=m.resolved_backend(), seed=7) for m in (ref, num)]
    for key in ("z", "x", "r"):
        _close(torch.from_numpy(sims[1][key]), torch.from_numpy(sims[0][key]), rtol, f"simulate {key}")


def test_omega_with_per_unit_tau_is_the_jacobian_norm_ratio():
    """Omega's propagated vector is v^T J of the Euler step, J = diag(1 - a) + diag(a) W diag(f'):
    checked against autograd's vector-Jacobian product of the step itself."""
    model = EIRNN(EIRNNConfig(n=12, n_in=3, tau=PER_UNIT, activation="tanh", omega_lambda=1.0,
                              dtype="float64", backend="torch"), seed=2)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(3, 6, 3, generator=g, dtype=torch.float64)
    z, states = model(u, noise=False, return_states=True)
    loss = z[:, -1].pow(2).sum()
    omega = model.omega(loss, states["x"])
    v = torch.autograd.grad(loss, states["x"], retain_graph=True)
    a, w = model.alpha.detach(), model.effective_weights()["W_rec"].detach()
    step = lambda x: (1 - a) * x + a * (torch.tanh(x) @ w.T)  # noqa: E731  (input and bias: no x)
    terms = []
    for t in range(len(v) - 1):
        _, p = torch.func.vjp(step, states["x"][t].detach())
        vjp = p(v[t + 1])[0]
        terms.append((vjp.norm(dim=-1) / v[t + 1].norm(dim=-1) - 1) ** 2)
    torch.testing.assert_close(omega.detach(), torch.cat(terms).mean(), rtol=1e-12, atol=0)


def test_dann_block_probabilities_treat_every_state_unit_as_excitatory():
    """Every DANN state unit is E: E->E connectivity is p_connect.EE everywhere; EI and IE thin
    the interneuron factors (I -> E: W_rec_ei, E -> I: W_rec_ix), not blocks of the state matrix."""
    p = {"EE": 1.0, "EI": 0.5, "IE": 0.0, "II": 0.0}
    model = dann(n=100, p_connect=p)
    assert model.config.n_exc == 100
    off_diagonal = ~torch.eye(100, dtype=torch.bool)
    assert torch.all(model.connectivity_mask[off_diagonal] == 1)
    assert torch.all(model.W_rec_ix_mask == 0)
    assert 0.4 < model.W_rec_ei_mask.mean().item() < 0.6


# ---------------------------------------------------------------- the leak warning
def test_validate_warns_when_units_are_too_slow_for_the_trial():
    from pathlib import Path

    from neurocl.protocol import leak_warnings, load_protocol

    repo = Path(__file__).resolve().parent.parent
    slow = leak_warnings(load_protocol(repo / "protocols" / "r1-ei-all-digits.yaml"))
    assert len(slow) == 1 and "43 %" in slow[0] and "tau <= 28" in slow[0], slow
    # tau 2 over 8 rows integrates 1 - 0.5^8 of the input: no warning.
    assert leak_warnings(load_protocol(repo / "protocols" / "split-digits.yaml")) == []
    # A per-unit tau is judged by its median unit.
    mixed = load_protocol(repo / "protocols" / "r1-ei-all-digits.yaml",
                          ["model.tau={distribution: log-uniform, low: 1.0, high: 4.0, seed: 0}"])
    assert leak_warnings(mixed) == []
