"""What a sweep asked for, kept in the store: ``<out>/sweeps/<name>.json``.

The run ids of a sweep are only known after expansion; writing them down lets
``neurocl sweep status DIR`` count runs that have not started yet (pending) from any machine
that sees the store, without the sweep file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..store import Store, atomic_write_json


def write_manifest(out: str | Path, sweep) -> Path:
    path = Store(out).sweep_manifest(sweep.name)
    atomic_write_json(path, sweep.manifest())
    return path


def read_manifests(out: str | Path) -> list[dict]:
    found = []
    for p in Store(out).sweep_manifests():
        try:
            found.append(json.loads(p.read_text()))
        except ValueError:
            continue
    return found


def submitted_jobs(out: str | Path) -> dict[str, str]:
    """Run id -> the SLURM job it was last submitted in (from the submission records)."""
    p = Store(out).submissions
    jobs: dict[str, str] = {}
    if not p.exists():
        return jobs
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        for rid in rec.get("runs", []):
            jobs[rid] = rec["job_id"]
    return jobs
