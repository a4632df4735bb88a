"""The analyses ``neurocl analyse KIND SOURCE`` offers, and what they share.

Each analysis is a click command registered under its kind by the module that defines it (a new
one is that module plus its name below). They all rebuild a stored run's tasks, simulate its
networks on those tasks' test inputs and write their tables beside the run: the three helpers
here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..registry import Registry

ANALYSES: Registry = Registry("analysis", modules=("neurocl.analysis.psychometric", "neurocl.analysis.subspaces",
                                                     "neurocl.analysis.lesions", "neurocl.analysis.task_variance"))


def run_tasks(run_dir: str | Path):
    """(protocol, tasks) of a stored run, rebuilt from its ``config.json`` (same seed, same data)."""
    from ..data.sequence import build_tasks
    from ..protocol import load_protocol
    from ..store import RunDir

    proto = load_protocol(json.loads(RunDir(run_dir).config.read_text()))
    return proto, build_tasks(proto)[0]


def test_rates(model, split, max_trials: int):
    """The noiseless network's rates (trials, steps, units) on the first ``max_trials`` of a split."""
    from ..sim.simulate import simulate

    return simulate(model, split.x[:max_trials].numpy(), backend="auto", noise=False, record=("r",))["r"]


def write_table(run_dir: str | Path, kind: str, table) -> Path:
    """``table`` (a DataFrame) as ``RUN/analyses/<kind>.csv``; returns the path."""
    from ..store import RunDir, atomic_write_text

    rd = RunDir(run_dir)
    rd.analyses.mkdir(exist_ok=True)
    atomic_write_text(rd.analysis(kind), table.to_csv(index=False, float_format="%.6g"))
    return rd.analysis(kind)
