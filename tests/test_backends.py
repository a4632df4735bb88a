"""Backends by table: the E/I network runs on whatever ``BACKENDS`` holds, ``auto`` picks by
device and support, and a new backend is one class plus one registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurocl
from neurocl.protocol import ConfigError, load_protocol
from neurocl.sim.backends import BACKENDS, Backend, backend_names, select_backend
from neurocl.sim.config import EIRNNConfig


class CountingBackend(Backend):
    """A backend made the way a new one would be: it runs the torch loop and counts the calls."""

    name = "counting"
    auto_devices = ("cpu",)
    auto_priority = -1  # never preferred by auto

    def __init__(self):
        self.calls = 0

    def forward(self, model, u, noise, return_states):
        self.calls += 1
        return BACKENDS.lookup("torch").forward(model, u, noise, return_states)

    def simulate(self, model, u, noise, seed, record):
        self.calls += 1
        return BACKENDS.lookup("torch").simulate(model, u, noise, seed, record)


@pytest.fixture
def counting(monkeypatch):
    backend = CountingBackend()
    BACKENDS.names()  # load the shipped ones first
    monkeypatch.setitem(BACKENDS._entries, backend.name, backend)
    return backend


def test_a_registered_backend_runs_the_network_and_agrees_with_torch(counting):
    model = neurocl.build_model("ei-rnn-64", backend="counting")
    reference = neurocl.build_model("ei-rnn-64", backend="torch")
    u = torch.rand(3, 5, 28)
    with torch.no_grad():
        z = model(u, noise=False)
        z_ref = reference(u, noise=False)
    assert counting.calls == 1 and torch.equal(z, z_ref)
    out = neurocl.simulate(model, u.numpy(), backend="counting", noise=False)
    assert counting.calls == 2 and np.array_equal(out["z"], z_ref.numpy())
    assert "counting" in backend_names()


def test_auto_picks_numba_on_cpu_when_it_can_and_torch_otherwise():
    numba_ok = neurocl.build_model("ei-rnn-64")
    per_unit = neurocl.build_model("ei-rnn-64", tau=[2.0 + i / 8 for i in range(64)])
    trained = neurocl.build_model("ei-rnn-64", tau=2.0, train_tau=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_backend(numba_ok, cpu, "auto").name == "numba"
    assert select_backend(numba_ok, cuda, "auto").name == "torch"  # numba is CPU only
    assert select_backend(per_unit, cpu, "auto").name == "numba"  # fixed taus, one per unit
    assert select_backend(trained, cpu, "auto").name == "torch"  # numba has no gradient for tau
    with pytest.raises(ValueError, match="fixed time constants"):
        select_backend(trained, cpu, "numba")
    with pytest.raises(ValueError, match="CPU tensors only"):
        select_backend(numba_ok, cuda, "numba")


def test_an_unknown_backend_is_a_config_error_with_a_did_you_mean(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'numba'"):
        EIRNNConfig(backend="numbaa")
    proto = tmp_path / "p.yaml"
    proto.write_text("dataset: {name: digits, encoding: rows}\ntasks: [{classes: [0, 1]}]\n"
                     "model: {preset: ei-rnn-64, n_in: 8, backend: numbaa}\n")
    with pytest.raises(ConfigError) as err:
        load_protocol(proto)
    assert "numbaa" in str(err.value) and "did you mean 'numba'" in str(err.value)


def test_no_module_branches_on_a_backend_name():
    """The table is the only place a backend is chosen: no `backend == "numba"` anywhere."""
    import re
    from pathlib import Path

    pattern = re.compile(r"""[!=]=\s*["'](numba|torch)["']|["'](numba|torch)["']\s*[!=]=""")
    root = Path(neurocl.__file__).parent
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_simulate_with_a_named_backend_runs_wherever_the_weights_are():
    model = neurocl.build_model("ei-rnn-64")
    u = np.random.default_rng(0).random((2, 5, 28), dtype=np.float32)
    a = neurocl.simulate(model, u, backend="numba", noise=False)["z"]
    b = neurocl.simulate(model, u, backend="torch", noise=False)["z"]
    c = neurocl.simulate(model, u, backend="auto", noise=False)["z"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.array_equal(a, c)  # auto on CPU weights is numba
