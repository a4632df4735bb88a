"""Running the runs of a sweep: which are left to do, and the executors that do them.

``local`` (a process pool on this machine) and ``slurm`` (job arrays through submitit) share
one worker function (:mod:`.worker`), one attempt record per run (:mod:`.attempts`) and the
store's markers, so a sweep started with one executor can be finished with the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..store import Store
from . import attempts
from .manifest import read_manifests, write_manifest


@dataclass
class Plan:
    """The runs of a sweep split by what the store says about them."""

    todo: list = field(default_factory=list)  # not done; resumes where a checkpoint exists
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # FAILED and not retried (no --retry-failed)
    retried: list = field(default_factory=list)  # FAILED and retried (in todo too)


def plan(runs: list, out: str | Path, retry_failed: bool = False) -> Plan:
    p = Plan()
    for run in runs:
        rd = Store(out).run(run.id)
        if rd.is_done():
            p.done.append(run)
        elif rd.is_failed() and not retry_failed:
            p.failed.append(run)
        else:
            if rd.is_failed():
                p.retried.append(run)
            p.todo.append(run)
    return p


def start_retries(p: Plan, out: str | Path) -> None:
    """Before running a plan: earlier worker deaths of retried runs no longer count."""
    for run in p.retried:
        attempts.note_retry(Store(out).run(run.id))


__all__ = ["Plan", "plan", "start_retries", "write_manifest", "read_manifests"]
