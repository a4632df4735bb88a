"""Presets, validation errors, the baselines and save/load."""

import numpy as np
import pytest
import torch

import neurocl
from neurocl.config import ConfigError


@pytest.mark.parametrize("name", ["ei-rnn-64", "lstm-64", "mlp-784-128", "mlp-2x2000"])
def test_presets_build_and_share_the_call_interface(name):
    model = neurocl.build_model(name, seed=0)
    n_in = model.config.n_in
    z = model(torch.rand(3, 5, n_in))
    assert z.shape == (3, 5, model.config.n_out)
    assert set(model.effective_weights())


def test_r1_preset_values():
    m = neurocl.build_model("ei-rnn-64")
    c = m.config
    assert (c.n_in, c.n, c.n_out, c.dt, c.tau, c.tau_in) == (28, 64, 10, 1.0, 50.0, 100.0)
    assert (c.p_connect, c.plastic_fraction, c.omega_lambda, c.rho0) == (0.98, 0.98, 2.0, 1.5)
    assert not m.b_rec.requires_grad and not m.b_out.requires_grad and m.x0.requires_grad
    assert torch.all(m.x0 == 0.1)


def test_mlp_and_lstm_shapes_match_the_studies():
    mlp = neurocl.build_model("mlp-2x2000")
    sizes = [tuple(w.shape) for w in mlp.effective_weights().values()]
    assert sizes == [(2000, 784), (2000, 2000), (10, 2000)]
    lstm = neurocl.build_model("lstm-64")
    w = lstm.effective_weights()
    assert w["embed"].shape == (64, 28) and w["lstm_hh"].shape == (256, 64) and w["readout"].shape == (10, 64)


def test_misspelt_key_in_preset_names_file_line_and_suggestion(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: ei-rnn\nn: 32\nsigma_recc: 0.1\ntau: fast\n")
    with pytest.raises(ConfigError) as err:
        neurocl.build_model(str(p))
    msgs = err.value.messages
    # Every problem at once (tau, a number, a list or a distribution, reports each form it failed).
    assert {m.split(": ")[1] for m in msgs} == {"sigma_recc", "tau"}, msgs
    assert any(f"{p}:3:1: sigma_recc: unknown key (did you mean 'sigma_rec'?)" in m for m in msgs)
    assert any(f"{p}:4:1: tau:" in m for m in msgs)


def test_nested_misspelt_key_points_at_its_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: ei-rnn\ntrainable:\n  W_in: true\n  W_recc: false\n")
    with pytest.raises(ConfigError) as err:
        neurocl.build_model(str(p))
    assert f"{p}:4:3: trainable.W_recc: unknown key (did you mean 'W_rec'?)" in str(err.value)


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'ei-rnn-64'"):
        neurocl.build_model("ei-rnn-46")


@pytest.mark.parametrize("name", ["ei-rnn-64", "lstm-64", "mlp-784-128"])
def test_save_load_rebuild_identical_outputs_and_masks(tmp_path, name):
    model = neurocl.build_model(name, seed=12)
    if hasattr(model, "W_rec"):
        with torch.no_grad():
            model.W_rec.add_(0.01)  # a trained state, not the seed's
    neurocl.save_model(model, tmp_path / "m.pt")
    loaded = neurocl.load_model(tmp_path / "m.pt")
    rebuilt = neurocl.build_model(name, seed=12)
    u = torch.rand(2, 4, model.config.n_in)
    torch.manual_seed(0)
    z1 = model(u, noise=False) if name.startswith("ei") else model(u)
    torch.manual_seed(0)
    z2 = loaded(u, noise=False) if name.startswith("ei") else loaded(u)
    assert torch.equal(z1, z2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    if name.startswith("ei"):
        assert torch.equal(loaded.connectivity_mask, rebuilt.connectivity_mask)
        assert torch.equal(loaded.plastic_mask, rebuilt.plastic_mask)
        assert torch.equal(loaded.sign, rebuilt.sign)
        assert loaded.check_constraints() == []


def test_build_model_accepts_dict_and_preset_with_overrides():
    m = neurocl.build_model({"preset": "ei-rnn-64", "n": 32})
    assert m.config.n == 32 and m.config.tau == 50.0
    m2 = neurocl.build_model({"kind": "mlp", "hidden": [7]})
    assert m2.effective_weights()["layer0"].shape == (7, 784)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_forward_matches_cpu():
    model = neurocl.build_model("ei-rnn-64", seed=0, dtype="float64")
    u = torch.rand(4, 10, 28, dtype=torch.float64)
    noise = model.draw_noise(4, 10)
    z_cpu = model(u, noise=noise)
    model.cuda()
    z_gpu = model(u.cuda(), noise={k: v.cuda() for k, v in noise.items()})
    assert torch.allclose(z_cpu, z_gpu.cpu(), rtol=1e-10, atol=1e-12)


def test_load_model_reads_a_run_its_checkpoints_and_says_what_is_wrong(tmp_path):
    """load_model takes what neurocl stores: a run directory (last task or ``task``), a run's
    checkpoint file, a save_model file; anything else is a clear error naming the file."""
    from pathlib import Path

    from neurocl.analysis.psychometric import model_after_task
    from neurocl.run import run_protocol

    repo = Path(__file__).resolve().parent.parent
    rd = run_protocol(repo / "protocols" / "split-digits.yaml", tmp_path / "out",
                      ["tasks=[{classes: [0, 1]}, {classes: [2, 3]}]", "training.epochs=1",
                       "execution.keep_checkpoints=all", "execution.progress=none"])
    u = torch.rand(3, 8, 8)

    def out(model):
        with torch.no_grad():
            return model(u, noise=False)

    last = neurocl.load_model(rd.path)
    first = neurocl.load_model(rd.path, task=0)
    assert torch.equal(out(last), out(neurocl.load_model(rd.path / "checkpoints" / "task-001.pt")))
    assert torch.equal(out(first), out(neurocl.load_model(rd.path / "checkpoints" / "task-000.pt")))
    assert torch.equal(out(first), out(model_after_task(rd.path, 0)))
    assert not torch.equal(out(first), out(last))
    assert "64 units (51 E, 13 I)" in repr(last) and "n_in=8" in repr(last)
    with pytest.raises(FileNotFoundError, match="task-005.pt is missing .*task-000.pt, task-001.pt") as err:
        neurocl.load_model(rd.path, task=5)
    # Not a dead end on a finished run: the command that trains it again with every boundary.
    assert f"neurocl run {rd.path / 'config.json'} execution.keep_checkpoints=all --out" in str(err.value)
    with pytest.raises(ValueError, match="not a stored run"):
        neurocl.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        neurocl.load_model(tmp_path / "nothing.pt")
    stray = tmp_path / "stray.pt"
    torch.save({"weights": torch.zeros(2)}, stray)
    with pytest.raises(ValueError, match=r"stray.pt is neither .* \(it holds weights\)"):
        neurocl.load_model(stray)
