"""Where a sweep stands, read from the store's marker files only (never from the scheduler).

A run is ``done`` (DONE), ``failed`` (FAILED, with its reason), ``running`` (RUNNING, held by a
live process) or ``pending``: not started, or started and interrupted (a RUNNING marker left by
a process that is gone; it resumes from its last task checkpoint when the sweep runs again).
Whether the process behind a RUNNING marker is alive can only be told on its own host; a
marker from another host (a SLURM node) is taken at its word.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..store import RunDir, iter_runs
from . import attempts
from .manifest import read_manifests, submitted_jobs

STATES = ("done", "running", "failed", "pending")


@dataclass
class RunState:
    id: str
    label: str
    status: str
    reason: str | None = None
    note: str | None = None


def _lock_free(rd: RunDir) -> bool | None:
    """True if no process holds the run's lock; None if it cannot be told."""
    lock = rd.lock_file
    if not lock.exists():
        return None
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)  # flock needs no write access: a read-only store works too
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(rd: RunDir, label: str = "") -> RunState:
    status = rd.status() if rd.path.is_dir() else "pending"
    label = label or rd.id
    if status == "failed":
        return RunState(rd.id, label, "failed", reason=rd.failure_reason())
    if status != "running":
        return RunState(rd.id, label, status)
    try:
        marker = json.loads(rd.running_marker.read_text())
    except (OSError, ValueError):
        marker = {}
    last = (attempts.read(rd) or [{}])[-1]
    where = f"{marker.get('host', '?')} pid {marker.get('pid', '?')}"
    if last.get("job_id"):
        where += f", SLURM job {last['job_id']}"
    if marker.get("host") == socket.gethostname():
        free = _lock_free(rd)
        alive = (not free) if free is not None else _pid_alive(int(marker.get("pid", 0) or 0))
        if not alive:
            ck = rd.last_checkpoint()
            resume = f"after task {ck[0]}" if ck else "from the start"
            return RunState(rd.id, label, "pending", note=f"interrupted ({where}); resumes {resume}")
    return RunState(rd.id, label, "running", note=f"on {where}")


def store_status(out: str | Path) -> list[RunState]:
    """Every run a sweep manifest lists (started or not) and every run in the store."""
    out = Path(out)
    labels: dict[str, str] = {}
    for m in read_manifests(out):
        for r in m["runs"]:
            labels.setdefault(r["id"], r.get("label", ""))
    states = {}
    for rd in iter_runs(out):
        states[rd.id] = run_state(rd, labels.get(rd.id, ""))
    jobs = submitted_jobs(out)
    for rid, label in labels.items():
        if rid not in states:
            note = f"submitted as SLURM job {jobs[rid]}" if rid in jobs else None
            states[rid] = RunState(rid, label or rid, "pending", note=note)
    return sorted(states.values(), key=lambda s: (STATES.index(s.status), s.label))


def counts(states: list[RunState]) -> dict[str, int]:
    return {s: sum(1 for x in states if x.status == s) for s in STATES}


def format_status(out: str | Path, states: list[RunState], verbose: bool = False) -> str:
    c = counts(states)
    lines = [f"{out}: " + "  ".join(f"{s} {c[s]}" for s in STATES) + f"  (total {len(states)})"]
    for s in states:
        if s.status == "failed":
            lines.append(f"  FAILED  {s.id}  {s.label}: {s.reason}")
    for s in states:
        if s.status == "running" or (verbose and s.note):
            lines.append(f"  {s.status:<7s} {s.id}  {s.label}" + (f"  [{s.note}]" if s.note else ""))
    if verbose:
        for s in states:
            if s.status in ("done", "pending") and not s.note:
                lines.append(f"  {s.status:<7s} {s.id}  {s.label}")
    return "\n".join(lines)
