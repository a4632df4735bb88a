"""The trainability report (neurocl.analysis.trainability, `neurocl doctor`, the figure).

Known answers first: the entropy of matrices whose singular values are known, Li et al.'s
ColEI recipe against the numbers of the spec (dale-trainability.md, sections 0 and 2.2),
pinned synapses, silent units and E/I balance on hand-made inputs. Then the command and the
figure on one tiny real run (split digits, one epoch per task), trained once for the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import neurocl
from neurocl.analysis import trainability as T
from neurocl.analysis.doctor import doctor
from neurocl.cli import main
from neurocl.models import build_model

pytestmark = pytest.mark.timeout(300)
SPLIT_DIGITS = str(Path(__file__).resolve().parent.parent / "protocols" / "split-digits.yaml")


def orthogonal(n: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q


# ---------------------------------------------------------------------------- NSE
def test_nse_of_an_orthogonal_matrix_is_one():
    assert T.nse(orthogonal(20)) == pytest.approx(1.0, abs=1e-12)
    assert T.nse(1.5 * orthogonal(64, seed=3)) == pytest.approx(1.0, abs=1e-12)  # scale-free


def test_nse_of_a_rank_one_matrix_is_zero():
    rng = np.random.default_rng(1)
    W = np.outer(rng.normal(size=12), rng.normal(size=12))
    assert T.nse(W) == pytest.approx(0.0, abs=1e-12)


def test_nse_by_hand():
    # diag(1, 1, 0, 0): p = (1/2, 1/2), zeros contribute nothing: log 2 / log 4 = 1/2.
    Q1, Q2 = orthogonal(4, 1), orthogonal(4, 2)
    assert T.nse(Q1 @ np.diag([1.0, 1.0, 0.0, 0.0]) @ Q2) == pytest.approx(0.5, abs=1e-12)
    # diag(3, 1): p = (3/4, 1/4), H = -(3/4 ln 3/4 + 1/4 ln 1/4) / ln 2 = 0.8112781244591328.
    assert T.nse(np.diag([3.0, -1.0])) == pytest.approx(0.8112781244591328, abs=1e-12)
    # Singular values, not their squares: (2, 1, 1) gives p = (1/2, 1/4, 1/4), H = 1.5 ln 2 / ln 3.
    assert T.nse(s=[2.0, 1.0, 1.0]) == pytest.approx(1.5 * math.log(2) / math.log(3), abs=1e-12)


def test_colei_recipe_is_li_et_al_s():
    W = T.colei_li_init(300, seed=0)
    n_e = 270  # ceil(300 / 10) = 30 inhibitory, not 31 from 300 * 0.1 = 30.000000000000004
    assert (W[:, :n_e] >= 0).all() and (W[:, n_e:] <= 0).all()
    assert np.all(np.diag(W) == 0)
    assert np.abs(np.linalg.eigvals(W)).max() == pytest.approx(1.5, rel=1e-9)


@pytest.mark.parametrize("n, low, high", [(100, 0.79, 0.81), (300, 0.835, 0.85)])
def test_colei_recipe_reproduces_the_published_entropy(n, low, high):
    # Spec: re-implemented 0.797-0.801 (N = 100) and 0.842-0.843 (N = 300); Li et al.'s
    # notebook clusters about 0.80 and 0.84.
    mean = np.mean([T.nse(T.colei_li_init(n, seed=s)) for s in range(3)])
    assert low <= mean <= high


def test_more_inhibition_beats_more_units():
    # Li et al. (Entropy_predictive.ipynb): N = 200 at E:I 1:1 has the higher entropy (and
    # learns better) than N = 1000 at 99:1.
    small = T.nse(T.colei_li_init(200, i_fraction=0.5, seed=0))
    large = T.nse(T.colei_li_init(1000, i_fraction=0.01, seed=0))
    assert small > large + 0.1


def test_default_preset_is_where_the_spec_measured_it():
    # Spec section 0: neurocl's default, NSE 0.822-0.829 and sigma1 12-15 at rho 1.5.
    for seed in range(3):
        W = build_model("ei-rnn-64", seed=seed).effective_weights()["W_rec"].detach().double().numpy()
        assert 0.81 <= T.nse(W) <= 0.84
        assert 10 <= T.singular_value_stats(W)["sigma1"] <= 17
        assert T.eigen_stats(W)["spectral_radius"] == pytest.approx(1.5, rel=1e-5)


# ---------------------------------------------------------------------------- the other diagnostics
def test_eigen_stats_by_hand():
    # A normal matrix departs from normality by 0; a Jordan block [[0, 1], [0, 0]] by
    # ||diag(1, -1)||_F / 1 = sqrt 2.
    normal = T.eigen_stats(np.diag([2.0, -0.5]))
    assert normal["spectral_radius"] == 2.0 and normal["eig_gap"] == 1.5 and normal["non_normality"] == 0.0
    assert T.eigen_stats(np.array([[0.0, 1.0], [0.0, 0.0]]))["non_normality"] == pytest.approx(math.sqrt(2))
    assert T.singular_value_stats(np.diag([4.0, 2.0, 1.0]))["sigma1_over_sigma2"] == 2.0
    assert T.singular_value_stats(np.diag([4.0, 2.0, 1.0]))["sigma1_over_median"] == 2.0


def test_leak_jacobian_takes_one_leak_or_one_per_unit():
    W = np.array([[0.0, 2.0], [-1.0, 0.5]])
    fprime = np.array([1.0, 0.0])
    J = T.leak_jacobian(W, 0.1, fprime)
    assert np.allclose(J, [[0.9, 0.0], [-0.1, 0.9]])
    assert np.allclose(T.leak_jacobian(W, np.array([0.1, 0.1]), fprime), J)
    # Per-unit leaks scale the postsynaptic rows.
    assert np.allclose(T.leak_jacobian(W, np.array([0.5, 0.1]), fprime), [[0.5, 0.0], [-0.1, 0.9]])


def test_silent_fraction_by_hand():
    r = np.ones((4, 5, 5))  # 20 (trial, step) pairs per unit
    r[:, :, 0] = 0  # E, always silent
    r[:, :, 1] = 0
    r[0, 0, 1] = 0.3  # E, silent on exactly 95%: not more than 95%, so it counts as active
    r[:, :, 2] = 0  # I, silent
    sign = np.array([1, 1, -1, -1, 1])
    got = T.silent_fraction(r, sign)
    assert got == {"silent_fraction": 2 / 5, "silent_fraction_E": 1 / 3, "silent_fraction_I": 1 / 2}
    assert T.silent_fraction(r, np.ones(5))["silent_fraction_I"] is None


def test_ei_balance_by_hand():
    W = np.array([[0.0, 2.0, -1.0], [1.0, 0.0, -3.0], [0.0, 0.0, 0.0]])
    b = T.ei_balance(W, np.array([1, 1, -1]))
    assert b[0] == pytest.approx(1 / 3) and b[1] == pytest.approx(-0.5) and np.isnan(b[2])
    # Without column signs (or all +1, a DANN network's E-only state), the entries' own signs.
    mixed = np.array([[1.0, -1.0], [3.0, -1.0]])
    assert np.allclose(T.ei_balance(mixed), [0.0, 0.5])
    assert np.allclose(T.ei_balance(mixed, np.ones(2)), [0.0, 0.5])


def test_pinned_synapses_are_counted_exactly():
    model = build_model("ei-rnn-64", seed=0)
    plastic = model.plastic_mask.numpy() == 1
    sign = model.sign.numpy()
    rows, cols = np.nonzero(plastic & (sign[None, :] > 0) & (sign[:, None] > 0))  # the EE block
    absent = np.argwhere(~plastic)
    with torch.no_grad():
        model.W_rec[rows[:7], cols[:7]] = -0.1
        model.W_rec[rows[7:10], cols[7:10]] = 0.0  # <= 0 pins too
        model.W_rec[tuple(absent[:5].T)] = -1.0  # absent or fixed synapses: not plastic, not counted
        model.W_in[0, :4] = -0.2
    rep = T.report(model)
    total = int(plastic.sum()) + model.W_in.numel() + model.W_out.numel()
    assert rep["pinned_count"] == 14 and rep["pinned_of"] == total
    assert rep["pinned_fraction"] == 14 / total
    assert rep["pinned_by_factor"] == {"W_rec": 10 / plastic.sum(), "W_in": 4 / model.W_in.numel(), "W_out": 0.0}
    n_ee = int((plastic & (sign[None, :] > 0) & (sign[:, None] > 0)).sum())
    assert rep["pinned_by_block"]["EE"] == 10 / n_ee and rep["pinned_by_block"]["IE"] == 0.0


def test_pinned_reads_the_model_s_own_factors_where_it_has_them():
    # A DANN network names its factors (W_ex, W_ix, ...); the report counts what it is given.
    model = build_model("ei-rnn-64", seed=0)
    raw = torch.tensor([[0.5, -0.1], [0.0, 2.0]])
    model.constrained_factors = lambda: {"W_ex": (raw, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))}
    rep = T.report(model)
    assert rep["pinned_by_factor"] == {"W_ex": 1 / 3} and rep["pinned_count"] == 1 and rep["pinned_of"] == 3


def test_a_leak_per_unit_gives_the_report_of_the_same_scalar_leak(monkeypatch):
    from neurocl.sim.ei_rnn import EIRNN

    model = build_model("ei-rnn-64", seed=0, tau=5.0)
    scalar = T.report(model)
    monkeypatch.setattr(EIRNN, "alpha", property(lambda self: torch.full((self.config.n,), 0.2)))
    per_unit = T.report(model)
    for key in ("alpha", "integration", "jacobian_sigma1", "jacobian_nse", "silent_fraction"):
        assert per_unit[key] == pytest.approx(scalar[key], rel=1e-6), key


def test_pinned_is_zero_under_abs():
    model = build_model("ei-rnn-64", seed=0, phi="abs")
    with torch.no_grad():
        model.W_rec[0, 1:6] = -0.1  # |w| flips back: not pinned
    rep = T.report(model)
    assert rep["pinned_fraction"] == 0.0 and "abs" in rep["pinned_note"]


def test_pinned_warning_says_use_abs():
    model = build_model("ei-rnn-64", seed=0)
    with torch.no_grad():
        model.W_rec[model.W_rec > model.W_rec.median()] = -1.0
        model.W_in.fill_(-1.0)
    assert any("use phi: abs" in w for w in T.report(model)["warnings"])


def test_leak_warning_for_slow_units_only():
    # The spec's arithmetic: a = 1/50 over 28 steps reaches 1 - 0.98^28 = 43% of a step input.
    assert T.integration_fraction(0.02, 28) == pytest.approx(1 - 0.98**28)
    slow = T.report(build_model("ei-rnn-64", seed=0, tau=50.0, dt=1.0))
    assert slow["probe_steps"] == 28
    [leak] = [w for w in slow["warnings"] if "dt/tau" in w]
    assert "43%" in leak and "lower tau" in leak
    fast = T.report(build_model("ei-rnn-64", seed=0, tau=2.0, dt=1.0))
    assert not [w for w in fast["warnings"] if "dt/tau" in w]


def test_default_preset_report_and_warnings():
    rep = T.report(build_model("ei-rnn-64", seed=0))
    json.dumps(rep, allow_nan=False)
    assert {"nse", "sigma1", "spectral_radius", "silent_fraction", "pinned_fraction", "ei_balance", "warnings"} <= set(rep)
    assert rep["ei_balance"] == pytest.approx(0.0, abs=1e-6)  # neurocl balances every row exactly
    assert rep["sigma1_over_radius"] > 5
    text = " ".join(rep["warnings"])
    assert "NSE" in text and "e_fraction" in text and "non-normal" in text


def test_report_refuses_a_network_without_e_and_i():
    with pytest.raises(T.NotAnEINetwork, match="kind ei-rnn.*lstm has no recurrent weight matrix"):
        T.report(build_model("lstm-64"))


# ---------------------------------------------------------------------------- the command
def test_doctor_json_on_a_preset():
    res = CliRunner().invoke(main, ["doctor", "ei-rnn-64", "--json", "--probe-trials", "8"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert {"source", "probe", "nse", "sigma1", "spectral_radius", "silent_fraction", "pinned_fraction",
            "ei_balance", "warnings"} <= set(rep)
    assert rep["source"] == "ei-rnn-64" and rep["probe_trials"] == 8 and rep["probe"] == "synthetic"
    assert neurocl.doctor("ei-rnn-64", probe_trials=8)["nse"] == rep["nse"]


def test_doctor_table_on_a_preset():
    res = CliRunner().invoke(main, ["doctor", "ei-rnn-64"])
    assert res.exit_code == 0, res.output
    assert "NSE" in res.stdout and "warnings:" in res.stdout and "pinned in W_rec" in res.stdout


@pytest.mark.parametrize("source, says", [
    ("ei-rnn-46", "did you mean 'ei-rnn-64'"),
    ("lstm-64", "lstm has no recurrent weight matrix"),
    ("no/such/file.yaml", "cannot read it"),
])
def test_doctor_bad_source_is_one_line_and_exit_2(source, says):
    res = CliRunner().invoke(main, ["doctor", source])
    assert res.exit_code == 2
    assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_doctor_a_directory_that_is_no_run(tmp_path):
    res = CliRunner().invoke(main, ["doctor", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from neurocl.run import run_protocol

    out = tmp_path_factory.mktemp("doctor-store")
    return run_protocol(SPLIT_DIGITS, out, overrides=[
        "training.epochs=1", "execution.keep_checkpoints=all", "execution.progress=none", "model.backend=torch"]).path


def test_doctor_on_a_run_reports_init_and_every_task(run_dir):
    res = CliRunner().invoke(main, ["doctor", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert set(got) == {"source", "probe", "init", "tasks"}
    assert [t["task"] for t in got["tasks"]] == [0, 1, 2, 3, 4]
    assert "test inputs of task 0" in got["probe"] and got["init"]["probe_steps"] == 8
    # Init is the protocol's network on the protocol's probe: the same report as the file's.
    proto = doctor(SPLIT_DIGITS)
    assert {k: v for k, v in proto.items() if k not in ("source", "probe")} == got["init"]
    assert got["tasks"][-1]["spectral_radius"] != pytest.approx(got["init"]["spectral_radius"])
    table = CliRunner().invoke(main, ["doctor", str(run_dir)])
    assert table.exit_code == 0 and "task 4" in table.stdout.splitlines()[4]


def test_trainability_figure_draws_a_run(run_dir, tmp_path):
    import pandas as pd

    from neurocl.figures import generate

    store = run_dir.parent.parent
    first = generate(store, tmp_path / "a", only=["trainability"])
    assert [e["figure"] for e in first["figures"]] == ["trainability"] and not first["skipped"]
    generate(store, tmp_path / "b", only=["trainability"])
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    data = pd.read_csv(tmp_path / "a" / f"trainability-{run_dir.name}.csv")
    report = doctor(run_dir)
    sv = data[data.quantity == "singular value"]
    assert sv[sv.state == "init"]["nse"].iat[0] == pytest.approx(report["init"]["nse"], abs=1e-12)
    assert sv[sv.state == "trained"]["value"].max() == pytest.approx(report["tasks"][-1]["sigma1"], rel=1e-12)
    ev = data[(data.quantity == "eigenvalue") & (data.state == "trained")]
    assert ev["value"].max() == pytest.approx(report["tasks"][-1]["spectral_radius"], rel=1e-9)
