"""Every shipped sweep file expands, and reproduction sweeps name the runs `neurocl run` would."""

from pathlib import Path

import pytest

from neurocl.protocol import load_protocol, protocol_run_id
from neurocl.sweep import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "sweeps").rglob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(REPO / "sweeps")))
def test_shipped_sweep_expands_without_the_data(path, isolated, t10k_dir, monkeypatch):
    # A sweep is prepared where its data need not be (a laptop; the data is on the cluster):
    # expanding it reads no dataset, and gives the same runs as where the data is.
    sweep = load_sweep(path)
    assert sweep.runs and len({r.id for r in sweep.runs}) == len(sweep.runs)
    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    assert [r.id for r in load_sweep(path).runs] == [r.id for r in sweep.runs]


def test_reproduction_sweep_ids_equal_single_run_ids():
    sweep = load_sweep(REPO / "sweeps" / "reproductions" / "r5-ewc.yaml")
    expected = {protocol_run_id(load_protocol(REPO / "protocols" / "r5-ewc.yaml", [f"seed={s}"])) for s in range(3)}
    assert {r.id for r in sweep.runs} == expected
