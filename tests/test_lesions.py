"""Known answers for lesions, and `neurocl analyse lesions` on a run."""

from __future__ import annotations

import json

import pandas as pd
import torch
from analysis_fixtures import kept_run
from click.testing import CliRunner

import neurocl
from neurocl.analysis.lesions import lesioned, unit_groups
from neurocl.cli import main



def _z(model, u):
    with torch.no_grad():
        return model(u, noise=False)


def test_a_lesion_of_units_that_send_nothing_changes_nothing():
    model = neurocl.build_model("ei-rnn-64", seed=3, n_in=5)
    u = torch.rand(4, 6, 5)
    assert torch.equal(_z(lesioned(model, []), u), _z(model, u))  # the empty lesion is the network
    silent = lesioned(model, [2, 40, 60])  # these units now send nothing ...
    assert torch.equal(_z(lesioned(silent, [2, 40, 60]), u), _z(silent, u))  # ... so cutting them again changes nothing
    assert not torch.equal(_z(silent, u), _z(model, u))
    # Everything silenced: the output is the readout bias, whatever the input.
    nothing = lesioned(model, list(range(64)))
    assert torch.allclose(_z(nothing, u), model.b_out.detach().expand(4, 6, -1))
    # The model itself is untouched, and the groups are its E and I units.
    groups = unit_groups(model)
    assert len(groups["E"]) == 51 and len(groups["I"]) == 13 and groups["none"] == []
    assert torch.equal(_z(model, u), _z(lesioned(model, []), u))


def test_analyse_lesions_on_a_run(tmp_path):
    rd = kept_run(tmp_path, pairs=2, epochs=3)
    res = CliRunner().invoke(main, ["analyse", "lesions", str(rd.path)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(rd.path / "analyses" / "lesions.csv")
    assert set(table.group) == {"none", "E", "I"} and set(table.after_task) == {"0-1", "2-3"}
    intact = table[table.group == "none"]
    assert (intact["drop"] == 0).all()
    # The intact network's accuracy is the run's own (evaluated here without noise).
    R = json.loads((rd.path / "summary.json").read_text())["accuracy_matrix"]
    for (i, j), acc in intact.set_index(["after_task", "eval_task"])["accuracy"].items():
        stored = R[["0-1", "2-3"].index(i)][["0-1", "2-3"].index(j)]
        assert abs(acc - stored) <= 0.05, (i, j, acc, stored)
    assert (table[table.group != "none"]["drop"] > 0).any()  # silencing a population costs something
