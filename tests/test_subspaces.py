"""Known answers for the task-subspace analysis, and `neurocl analyse subspaces` on a run."""

from __future__ import annotations


import numpy as np
import pandas as pd
from analysis_fixtures import kept_run
from click.testing import CliRunner

from neurocl.analysis.subspaces import activity_subspace, linear_cka, principal_angles
from neurocl.cli import main



def test_principal_angles_of_constructed_subspaces():
    e = np.eye(5)
    np.testing.assert_allclose(principal_angles(e[:, [0, 1]], e[:, [1, 2]]), [0, np.pi / 2], atol=1e-12)
    np.testing.assert_allclose(principal_angles(e[:, [0]], e[:, [2, 3]]), [np.pi / 2], atol=1e-12)
    # span{e0} against span{e0 cos t + e1 sin t}: the angle t; the basis scale does not matter.
    t = 0.3
    np.testing.assert_allclose(principal_angles(3 * e[:, [0]], (np.cos(t) * e[:, 0] + np.sin(t) * e[:, 1])[:, None]),
                               [t], atol=1e-12)


def test_activity_subspace_recovers_a_planted_plane():
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(20, 2)))[0]
    r = rng.normal(size=(500, 2)) @ plane.T * 5 + 1e-3 * rng.normal(size=(500, 20)) + 7.0
    basis = activity_subspace(r, variance=0.99)
    assert basis.shape == (20, 2)
    assert np.degrees(principal_angles(basis, plane)).max() < 0.1


def test_linear_cka_known_answers():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10))
    rotation = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    assert abs(linear_cka(x, x) - 1) < 1e-12
    assert abs(linear_cka(x, 4 * x @ rotation + 2) - 1) < 1e-12  # rotation, scale, shift
    assert linear_cka(x, rng.normal(size=(300, 10))) < 0.1  # unrelated


def test_analyse_subspaces_on_a_run(tmp_path):
    rd = kept_run(tmp_path, pairs=3, epochs=2)
    res = CliRunner().invoke(main, ["analyse", "subspaces", str(rd.path), "--trials", "50"])
    assert res.exit_code == 0, res.output
    angles = pd.read_csv(rd.path / "analyses" / "subspaces-angles.csv")
    drift = pd.read_csv(rd.path / "analyses" / "subspaces-drift.csv")
    assert [tuple(r) for r in angles[["task_i", "task_j"]].to_numpy()] == [("0-1", "2-3"), ("0-1", "4-5"), ("2-3", "4-5")]
    assert ((angles.smallest_angle_deg >= 0) & (angles.mean_angle_deg <= 90)).all()
    assert list(drift.task) == ["0-1", "2-3"] and drift.cka_own_vs_last.between(0, 1).all()
