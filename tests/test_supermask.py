"""Supermasks (SupSup, study R4): frozen weights, exact per-task recall, checkpoints with
per-task batch norm, task inference, the mask analyses, and the shipped protocols."""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import neurocl
from neurocl.analysis.masks import (
    chance_jaccard,
    jaccard,
    jaccard_p_value,
    macro_scores,
    mask_overlaps,
    norm_mean_similarity,
)
from neurocl.protocol import load_protocol
from neurocl.run import Runner

REPO = Path(__file__).resolve().parent.parent
N_TASKS = 4


def permuted_digits(rules=("supermask",), **extra):
    """Permuted 8x8 digits, task given (task-incremental), a small masked MLP."""
    proto = dict(
        name="permuted-digits-test", dataset={"name": "digits", "encoding": "flat"}, scenario="task-incremental",
        tasks=[{"permutation_seed": "identity" if i == 0 else i} for i in range(N_TASKS)],
        training={"epochs": 5, "batch_size": 32, "optimizer": {"name": "rmsprop", "lr": 1e-2}},
        seed=0, model={"kind": "masked-mlp", "n_in": 64, "hidden": [100, 100], "n_out": 10, "n_tasks": N_TASKS},
        rules=list(rules), evaluation={"every": "task", "untrained": False, "batch_size": 60},
        execution={"progress": "none", "keep_checkpoints": "all"}, recording={"weight_stats": False},
    )
    proto.update(extra)
    return proto


def train(proto, out):
    runner = Runner(load_protocol(proto), out)
    runner.rd.path.mkdir(parents=True, exist_ok=True)
    runner.execute()
    return runner


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run shared by the tests below: (runner, summary, metrics)."""
    runner = train(permuted_digits(), tmp_path_factory.mktemp("supsup"))
    return runner, json.loads(runner.rd.summary.read_text()), pd.read_parquet(runner.rd.metrics)


# ---------------------------------------------------------------------------- the model
def test_weights_are_a_frozen_signed_constant_and_never_change(trained):
    runner, _, _ = trained
    fresh = neurocl.build_model(runner.config["model"], seed=runner.proto.seed)
    for layer, before in zip(runner.model.layers, fresh.layers):
        assert torch.equal(layer.weight, before.weight)
        fan_in = layer.weight.shape[1]
        assert torch.allclose(layer.weight.abs(), torch.full_like(layer.weight, np.sqrt(2) / np.sqrt(fan_in)))
    assert not any(n.endswith("weight") for n, _ in runner.model.named_parameters())
    assert runner.model.check_constraints() == []
    runner.model.layers[0].weight[0, 0] *= -1  # check_constraints notices a changed weight
    try:
        assert any("changed" in p for p in runner.model.check_constraints())
    finally:
        runner.model.layers[0].weight[0, 0] *= -1


def test_effective_weights_are_the_active_task_masked_weights(trained):
    model = trained[0].model
    model.set_task(1)
    w = model.effective_weights()["layer0"]
    assert torch.equal(w != 0, model.task_masks(1)["layer0"])
    assert not torch.equal(w, model.layers[0].weight * model.task_masks(0)["layer0"])


def test_top_k_masks_keep_the_given_density_and_pass_gradients_straight_through():
    model = neurocl.build_model({"kind": "masked-mlp", "n_in": 20, "hidden": [30], "n_out": 5, "n_tasks": 2,
                                 "mask": "top-k", "density": 0.25})
    assert model.task_masks(0)["layer0"].float().mean().item() == pytest.approx(0.25, abs=1 / 600)
    model.set_task(1)
    model(torch.rand(8, 1, 20)).sum().backward()
    assert model.layers[0].scores[1].grad.abs().sum() > 0  # straight through the binarisation
    assert model.layers[0].scores[0].grad is None  # another task's scores are untouched


# ---------------------------------------------------------------------------- per-task recall
def test_each_task_mask_keeps_exactly_the_accuracy_it_had_when_trained(trained):
    _, summary, _ = trained
    R = np.array(summary["accuracy_matrix"])
    assert np.all(np.diag(R) > 0.8)  # the masks learned their tasks
    assert np.array_equal(R[-1], np.diag(R))  # ... and nothing moved them afterwards


def test_finished_tasks_scores_survive_an_optimiser_with_momentum_and_weight_decay(tmp_path):
    proto = permuted_digits()
    proto["training"] = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-2}, "weight_decay": 1e-3}
    proto["tasks"] = proto["tasks"][:2]
    runner = train(proto, tmp_path)
    R = np.array(json.loads(runner.rd.summary.read_text())["accuracy_matrix"])
    assert R[1, 0] == R[0, 0]


def test_a_checkpoint_round_trip_keeps_task_given_accuracy(trained):
    runner, summary, _ = trained
    last = runner.rd.last_checkpoint()[1]
    state = torch.load(last, map_location="cpu", weights_only=True)["model"]
    # Batch-norm statistics are stored per task (SupSup's own code shared them).
    assert all(f"norms.0.{t}.running_mean" in state for t in range(N_TASKS))
    means = [state[f"norms.0.{t}.running_mean"] for t in range(N_TASKS)]
    assert not torch.equal(means[0], means[1])
    model = neurocl.build_model(runner.config["model"], seed=runner.proto.seed)
    model.load_state_dict(state)
    model.eval()
    for j, task in enumerate(runner.tasks):
        with torch.no_grad():
            z = model(task.test.x, task=j)[:, -1, :10]
        acc = int((z.argmax(-1) == task.test.y).sum()) / len(task.test.y)
        assert acc == summary["accuracy_matrix"][-1][j]


# ---------------------------------------------------------------------------- task inference
def test_superposition_with_one_hot_alpha_is_exactly_that_task_network(trained):
    model = trained[0].model
    model.eval()
    x = trained[0].tasks[2].test.x[:50]
    alpha = torch.zeros(50, N_TASKS)
    alpha[:, 2] = 1
    with torch.no_grad():
        assert torch.equal(model.forward_mixture(x, alpha, list(range(N_TASKS))), model(x, task=2))


def test_task_inference_on_permuted_digits(trained):
    _, _, metrics = trained
    inferred = metrics[metrics.metric == "task_inference_acc"]
    assert len(inferred) == N_TASKS
    # Measured: the one-shot entropy gradient finds the task of every 60-image batch (1.0).
    assert inferred.value.mean() >= 0.9, inferred.value.tolist()
    with_inferred = metrics[metrics.metric == "acc_inferred"].value.to_numpy()
    given = np.array(trained[1]["accuracy_matrix"][-1])
    assert np.all(with_inferred >= given - 0.05)


def test_most_similar_task_inference_on_permuted_digits(trained):
    from neurocl.rules.supermask import infer_tasks

    runner = trained[0]
    model = runner.model
    model.eval()
    hits = []
    with torch.no_grad():
        for j, task in enumerate(runner.tasks):
            x = task.test.x
            for start in range(0, len(x), 60):
                got = infer_tasks(model, x[start:start + 60], list(range(N_TASKS)), None, "most-similar", "batch")
                hits.append(float((got == j).float().mean()))
    # Measured: every batch of 60 is assigned its own task (1.0).
    assert np.mean(hits) >= 0.9


def test_task_agnostic_evaluation_uses_task_inference(tmp_path):
    proto = permuted_digits()
    proto["scenario"] = "domain-incremental"  # outputs shared, the task is never given
    proto["tasks"] = proto["tasks"][:2]
    runner = train(proto, tmp_path)
    R = np.array(json.loads(runner.rd.summary.read_text())["accuracy_matrix"])
    # The task-agnostic accuracy is that of the inferred mask: far above a wrong mask's.
    assert R[-1, 0] > 0.8 and R[-1, 1] > 0.8


def test_accuracy_with_an_inferred_task_uses_that_tasks_classes(tmp_path):
    """Partitioned tasks (R4): each task has its own classes; a task inferred right must score
    what the task-given evaluation scores, not a prediction over every class seen."""
    proto = permuted_digits(rules=[{"name": "supermask", "task_inference": "most-similar"}])
    proto["tasks"] = [{"classes": [0, 1]}, {"classes": [2, 3]}, {"classes": [4, 5]}]
    runner = train(proto, tmp_path)
    metrics = pd.read_parquet(runner.rd.metrics)
    given = np.array(json.loads(runner.rd.summary.read_text())["accuracy_matrix"])[-1]
    inferred = metrics[metrics.metric == "task_inference_acc"].sort_values("eval_task").value.to_numpy()
    with_inferred = metrics[metrics.metric == "acc_inferred"].sort_values("eval_task").value.to_numpy()
    assert len(with_inferred) == 3
    for j in range(3):
        # Where the task was always found, the two accuracies are the same evaluation.
        if inferred[j] == 1.0:
            assert with_inferred[j] == pytest.approx(given[j], abs=1e-9)
    assert inferred.max() == 1.0  # the comparison above happened at least once

def test_init_from_the_most_similar_earlier_task_copies_its_scores(trained):
    from neurocl.rules.supermask import Supermask, SupermaskConfig

    runner = trained[0]
    logged = []
    ctx = dataclasses.replace(runner.ctx, model=copy.deepcopy(runner.model), log_metric=lambda *a, **k: logged.append((a, k)))
    rule = Supermask(SupermaskConfig(init_scores="most-similar"))
    rule.start_task(3, ctx)
    ((name, source), keys) = logged[0]
    assert name == "similar_task" and keys["task"] == 3 and source in (0, 1, 2)
    for layer in ctx.model.layers:
        assert torch.equal(layer.scores[3], layer.scores[source])
    assert not torch.equal(ctx.model.layers[0].scores[3], runner.model.layers[0].scores[3])


def test_the_rule_needs_a_supermask_model_with_enough_task_slots(tmp_path):
    proto = permuted_digits()
    proto["model"] = {"kind": "mlp", "n_in": 64, "hidden": [10], "n_out": 10}
    with pytest.raises(ValueError, match="needs a supermask model"):
        train(proto, tmp_path / "a")
    proto = permuted_digits()
    proto["model"]["n_tasks"] = 2
    with pytest.raises(ValueError, match="masks for 2 tasks but the protocol has 4"):
        train(proto, tmp_path / "b")


# ---------------------------------------------------------------------------- analyses
def test_chance_jaccard_formula_agrees_with_simulation():
    gen = torch.Generator().manual_seed(0)
    for p1, p2 in [(0.5, 0.5), (0.2, 0.7), (0.05, 0.3)]:
        sims = [
            jaccard(torch.rand(20_000, generator=gen) < p1, torch.rand(20_000, generator=gen) < p2) for _ in range(50)
        ]
        assert np.mean(sims) == pytest.approx(chance_jaccard(p1, p2), abs=0.003)
    assert chance_jaccard(0.5, 0.5) == pytest.approx(1 / 3)


def test_exact_permutation_p_value_agrees_with_monte_carlo_and_detects_overlap():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(400, generator=gen) < 0.4
    b = torch.rand(400, generator=gen) < 0.5
    exact = jaccard_p_value(a, b)
    mc = jaccard_p_value(a, b, method="monte-carlo", n_permutations=4000, generator=gen)
    assert exact == pytest.approx(mc, abs=0.04)
    shared = a | (torch.rand(400, generator=gen) < 0.2)  # overlaps a more than chance
    assert jaccard_p_value(a, shared, alternative="greater") < 1e-6
    assert jaccard_p_value(a, ~a, alternative="less") < 1e-6


def test_analyses_are_recorded_in_the_run_metrics(trained):
    _, _, metrics = trained
    pairs = N_TASKS * (N_TASKS - 1) // 2
    for name in ("mask_jaccard", "mask_jaccard_chance", "mask_jaccard_p"):
        rows = metrics[metrics.metric == name]
        assert len(rows) == 3 * pairs  # three layers
        assert set(rows.layer) == {"layer0", "layer1", "layer2"}
        assert all(rows.task < rows.eval_task)
    model = trained[0].model
    for row in metrics[metrics.metric == "mask_jaccard"].itertuples():
        a, b = model.task_masks(row.task)[row.layer], model.task_masks(row.eval_task)[row.layer]
        assert row.value == pytest.approx(jaccard(a, b))
        chance = metrics[(metrics.metric == "mask_jaccard_chance") & (metrics.task == row.task)
                         & (metrics.eval_task == row.eval_task) & (metrics.layer == row.layer)].value.item()
        assert chance == pytest.approx(chance_jaccard(a.float().mean().item(), b.float().mean().item()))
    assert len(metrics[metrics.metric == "bn_mean_cosine"]) == 2 * pairs
    f1 = metrics[metrics.metric == "f1_macro"]
    assert len(f1) == N_TASKS and all(f1.value > 0.8)
    assert len(metrics[metrics.metric == "time"]) == N_TASKS


def test_analysis_helpers():
    masks = [{"l": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}, {"l": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}]
    (row,) = mask_overlaps(masks)
    assert row["jaccard"] == pytest.approx(1 / 3) and row["chance"] == pytest.approx(1 / 3)
    (sim,) = norm_mean_similarity([{"l": torch.tensor([1.0, 0.0])}, {"l": torch.tensor([1.0, 1.0])}])
    assert sim["cosine"] == pytest.approx(1 / np.sqrt(2))
    s = macro_scores([0, 0, 1, 1], [0, 1, 1, 1])
    assert s["precision_macro"] == pytest.approx((1 + 2 / 3) / 2) and s["recall_macro"] == pytest.approx((1 / 2 + 1) / 2)


# ---------------------------------------------------------------------------- shipped files
def test_the_r4_preset_matches_the_study():
    model = neurocl.build_model("supsup-fc300")
    assert [tuple(w.shape) for w in model.effective_weights().values()] == [(300, 784), (300, 300), (100, 300)]
    assert model.config.batch_norm and model.config.mask == "threshold" and model.n_tasks == 10


@pytest.mark.parametrize(
    "path", sorted(p.name for p in (REPO / "protocols").glob("*.yaml") if p.name.startswith(("r1-", "r4-")))
)
def test_shipped_r1_and_r4_protocols_validate(path):
    proto = load_protocol(REPO / "protocols" / path)
    # r1-ei-all-digits is R1's diagnostic: one task of all ten digits.
    expected = 1 if path == "r1-ei-all-digits.yaml" else 5 if path.startswith("r1-") else 10
    assert len(proto.tasks) == expected
