"""Bring a results store written by an older neurocl to today's run ids.

Run ids were once a hash of the whole resolved configuration, defaults included (format 1), so
any new option renamed every run. Since format 2 they hash :func:`neurocl.protocol.canonical_config`
(only the values that differ from the defaults). A store records its format in ``store.json``;
the first command that opens an older store renames each run directory to its new id,
computed from the ``config.json`` it holds, and rewrites the ids in the sweep manifests, the
SLURM submission records and each ``summary.json``. Finished runs stay finished, and a killed
run resumes from its checkpoints under its new id.

Every rename is logged in ``migrations.jsonl`` before it is made, so a migration killed half-way
finishes on the next open; runs that another process holds (a sweep still running with the old
neurocl) are left alone and the store stays at the old format until they can be moved.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import config_run_id
from .store import RunDir, Store, atomic_write_json, atomic_write_text, file_lock, read_store_meta, run_lock, write_store_meta

RUN_ID_FORMAT = 2


@dataclass
class Migration:
    """What one migration did."""

    renamed: list[tuple[str, str]] = field(default_factory=list)  # (old id, new id)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # moved aside: (old id, kept id)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)

    @property
    def complete(self) -> bool:
        return not self.skipped


def _logged(root: Path) -> dict[str, str]:
    path = Store(root).migrations_log
    mapping = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                mapping[rec["old"]] = rec["new"]
            except (ValueError, KeyError, TypeError):
                continue
    return mapping


def _log(root: Path, old: str, new: str, what: str) -> None:
    with open(Store(root).migrations_log, "a") as fh:
        fh.write(json.dumps({"old": old, "new": new, "what": what, "time": time.time(), "to_format": RUN_ID_FORMAT}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _replace_ids(obj, mapping: dict[str, str]):
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [_replace_ids(v, mapping) for v in obj]
    if isinstance(obj, dict):
        return {k: _replace_ids(v, mapping) for k, v in obj.items()}
    return obj


def _rewrite_records(root: Path, mapping: dict[str, str]) -> None:
    """Ids in the sweep manifests and SLURM submission records, and each run's summary."""
    store = Store(root)
    for path in store.sweep_manifests():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        new = _replace_ids(data, mapping)
        if new != data:
            atomic_write_json(path, new)
    subs = store.submissions
    if subs.exists():
        lines = subs.read_text().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.dumps(_replace_ids(json.loads(line), mapping)))
            except ValueError:
                out.append(line)
        if out != lines:
            atomic_write_text(subs, "".join(line + "\n" for line in out))
    for new_id in set(mapping.values()):
        summary = store.run(new_id).summary
        if summary.exists():
            data = json.loads(summary.read_text())
            if data.get("id") != new_id:
                atomic_write_json(summary, {**data, "id": new_id})


def migrate_store(root: str | Path) -> Migration:
    """Rename every run of ``root`` whose directory is not its current id; see the module doc."""
    root = Path(root)
    report = Migration()
    store = Store(root)
    runs = store.runs_dir
    # One migration at a time per store (array jobs of one sweep start together).
    with file_lock(store.lock_file):
        found = [RunDir(p) for p in runs.iterdir() if RunDir.holds_run(p)] if runs.is_dir() else []
        # The most complete copy of a configuration claims its id first (finished, then with
        # checkpoints); a later copy of the same configuration is set aside, not merged.
        found.sort(key=lambda rd: (not rd.is_done(), rd.last_checkpoint() is None, rd.id))
        for rd in found:
            path = rd.path
            try:
                new = config_run_id(json.loads(rd.config.read_text()))
            except Exception as err:  # noqa: BLE001 -- one unreadable run must not block the store
                report.skipped.append((rd.id, f"its config.json cannot be read as a protocol ({err})"))
                continue
            if new == rd.id:
                continue
            with run_lock(rd, wait_s=0) as locked:
                if not locked:
                    report.skipped.append((rd.id, "another process is running it; migrate once it stops"))
                    continue
                target = runs / new
                if target.exists():
                    aside = store.duplicates_dir / rd.id
                    aside.parent.mkdir(exist_ok=True)
                    _log(root, rd.id, new, "duplicate")
                    os.rename(path, aside)
                    report.duplicates.append((rd.id, new))
                else:
                    _log(root, rd.id, new, "renamed")
                    os.rename(path, target)
                    report.renamed.append((rd.id, new))
        mapping = _logged(root)
        if mapping:
            _rewrite_records(root, mapping)
        if report.complete:
            write_store_meta(root, {**read_store_meta(root), "run_id_format": RUN_ID_FORMAT})
    return report


def open_store(root: str | Path, create: bool = False) -> Migration | None:
    """Make ``root`` a store of today's format, migrating it once if it is older.

    ``create``: make the directory (a command about to write runs). Returns what a migration
    did, or None when there was nothing to do. A store that cannot be written (read-only) is
    read as it is: its runs keep their old directory names.
    """
    root = Path(root)
    if read_store_meta(root).get("run_id_format") == RUN_ID_FORMAT:
        return None
    if not root.is_dir():
        if not create:
            return None
        root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK):
        return None
    report = migrate_store(root)
    return report if (report.renamed or report.duplicates or report.skipped) else None


def open_store_and_say(root: str | Path, create: bool = False) -> None:
    """:func:`open_store` for the command line: says on stderr what a migration did."""
    import sys

    report = open_store(root, create=create)
    if report is not None:
        print(describe(report, root), file=sys.stderr, flush=True)


def describe(report: Migration, root: str | Path) -> str:
    """What a migration did, for a person."""
    lines = []
    if report.renamed:
        lines.append(f"{root}: {len(report.renamed)} runs renamed to today's run ids (logged in {Store(root).migrations_log})")
    for old, new in report.duplicates:
        lines.append(f"{root}: run {old} is the same configuration as {new}: moved to {Store(root).duplicates_dir / old}")
    for rid, why in report.skipped:
        lines.append(f"{root}: run {rid} not migrated: {why}")
    return "\n".join(lines)
