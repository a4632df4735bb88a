"""The adding-problem benchmark (benchmarks/adding_problem.py): its data generator and its three
networks, checked in about a second (the benchmark's training is not part of the suite)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import adding_problem as A  # noqa: E402

from neurocl.analysis.trainability import colei_li_init  # noqa: E402


@pytest.mark.parametrize("length", [20, 7, 2])
def test_targets_are_the_sums_of_the_two_marked_values(length):
    x, y = A.adding_problem(500, length, seed=3)
    assert x.shape == (500, length, 2) and y.shape == (500,)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    values, markers = x[..., 0].double(), x[..., 1]
    assert torch.all((values >= 0) & (values <= 1))
    # Exactly two markers, each 1, one in each half of the sequence.
    assert torch.all((markers == 0) | (markers == 1))
    assert torch.all(markers.sum(1) == 2)
    half = length // 2
    assert torch.all(markers[:, :half].sum(1) == 1) and torch.all(markers[:, half:].sum(1) == 1)
    torch.testing.assert_close(y.double(), (values * markers).sum(1), rtol=0, atol=1e-6)
    # A worked row: the target is the sum of the two values under the markers, nothing else.
    row = 0
    marked = torch.nonzero(markers[row]).flatten().tolist()
    assert len(marked) == 2
    assert float(y[row]) == pytest.approx(float(x[row, marked[0], 0]) + float(x[row, marked[1], 0]), abs=1e-6)


def test_generator_is_reproducible_and_covers_the_positions():
    a, b, c = A.adding_problem(2000, 20, seed=1), A.adding_problem(2000, 20, seed=1), A.adding_problem(2000, 20, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # Every position of each half carries a marker somewhere; the targets' mean is 1, variance 1/6.
    assert torch.all(a[0][..., 1].sum(0) > 0)
    assert float(a[1].mean()) == pytest.approx(1.0, abs=0.03)
    assert float(a[1].var()) == pytest.approx(1 / 6, abs=0.02)


def test_the_three_networks_are_built_as_described():
    colei = A.build("colei", seed=0)
    w = colei.effective_weights()["W_rec"].detach().double().numpy()
    np.testing.assert_allclose(w, colei_li_init(10, i_fraction=0.1, radius=1.5, seed=0), rtol=1e-6, atol=1e-7)
    assert int((colei.sign < 0).sum()) == 1 and colei.check_constraints() == []
    rnn = A.build("rnn", seed=0)
    assert rnn.config.constraint == "unconstrained"
    w = {k: v.detach() for k, v in rnn.effective_weights().items()}
    assert float(w["W_rec"].abs().max()) <= 1 / np.sqrt(10) and (w["W_rec"] < 0).any() and (w["W_in"] < 0).any()
    dann = A.build("dann", seed=0, csgd=True)
    assert dann.config.is_dann and dann.config.dann.csgd and dann.dann_factors
    for m in (colei, rnn, dann):
        assert m.config.tau == 1.0 and m.config.sigma_rec == 0 and m.config.n_out == 1
        z = m(A.adding_problem(4, 20, seed=0)[0])
        assert z.shape == (4, 20, 1)
