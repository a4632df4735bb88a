"""Known answers for task variance and unit clustering, and `neurocl analyse variance` on a run."""

from __future__ import annotations


import numpy as np
import pandas as pd
from analysis_fixtures import kept_run
from click.testing import CliRunner

from neurocl.analysis.task_variance import cluster_units, normalise, task_variance
from neurocl.cli import main



def test_task_variance_is_the_variance_across_trials_averaged_over_steps():
    r = np.zeros((4, 3, 2))
    r[:, :, 0] = 5.0  # constant across trials: no task variance
    r[:, 0, 1] = [0, 0, 2, 2]  # variance 1 at step 0, 0 at the others
    np.testing.assert_allclose(task_variance(r), [0.0, 1 / 3])


def test_normalise_divides_by_each_units_largest_and_drops_silent_units():
    tv = np.array([[2.0, 1.0], [0.0, 0.0], [0.5, 4.0]])
    x, active = normalise(tv)
    assert list(active) == [0, 2]
    np.testing.assert_allclose(x, [[1.0, 0.5], [0.125, 1.0]])


def test_clustering_recovers_planted_clusters():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    truth = np.repeat([0, 1, 2], 20)
    x = centres[truth] + 0.03 * rng.normal(size=(60, 3))
    labels, score = cluster_units(x, k_max=6)
    assert adjusted_rand_score(truth, labels) == 1.0 and score > 0.8


def test_analyse_variance_on_a_run(tmp_path):
    rd = kept_run(tmp_path, pairs=2, epochs=3)
    res = CliRunner().invoke(main, ["analyse", "variance", str(rd.path), "--trials", "60"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(rd.path / "analyses" / "task-variance.csv")
    assert set(table.after_task) == {"0-1", "2-3"} and set(table.task) == {"0-1", "2-3"}
    assert set(table.population) <= {"E", "I"} and table.normalised.between(0, 1).all()
    # Each active unit's largest normalised variance is 1, and it has one cluster per checkpoint.
    per_unit = table.groupby(["after_task", "unit"])
    assert np.allclose(per_unit.normalised.max(), 1.0) and (per_unit.cluster.nunique() == 1).all()
