"""The runner and the store: resume equality, DONE/FAILED, metrics, output masking."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import neurocl.results
from neurocl.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer, weight_statistics
from neurocl.data.sequence import class_masks
from neurocl.run import RunFailed, run_protocol
from neurocl.store import RunDir
from neurocl.training import masked_logits


def protocol(**kw):
    p = {
        "name": "tiny",
        "dataset": {"name": "digits", "encoding": "rows", "max_train": 1000, "max_test": 200},
        "scenario": "class-incremental",
        "tasks": [{"classes": [0, 1]}, {"classes": [2, 3]}, {"classes": [4, 5]}],
        "training": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.02}},
        "model": {"preset": "ei-rnn-64", "n_in": 8, "n": 32, "tau": 2.0, "omega_lambda": 0.0,
                  "w_in_range": [0, 0.5], "w_out_range": [0, 0.5]},
        "execution": {"progress": "none"},
        "rules": ["naive"],
        "seed": 3,
    }
    for k, v in kw.items():
        p[k] = v
    return p


def mlp_protocol(**kw):
    """A fast learner, for assertions that need real learning."""
    p = protocol(**kw)
    p["dataset"]["encoding"] = "flat"
    p["model"] = {"kind": "mlp", "n_in": 64, "hidden": [32], "n_out": 10}
    return p


def test_run_writes_a_complete_record(tmp_path):
    rd = run_protocol(mlp_protocol(), tmp_path)
    assert rd.is_done() and not rd.running_marker.exists()
    for f in ("config.json", "meta.json", "metrics.parquet", "summary.json", "run.log", "DONE"):
        assert (rd.path / f).is_file(), f
    assert rd.last_checkpoint()[0] == 2
    meta = rd.read_json("meta.json")
    assert meta["neurocl_version"] and meta["host"] and "digits" in meta["data"]
    m = pd.read_parquet(rd.metrics)
    # Every task evaluated after every epoch of every task, plus the untrained network.
    acc = m[m.metric == "acc"]
    assert len(acc) == 3 * (3 * 2 + 1)
    s = rd.read_json("summary.json")
    R = np.array(s["accuracy_matrix"])
    assert R.shape == (3, 3) and R[0, 0] > 0.9  # a pair of digits is easy
    assert s["final_average_accuracy"] == pytest.approx(R[2].mean())
    stats = m[m.metric == "weight_kurtosis"]
    assert set(stats.layer) == {"layer0", "layer1"}
    assert not list((rd.path).glob("**/*.tmp"))


def test_rerunning_a_finished_run_does_nothing(tmp_path):
    rd = run_protocol(protocol(), tmp_path)
    before = {p: p.stat().st_mtime_ns for p in rd.path.rglob("*") if p.is_file()}
    run_protocol(protocol(), tmp_path)
    after = {p: p.stat().st_mtime_ns for p in rd.path.rglob("*") if p.is_file()}
    assert before == after


def test_diverging_run_writes_failed_with_reason_and_exits_non_zero(tmp_path):
    p = protocol(training={"epochs": 1, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 1e8}, "max_loss": 50})
    p["model"] = {"kind": "mlp", "n_in": 64, "hidden": [16], "n_out": 10}
    p["dataset"]["encoding"] = "flat"
    with pytest.raises(RunFailed, match="loss diverged"):
        run_protocol(p, tmp_path)
    (rd,) = [RunDir(d) for d in (tmp_path / "runs").iterdir()]
    assert rd.is_failed() and not rd.is_done() and "loss diverged" in rd.failure_reason()
    # Running it again reports the recorded failure instead of silently retrying.
    with pytest.raises(RunFailed, match="failed before"):
        run_protocol(p, tmp_path)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    out = subprocess.run([sys.executable, "-m", "neurocl", "run", str(path), "--out", str(tmp_path), "--retry-failed"], capture_output=True, text=True)
    assert out.returncode == 1 and "FAILED: loss diverged" in out.stderr


def _matrix(rd):
    return np.array(rd.read_json("summary.json")["accuracy_matrix"])


@pytest.mark.parametrize("rules", [["naive"], ["joint"]])
def test_killed_run_resumes_to_the_identical_accuracy_matrix(tmp_path, rules):
    p = protocol(rules=rules)
    p["training"]["epochs"] = 4
    reference = run_protocol(p, tmp_path / "ref")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "neurocl", "run", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "runs" / reference.id
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "task-000.pt").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rd = RunDir(run_dir)
    assert not rd.is_done(), "the run finished before it could be killed"
    resumed = run_protocol(p, out)
    attempts = resumed.read_json("meta.json")["attempts"]
    assert len(attempts) == 2 and attempts[1]["resumed_after_task"] >= 0
    assert np.array_equal(_matrix(resumed), _matrix(reference))
    ref_m = pd.read_parquet(reference.metrics)
    res_m = pd.read_parquet(resumed.metrics)
    keep = lambda m: m[m.metric.isin(["acc", "train_loss"])].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(keep(ref_m), keep(res_m))


def test_metric_formulas_against_hand_computed_values():
    R = np.array([[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.95]])
    b = np.array([0.1, 0.2, 0.25])
    np.testing.assert_allclose(average_accuracy(R), [0.9, 0.7, (0.5 + 0.7 + 0.95) / 3])
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert forward_transfer(R, b) == pytest.approx(((0.1 - 0.2) + (0.3 - 0.25)) / 2)
    # Forgetting: best earlier accuracy minus final, averaged over the tasks before the last.
    assert forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    R2 = np.array([[0.5, 0.0], [0.9, 0.8]])  # accuracy on task 0 rose after task 1
    assert forgetting(R2) == pytest.approx(0.5 - 0.9)


def test_weight_moments_are_scipys_to_the_bit():
    """weight_statistics computes skewness and kurtosis without importing scipy.stats (0.8 s per
    run), operation for operation as scipy does: the same floats, and scipy's docs' example."""
    from scipy import stats

    assert weight_statistics(np.array([2, 8, 0, 4, 1, 9, 9, 0]))["skewness"] == 0.2650554122698573
    rng = np.random.default_rng(1)
    for x in (rng.normal(size=1000), rng.exponential(size=77), rng.gamma(2.0, size=4096) - 3,
              rng.normal(size=500).astype(np.float32), np.full(10, 3.0) + 1e-17 * np.arange(10)):
        got = weight_statistics(x)
        x = np.asarray(x, dtype=np.float64)
        for key, want in (("skewness", stats.skew(x)), ("kurtosis", stats.kurtosis(x, fisher=True))):
            assert got[key] == want or (np.isnan(got[key]) and np.isnan(want)), (key, got[key], want)


def test_weight_statistics_match_scipy_definitions():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(200000)
    s = weight_statistics(g)
    assert abs(s["skewness"]) < 0.03 and abs(s["kurtosis"]) < 0.05  # excess kurtosis of a Gaussian
    u = weight_statistics(rng.uniform(-1, 1, 200000))
    assert u["kurtosis"] == pytest.approx(-1.2, abs=0.03)
    e = weight_statistics(rng.exponential(1.0, 200000))
    assert e["skewness"] == pytest.approx(2.0, abs=0.1)


def test_task_incremental_output_masking():
    class T:
        def __init__(self, classes):
            self.classes = classes

    tasks = [T([0, 1]), T([2, 3])]
    train, aware, agnostic = class_masks(tasks, "task-incremental", 10)
    assert train[1].tolist() == [False, False, True, True] + [False] * 6
    assert agnostic[0, :4].all() and not agnostic[0, 4:].any()
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0] + [9.0] * 6] * 2)
    masked = masked_logits(logits, train[torch.tensor([0, 1])])
    # Task 0 can only predict 0 or 1, task 1 only 2 or 3, even though output 4 is largest.
    assert masked.argmax(-1).tolist() == [0, 2]
    ci_train, _, _ = class_masks(tasks, "class-incremental", 10)
    assert torch.equal(ci_train[0], ci_train[1])


def test_task_incremental_run_uses_task_identity(tmp_path):
    p = protocol(scenario="task-incremental")
    rd = run_protocol(p, tmp_path)
    m = pd.read_parquet(rd.metrics)
    untrained = m[(m.metric == "acc") & (m.task == -1)]
    # With two outputs per task, even the untrained network is near chance (1/2), not 1/10.
    assert untrained.value.min() > 0.2
    assert "acc_aware" not in set(m.metric)


def test_class_incremental_records_aware_and_agnostic(tmp_path):
    rd = run_protocol(mlp_protocol(), tmp_path)
    s = rd.read_json("summary.json")
    aware = np.array(s["accuracy_matrix_task_aware"])
    agn = np.array(s["accuracy_matrix"])
    assert np.all(aware >= agn - 1e-12)  # restricting to the task's classes cannot hurt
    assert aware[2, 0] > agn[2, 0]  # naive class-incremental forgetting is partly a head bias


def test_results_load_is_tidy_over_many_runs(tmp_path):
    for seed in (0, 1):
        run_protocol(protocol(seed=seed), tmp_path)
    df = neurocl.results.load(tmp_path)
    assert set(df.run_id.unique()).__len__() == 2
    assert {"task", "eval_task", "metric", "value", "config.seed", "config.model.n", "config.training.optimizer.lr"} <= set(df.columns)
    assert sorted(df["config.seed"].unique()) == [0, 1]


def test_recording_options_write_snapshots_histograms_and_activity(tmp_path):
    p = protocol(recording={"weights": True, "histograms": True, "activity": {"trials": 3}})
    p["tasks"] = p["tasks"][:2]
    p["training"]["epochs"] = 1
    rd = run_protocol(p, tmp_path)
    snaps = sorted((rd.path / "weights").glob("*.npz"))
    assert [s.name for s in snaps] == ["t000-e000.npz", "t001-e000.npz"]
    w = np.load(snaps[-1])
    assert w["W_rec"].shape == (32, 32)
    h = pd.read_parquet(rd.path / "histograms.parquet")
    conn = int(torch.load(rd.last_checkpoint()[1], weights_only=True)["model"]["connectivity_mask"].sum())
    per = h[(h.layer == "W_rec") & (h.task == 1)]
    assert per["count"].sum() == conn
    act = np.load(rd.path / "activity.npz")
    assert act["task0_r"].shape == (3, 8, 32) and act["task1_z"].shape == (3, 8, 10)
    stats = pd.read_parquet(rd.metrics).query("metric == 'weight_kurtosis'")
    assert set(stats.layer) == {"W_in", "W_rec", "W_out"}
