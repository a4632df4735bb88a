"""Attempts per run (``attempts.json`` in the run directory) and the lock that keeps a run to one process.

Every start of a run by a sweep appends a record (host, pid, executor, SLURM job id) and its
end fills in the outcome: ``done``, ``failed`` (with the reason), ``died`` (the process running
it was killed: SIGKILL, out of memory; written by whoever saw it die) or nothing at all when the
whole sweep was killed (the run resumes on restart). ``died`` records since the last
``--retry-failed`` count towards the executor's attempt limit.

The lock is an ``flock`` on ``<run>/LOCK``: the kernel drops it when its process dies, so a
killed sweep never leaves a stale lock, and two processes (an orphaned worker still dying,
a second sweep over the same store, a resubmitted SLURM job) can never run one run at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..store import RunDir, atomic_write_json, run_lock  # noqa: F401 (run_lock: the sweep's lock on a run)

def path(rd: RunDir) -> Path:
    return rd.attempts


def read(rd: RunDir) -> list[dict]:
    try:
        return json.loads(path(rd).read_text())
    except FileNotFoundError:
        return []
    except ValueError:  # cannot happen with atomic writes; do not let it stop a sweep
        return []


def _write(rd: RunDir, records: list[dict]) -> None:
    rd.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path(rd), records)


def start(rd: RunDir, **info) -> int:
    """Record the start of an attempt by this process; returns its index."""
    records = read(rd)
    n = sum(1 for r in records if "started" in r) + 1
    records.append({"attempt": n, "started": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **info})
    _write(rd, records)
    return len(records) - 1


def finish(rd: RunDir, index: int, outcome: str, reason: str | None = None) -> None:
    records = read(rd)
    if 0 <= index < len(records):
        records[index].update(outcome=outcome, ended=time.time(), **({"reason": reason} if reason else {}))
        _write(rd, records)


def died(rd: RunDir, pid: int, reason: str, **info) -> None:
    """A process running this run died: close its open record, or add one if it never wrote it."""
    records = read(rd)
    last = records[-1] if records else None
    if last is not None and last.get("pid") == pid and "outcome" not in last and "started" in last:
        last.update(outcome="died", ended=time.time(), reason=reason)
    else:
        n = sum(1 for r in records if "started" in r) + 1
        records.append({"attempt": n, "started": None, "pid": pid, "outcome": "died", "ended": time.time(), "reason": reason, **info})
    _write(rd, records)


def interrupted(rd: RunDir, pid: int) -> None:
    """The sweep stopped this attempt on purpose (Ctrl-C, SIGTERM): it resumes later.

    A process stopped between writing DONE and closing its record did finish the run.
    """
    records = read(rd)
    if records and records[-1].get("pid") == pid and "outcome" not in records[-1]:
        records[-1].update(outcome="done" if rd.is_done() else "interrupted", ended=time.time())
        _write(rd, records)


def note_retry(rd: RunDir) -> None:
    """``--retry-failed``: earlier deaths no longer count towards the attempt limit."""
    records = read(rd)
    records.append({"event": "retry-failed", "time": time.time()})
    _write(rd, records)


def deaths(rd: RunDir) -> int:
    n = 0
    for r in read(rd):
        if r.get("event") == "retry-failed":
            n = 0
        elif r.get("outcome") == "died":
            n += 1
    return n


def count(rd: RunDir, outcome: str) -> int:
    return sum(1 for r in read(rd) if r.get("outcome") == outcome)
