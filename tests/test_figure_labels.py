"""Condition labels: short enough for a legend when runs of different protocols are drawn together."""

from __future__ import annotations

import math

import pandas as pd

from neurocl.figures import data

NONE = math.nan  # a setting the run's configuration does not have, as flatten() leaves it


def labels(rows: list[dict]) -> list[str]:
    """Condition labels in display order for runs given as {setting: value} (two seeds each)."""
    records = []
    for i, row in enumerate(rows):
        for seed in (0, 1):
            config = {f"config.{k}": v for k, v in row.items()}
            records.append({"run_id": f"run{i}-{seed}", "metric": "acc", "value": 0.5, "config.seed": seed, **config})
    return data.conditions(data.prepare(pd.DataFrame(records)))


def test_protocols_with_different_models_are_labelled_by_name_and_what_varies_within_one():
    ei = {"model.kind": "ei-rnn", "model.hidden": NONE, "model.dt": 1, "rules": "naive"}
    lstm = {"model.kind": "lstm", "model.hidden": 64, "model.tau": NONE, "model.dt": NONE, "rules": "naive"}
    got = labels([
        {**ei, "name": "r1-ei-all-digits", "model.tau": 50}, {**ei, "name": "r1-ei-all-digits", "model.tau": 2},
        {**ei, "name": "r1-ei-joint", "model.tau": 50, "rules": "joint"},
        {**lstm, "name": "r1-lstm-joint", "rules": "joint"},
    ])
    # model.kind, model.hidden, model.dt and the rules follow from the name: none of them is named;
    # the LSTM has no time constant, so its label does not say "model.tau=none".
    assert got == ["r1-ei-all-digits, model.tau=2", "r1-ei-all-digits, model.tau=50", "r1-ei-joint, model.tau=50",
                   "r1-lstm-joint"]


def test_a_primary_setting_is_named_only_where_it_splits_the_conditions():
    got = labels([
        {"name": "r5-naive", "rules": "naive", "dataset.max_train": NONE},
        {"name": "r5-fashion", "rules": "naive", "dataset.max_train": NONE},
        {"name": "r5-fashion", "rules": "naive", "dataset.max_train": 8000},
        {"name": "r5-fashion", "rules": "joint", "dataset.max_train": 8000},
    ])
    # Within r5-fashion, "none" (all the data) is a real alternative to 8000, so it is named.
    assert got == ["r5-fashion, rules=joint, dataset.max_train=8000", "r5-fashion, rules=naive, dataset.max_train=8000",
                   "r5-fashion, rules=naive, dataset.max_train=none", "r5-naive"]


def test_a_sweep_of_one_protocol_keeps_naming_every_setting_that_varies():
    got = labels([
        {"rules": "naive", "training.optimizer.lr": 0.02}, {"rules": "naive", "training.optimizer.lr": 0.01},
        {"rules": "joint", "training.optimizer.lr": 0.02},
    ])
    # lr is not decided by the rule, so joint's label names it too
    assert got == ["rules=joint, training.optimizer.lr=0.02", "rules=naive, training.optimizer.lr=0.01",
                   "rules=naive, training.optimizer.lr=0.02"]
    assert labels([{"rules": "naive"}, {"rules": "ewc"}]) == ["ewc", "naive"]


def test_panel_titles_break_long_labels_after_commas():
    from neurocl.figures.style import panel_title

    label = "r5-fashion, rules=joint, dataset.max_train=8000 (n=3)"
    title = panel_title(label, width=30)
    assert title.split("\n") == ["r5-fashion, rules=joint,", "dataset.max_train=8000 (n=3)"]
    assert title.replace(",\n", ", ") == label
    assert panel_title("r5-naive (n=3)") == "r5-naive (n=3)"


def test_accuracy_figures_name_the_tasks_as_the_protocol_does(tmp_path):
    from sweep_fixtures import TINY_PROTOCOL

    from neurocl.figures.accuracy import accuracy_curves, accuracy_matrix
    from neurocl.results import load
    from neurocl.run import run_protocol

    p = tmp_path / "named.yaml"
    p.write_text(TINY_PROTOCOL.replace("  - classes: [0, 1]", "  - {classes: [0, 1], name: zeros-and-ones}"))
    run_protocol(p, tmp_path / "out", ["execution.progress=none"])
    df = data.prepare(load(tmp_path / "out"))
    assert data.task_labels(df) == {0: "zeros-and-ones", 1: "2-3"}
    (curves,) = accuracy_curves(df)
    legend = curves.figure.axes[0].get_legend_handles_labels()[1]
    assert legend == ["task 0: zeros-and-ones", "task 1: 2-3"]
    (matrix,) = accuracy_matrix(df)
    assert [t.get_text() for t in matrix.figure.axes[0].get_xticklabels()] == ["zeros-and-ones", "2-3"]
    # A store written before task names were recorded: indices, as before.
    assert data.task_labels(df.drop(columns="eval_task_name")) == {}
