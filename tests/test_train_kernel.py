"""The fused numba training kernel: gradients, noise, optimiser steps and caching agree with torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neurocl
from neurocl.sim import kernels, train_kernel
from neurocl.sim.simulate import standard_noise

REPO = Path(__file__).resolve().parent.parent
ALL_TRAINABLE = {"W_in": True, "W_rec": True, "W_out": True, "b_rec": True, "b_out": True, "x0": True}

# Each case differs from the R1 network in a few of: size, activation, phi, sparsity, fixed
# synapses, readout, constraint, output mode, Omega, trainable sets.
CASES = {
    "r1-like": dict(n=64, omega_lambda=2.0, p_connect=0.98, plastic_fraction=0.98),
    "tanh-abs-sparse": dict(n=33, activation="tanh", phi="abs", p_connect=0.3, plastic_fraction=0.6, omega_lambda=2.0),
    "softplus-exc-readout": dict(n=40, activation="softplus", p_connect=0.9, plastic_fraction=0.5,
                                 readout="excitatory", omega_lambda=1.0, rectify_inputs=False),
    "sigmoid-unconstrained": dict(n=24, activation="sigmoid", constraint="unconstrained", p_connect=0.5,
                                  omega_lambda=0.5),
    "all-steps-masked": dict(n=48, output="all", activation="tanh", plastic_fraction=0.8, omega_lambda=2.0),
    "fixed-only-no-omega": dict(n=16, plastic_fraction=0.0, omega_lambda=0.0,
                                trainable={"W_in": True, "W_rec": False, "W_out": True, "b_rec": False, "b_out": True,
                                           "x0": False}),
    "large": dict(n=160, n_in=12, p_connect=0.7, plastic_fraction=0.9, omega_lambda=2.0),
}
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _pair(case: dict, dtype: str, seed: int = 5):
    """The same network on both backends (same seed: identical parameters and masks)."""
    kw = dict(n_in=7, sigma_rec=0.05, sigma_in=0.05, dtype=dtype, trainable=ALL_TRAINABLE)
    kw.update(case)
    models = [neurocl.build_model("ei-rnn-64", seed=seed, backend=b, **kw) for b in ("torch", "numba")]
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name in ("b_rec", "b_out"):
            values = torch.rand(getattr(models[0], name).shape, generator=g, dtype=torch.float64) * 0.2 - 0.1
            for m in models:
                getattr(m, name).copy_(values)
    return models


def _loss(model, u, noise, target, mask):
    z, states = model(u, noise=noise, return_states=True)
    if model.config.output == "all":
        per_step = torch.nn.functional.cross_entropy(z.transpose(1, 2), target[:, None].expand(-1, z.shape[1]),
                                                     reduction="none")
        loss = (per_step * mask).sum() / mask.sum()
    else:
        loss = torch.nn.functional.cross_entropy(z[:, -1], target)
    # An activity penalty on r: a direct partial on the states, not through the readout.
    loss = loss + 1e-3 * states["r"].pow(2).mean()
    return loss + model.regulariser(loss, states), z, states


def _assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float, what: str):
    scale = b.abs().max().item()
    assert scale > 0, what
    err = (a - b).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def _inputs(model, batch=6, steps=11, seed=1):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    dt = model.W_rec.dtype
    u = torch.rand(batch, steps, c.n_in, generator=g, dtype=torch.float64).to(dt)
    noise = {k: v.to(dt) for k, v in model.draw_noise(batch, steps, generator=g).items()}
    target = torch.randint(0, c.n_out, (batch,), generator=g)
    mask = (torch.rand(batch, steps, generator=g) < 0.6).to(dt)
    return u, noise, target, mask


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_agree_with_torch_autograd(name, dtype):
    ref, fused = _pair(CASES[name], dtype)
    assert ref.resolved_backend() == "torch" and fused.resolved_backend() == "numba"
    u, noise, target, mask = _inputs(ref)
    u_ref, u_fused = u.clone().requires_grad_(True), u.clone().requires_grad_(True)
    results = []
    for model, uu in ((ref, u_ref), (fused, u_fused)):
        loss, z, states = _loss(model, uu, noise, target, mask)
        loss.backward()
        results.append((loss, z, states))
    rtol = RTOL[dtype]
    (l_ref, z_ref, s_ref), (l_fused, z_fused, s_fused) = results
    _assert_close(l_fused.detach(), l_ref.detach(), rtol, "loss")
    _assert_close(z_fused.detach(), z_ref.detach(), rtol, "z")
    _assert_close(torch.stack(s_fused["x"], 1).detach(), torch.stack(s_ref["x"], 1).detach(), rtol, "x")
    _assert_close(s_fused["r"].detach(), s_ref["r"].detach(), rtol, "r")
    for (pname, p_ref), p_fused in zip(ref.named_parameters(), fused.parameters()):
        assert (p_ref.grad is None) == (p_fused.grad is None), pname
        if p_ref.grad is not None:
            _assert_close(p_fused.grad, p_ref.grad, rtol, f"grad {pname}")
    _assert_close(u_fused.grad, u_ref.grad, rtol, "grad u")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_states_x_give_total_derivatives_as_in_torch(dtype):
    """``autograd.grad(loss, states["x"])``: dL/dx_t through all later steps, on both backends."""
    ref, fused = _pair(CASES["tanh-abs-sparse"], dtype)
    u, noise, target, mask = _inputs(ref)
    grads = []
    for model in (ref, fused):
        z, states = model(u, noise=noise, return_states=True)
        loss = torch.nn.functional.cross_entropy(z[:, -1], target)
        grads.append(torch.stack(torch.autograd.grad(loss, states["x"], retain_graph=True), 1))
        assert model.omega(loss, states["x"]).item() > 0
    _assert_close(grads[1], grads[0], RTOL[dtype], "dL/dx")
    assert grads[0][:, 0].abs().max() > 0  # the first step matters only through the recurrence


def test_omega_alone_has_the_same_gradient():
    """A backward pass that reaches the trajectory only through Omega (not the readout)."""
    ref, fused = _pair(CASES["softplus-exc-readout"], "float64")
    u, noise, target, mask = _inputs(ref)
    out = []
    for model in (ref, fused):
        z, states = model(u, noise=noise, return_states=True)
        loss = torch.nn.functional.cross_entropy(z[:, -1], target)
        reg = model.regulariser(loss, states)
        out.append(torch.autograd.grad(reg, [model.W_rec, model.W_in, model.x0]))
    for a, b, what in zip(out[1], out[0], ("W_rec", "W_in", "x0")):
        _assert_close(a, b, 1e-10, what)


def test_kernel_noise_is_reproducible_and_matches_given_noise():
    ref, fused = _pair(CASES["r1-like"], "float64")
    u, _, _, _ = _inputs(ref)
    drawn = fused(u, noise={"seed": 42})
    given = train_kernel.kernel_noise(fused, u.shape[0], u.shape[1], seed=42)
    # In-kernel draws are the normals kernel_noise returns: bit for bit on the numba backend...
    assert torch.equal(fused(u, noise=given), drawn)
    # ...and the torch backend fed the same normals (or the same seed) agrees.
    _assert_close(drawn.detach(), ref(u, noise=given).detach(), 1e-12, "z")
    _assert_close(drawn.detach(), ref(u, noise={"seed": 42}).detach(), 1e-12, "z")
    assert not torch.equal(fused(u, noise={"seed": 43}), drawn)
    # noise=None: reproducible under torch.manual_seed, fresh otherwise.
    torch.manual_seed(0)
    a = fused(u)
    b = fused(u)
    torch.manual_seed(0)
    assert torch.equal(fused(u), a) and not torch.equal(a, b)
    fused.noise = False
    assert torch.equal(fused(u), fused(u, noise=False))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_do_not_depend_on_the_batch_chunking(monkeypatch, dtype):
    _, fused = _pair(CASES["r1-like"], dtype)
    u, _, target, _ = _inputs(fused, batch=7)
    out = []
    for chunks in (1, 3):
        monkeypatch.setattr(train_kernel, "_n_chunks", lambda batch, k=chunks: k)
        fused.zero_grad()
        z = fused(u, noise={"seed": 3})
        torch.nn.functional.cross_entropy(z[:, -1], target).backward()
        out.append((z.detach(), fused.W_rec.grad.clone()))
    assert torch.equal(out[0][0], out[1][0])  # per-sequence work: identical bits
    _assert_close(out[1][1], out[0][1], RTOL[dtype], "grad W_rec")  # sums over chunks: rounding


def test_adam_steps_give_the_same_parameters():
    ref, fused = _pair(CASES["r1-like"], "float64")
    opts = [torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2) for m in (ref, fused)]
    for step in range(4):
        u, noise, target, mask = _inputs(ref, seed=10 + step)
        for model, opt in zip((ref, fused), opts):
            opt.zero_grad()
            loss, _, _ = _loss(model, u, noise, target, mask)
            # A rule's parameter penalty on top, as the runner allows.
            loss = loss + 1e-3 * model.W_rec.pow(2).sum()
            loss.backward()
            opt.step()
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        _assert_close(b.detach(), a.detach(), 1e-9, name)
    assert ref.check_constraints() == [] and fused.check_constraints() == []


def test_backend_resolution():
    model = neurocl.build_model("ei-rnn-64")
    assert model.config.backend == "auto"
    assert model.resolved_backend() == "numba"
    assert model.resolved_backend(torch.device("cuda")) == "torch"
    assert model.resolved_backend(backend="torch") == "torch"
    with pytest.raises(ValueError):
        model.resolved_backend(backend="jax")
    u = torch.rand(3, 4, 28)
    with torch.no_grad():
        z = model(u, noise=False)
    assert z.shape == (3, 4, 10) and not z.requires_grad
    assert torch.allclose(z, model(u, noise=False, backend="torch"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,record", [(16, ("x", "r")), (96, ("r",)), (300, ())])
def test_simulation_kernel_matches_torch(n, record, dtype):
    model = neurocl.build_model("ei-rnn-64", seed=2, n=n, n_in=5, dtype=dtype, sigma_rec=0.05, sigma_in=0.05,
                                activation="tanh" if n == 96 else "rectify")
    u = np.random.default_rng(0).random((9, 13, 5))
    a = neurocl.simulate(model, u, backend="numba", seed=7, record=record)
    b = neurocl.simulate(model, u, backend="torch", seed=7, record=("x", "r"))
    assert set(a) == {"z", *record}
    rtol = RTOL[dtype]
    for key in a:
        _assert_close(torch.from_numpy(a[key]), torch.from_numpy(b[key]), rtol, key)
    # The in-kernel draws are standard_noise's.
    noise = standard_noise(model, 9, 13, seed=7, dtype=a["z"].dtype)
    assert np.array_equal(neurocl.simulate(model, u, noise=noise, record=())["z"], a["z"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_generator(dtype):
    x = kernels.standard_normal(11, (400_000,), 1, dtype).astype(np.float64)
    assert abs(x.mean()) < 5 / np.sqrt(x.size)
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / x.size)
    assert abs((x**3).mean()) < 5 * np.sqrt(15 / x.size)
    assert abs((x**4).mean() - 3) < 5 * np.sqrt(96 / x.size)
    # Tails: P(|x| > 3) = 0.0027.
    assert abs(np.mean(np.abs(x) > 3) - 0.0027) < 5 * np.sqrt(0.0027 / x.size)
    from scipy import stats

    assert stats.kstest(x, "norm").pvalue > 1e-4
    # Any slice of a stream can be drawn on its own (what each batch chunk does).
    key = np.uint64(kernels.stream_key(11, 1))
    part = np.empty(1001, dtype=dtype)
    kernels.fill_normal(part, key, 12345)
    assert np.array_equal(part, x[12345:13346].astype(dtype))
    other = kernels.standard_normal(11, (1000,), 0, dtype)
    assert abs(np.corrcoef(other, x[:1000])[0, 1]) < 0.15


def _train_and_simulate(dtype: str):
    """One training step (with Omega) and one simulation: every kernel a run needs."""
    m = neurocl.build_model("ei-rnn-64", n_in=5, dtype=dtype, backend="numba")
    z, states = m(torch.rand(4, 6, 5), return_states=True)
    loss = z[:, -1].pow(2).mean()
    (loss + m.regulariser(loss, states)).backward()
    neurocl.simulate(m, np.random.rand(4, 6, 5), seed=1)


# Training and simulation share kernels.forward_kernel (the one Euler forward).
KERNELS = "[kernels.forward_kernel, train_kernel.bptt_kernel, train_kernel.weight_grad_kernel]"
CACHE_SCRIPT = f"""
import json, time
t0 = time.perf_counter()
import numpy as np, torch, neurocl
from neurocl.sim import kernels, train_kernel
from tests.test_train_kernel import _train_and_simulate
_train_and_simulate(DTYPE)
seconds = time.perf_counter() - t0
fns = {KERNELS}
print(json.dumps({{"seconds": seconds, "hits": [sum(f.stats.cache_hits.values()) for f in fns],
                  "misses": [sum(f.stats.cache_misses.values()) for f in fns]}}))
"""


def _start(dtype: str, env: dict) -> dict:
    script = CACHE_SCRIPT.replace("DTYPE", repr(dtype))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_kernels_from_the_cache():
    _train_and_simulate("float32")  # fills the cache if earlier tests or runs have not
    report = _start("float32", dict(os.environ))
    assert report["misses"] == [0, 0, 0], report
    assert all(h > 0 for h in report["hits"]), report


@pytest.mark.skipif(not os.environ.get("NEUROCL_COLD_START_TEST"),
                    reason="compiles every kernel from scratch (about 30 s of CPU); set NEUROCL_COLD_START_TEST=1")
def test_cold_start_compiles_once(tmp_path):
    """With an empty cache the first process compiles; the second loads and is much faster."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    cold = _start("float64", env)
    warm = _start("float64", env)
    assert all(m > 0 for m in cold["misses"]) and warm["misses"] == [0, 0, 0], (cold, warm)
    assert warm["seconds"] < cold["seconds"] / 3, (cold, warm)
