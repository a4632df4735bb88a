"""The results store: one directory per run, every file written atomically.

``runs/<id>/`` holds ``config.json``, ``meta.json``, ``metrics.parquet``, ``summary.json``,
``checkpoints/task-<k>.pt``, ``run.log`` and a ``DONE`` (or ``FAILED``) marker written last;
``LOCK`` is flocked by the process that runs it. ``<store>/store.json`` records the format.
A run id is a hash of the canonical configuration (the values that differ from the defaults),
so rerunning a finished run is a no-op, a sweep never repeats work, and a new option with a
default renames no run.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, flush, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch  # here, not at the top: reading a store (show, results, sweep status) needs no torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def hash_config(canonical: dict) -> str:
    """A run id: 16 hex digits of the SHA-256 of a configuration's canonical form (built by
    :func:`neurocl.protocol.canonical_config`, which knows the schema and its defaults)."""
    return hashlib.sha256(canonical_json(canonical).encode()).hexdigest()[:16]


STORE_META = "store.json"

# Errors of the storage, not of the run: a read-only or full disk, no permission. A run that
# meets one stops without being marked FAILED and resumes once the storage is fixed.
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def storage_problem(err: BaseException) -> str | None:
    """A sentence for a storage error (see STORAGE_ERRNOS), or None for any other error."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = f" {err.filename}" if err.filename else ""
        return f"cannot write{where}: {err.strerror}"
    return None


def read_store_meta(root: str | Path) -> dict:
    """``<store>/store.json`` (the store's format), or {} for a store that has none yet."""
    try:
        return json.loads(Store(root).meta.read_text())
    except (OSError, ValueError):
        return {}


def write_store_meta(root: str | Path, meta: dict) -> None:
    atomic_write_json(Store(root).meta, meta)


class RunDir:
    """Paths and markers of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    config = property(lambda self: self.path / "config.json")
    meta = property(lambda self: self.path / "meta.json")
    metrics = property(lambda self: self.path / "metrics.parquet")
    summary = property(lambda self: self.path / "summary.json")
    log = property(lambda self: self.path / "run.log")
    done_marker = property(lambda self: self.path / "DONE")
    failed_marker = property(lambda self: self.path / "FAILED")
    running_marker = property(lambda self: self.path / "RUNNING")
    lock_file = property(lambda self: self.path / "LOCK")  # flock held while a process runs it
    checkpoints = property(lambda self: self.path / "checkpoints")
    attempts = property(lambda self: self.path / "attempts.json")  # one record per start by a sweep
    histograms = property(lambda self: self.path / "histograms.parquet")
    analyses = property(lambda self: self.path / "analyses")  # what `neurocl analyse` writes

    def analysis(self, kind: str, suffix: str = ".csv") -> Path:
        """The file of one analysis of this run (``analyses/<kind>.csv``)."""
        return self.analyses / f"{kind}{suffix}"
    activity = property(lambda self: self.path / "activity.npz")
    weights_dir = property(lambda self: self.path / "weights")

    def weight_snapshot(self, task: int, epoch: int) -> Path:
        return self.weights_dir / f"t{task:03d}-e{epoch:03d}.npz"

    @staticmethod
    def holds_run(path: Path) -> bool:
        """Whether ``path`` is a run directory (it has its configuration)."""
        return (Path(path) / "config.json").is_file()

    def checkpoint(self, task: int) -> Path:
        return self.checkpoints / f"task-{task:03d}.pt"

    def last_checkpoint(self) -> tuple[int, Path] | None:
        if not self.checkpoints.is_dir():
            return None
        found = sorted(self.checkpoints.glob("task-*.pt"))
        if not found:
            return None
        return int(found[-1].stem.split("-")[1]), found[-1]

    def is_done(self) -> bool:
        return self.done_marker.exists()

    def is_failed(self) -> bool:
        return self.failed_marker.exists()

    def status(self) -> str:
        if self.is_done():
            return "done"
        if self.is_failed():
            return "failed"
        if self.running_marker.exists():
            return "running"
        return "pending"

    def failure_reason(self) -> str | None:
        if not self.is_failed():
            return None
        try:
            return json.loads(self.failed_marker.read_text()).get("reason")
        except (OSError, ValueError):
            return self.failed_marker.read_text(errors="replace")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())


class Store:
    """The layout of a results store: ``runs/<id>/`` (a :class:`RunDir` each), the sweep
    manifests, the SLURM records and the store's own files. Every path in a store is named here."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    runs_dir = property(lambda self: self.root / "runs")
    meta = property(lambda self: self.root / STORE_META)  # the store's format
    sweeps_dir = property(lambda self: self.root / "sweeps")  # one manifest per sweep
    slurm_dir = property(lambda self: self.root / "slurm")  # submitit's job folders and logs
    submissions = property(lambda self: self.slurm_dir / "submissions.jsonl")  # one line per job array
    migrations_log = property(lambda self: self.root / "migrations.jsonl")
    duplicates_dir = property(lambda self: self.root / "migrated-duplicates")
    lock_file = property(lambda self: self.root / ".store.lock")

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs_dir / run_id)

    def sweep_manifest(self, name: str) -> Path:
        return self.sweeps_dir / f"{name}.json"

    def sweep_manifests(self) -> list[Path]:
        return sorted(self.sweeps_dir.glob("*.json")) if self.sweeps_dir.is_dir() else []


def iter_runs(root: str | Path):
    """The runs under ``root``: a run directory itself, a store, or a folder of run directories."""
    root = Path(root)
    if RunDir.holds_run(root):
        yield RunDir(root)
        return
    base = Store(root).runs_dir if Store(root).runs_dir.is_dir() else root
    if not base.is_dir():
        return
    for p in sorted(base.iterdir()):
        if p.is_dir() and RunDir.holds_run(p):
            yield RunDir(p)


@contextmanager
def run_lock(rd: RunDir, wait_s: float = 30.0) -> Iterator[bool]:
    """Hold ``<run>/LOCK`` exclusively; yields False if another live process keeps it for ``wait_s``."""
    rd.path.mkdir(parents=True, exist_ok=True)
    with file_lock(rd.lock_file, wait_s) as locked:
        yield locked


@contextmanager
def file_lock(path: Path, wait_s: float | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (waiting ``wait_s`` seconds at most; None: as
    long as it takes); yields False if another live process keeps it that long."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one sweep at a time is the user's job
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if wait_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
            except OSError:  # a file system without flock (some NFS): go on unlocked
                break
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
