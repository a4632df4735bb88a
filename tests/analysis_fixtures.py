"""A small stored run that kept every task boundary, for the analyses' tests."""

from __future__ import annotations

from pathlib import Path

from neurocl.run import run_protocol

REPO = Path(__file__).resolve().parent.parent


def kept_run(tmp_path: Path, pairs: int = 2, epochs: int = 3):
    """split-digits on its first ``pairs`` digit pairs, every task-boundary checkpoint kept."""
    tasks = ", ".join(f"{{classes: [{2 * i}, {2 * i + 1}]}}" for i in range(pairs))
    return run_protocol(REPO / "protocols" / "split-digits.yaml", tmp_path / "out",
                        [f"tasks=[{tasks}]", f"training.epochs={epochs}", "execution.keep_checkpoints=all",
                         "execution.progress=none"])
