"""The SLURM executor: job arrays through submitit; submit and return.

Runs are packed ``runs_per_job`` to an array task (one after the other, so short runs make a
job of sensible length) and arrays are split at the cluster's ``MaxArraySize``. Each array
task is a :class:`SlurmBatch`, a submitit ``Checkpointable``: before a time limit or on
preemption SLURM signals the job, submitit calls :meth:`SlurmBatch.checkpoint` and requeues
it, and the requeued job starts the same runs again -- the finished ones are no-ops (DONE) and
the interrupted one resumes from its last task-boundary checkpoint.

Nothing here polls the scheduler for progress: every run writes its markers (RUNNING, DONE,
FAILED) and ``attempts.json`` into the store, and ``neurocl sweep status`` reads those. The
only scheduler query is at submission, to leave out runs whose earlier job is still queued or
running (so submitting the same sweep again completes it without doubling live work).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import submitit

from ..store import Store, atomic_write_text
from .worker import execute_run



class SlurmError(RuntimeError):
    """sbatch/scontrol/squeue failed or are missing."""


class SlurmBatch(submitit.helpers.Checkpointable):
    """One array task: several runs, one after the other."""

    def __init__(self, out: str, runs: list[tuple[str, dict]], retry: set[str] | None = None, threads: int = 1):
        self.out = str(out)
        self.runs = runs
        self.retry = set(retry or ())  # FAILED runs to run again (--retry-failed), until started
        self.threads = threads

    def __call__(self) -> list[dict]:
        import torch

        torch.set_num_threads(self.threads)
        job_id = _job_id()
        log = None
        try:
            log = str(submitit.JobEnvironment().paths.stdout)
        except Exception:  # noqa: BLE001 -- only a convenience for the attempt record
            pass
        results = []
        for rid, config in self.runs:
            # Once started, a retried run is an ordinary one: if it fails again in this job, a
            # requeue must not retry it once more.
            retry = rid in self.retry
            self.retry.discard(rid)
            results.append(
                execute_run(
                    rid, config, self.out, retry_failed=retry, threads=self.threads,
                    executor="slurm", job_id=job_id, slurm_log=log,
                )
            )
        return results

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # Called by submitit (in this process, from the signal handler) before the time limit
        # or on preemption. The requeued job starts every run of the pack again: DONE ones
        # return at once, the interrupted one resumes from its last task checkpoint, and runs
        # to retry that this job had not reached yet are still retried.
        return submitit.helpers.DelayedSubmission(SlurmBatch(self.out, self.runs, self.retry, self.threads))


def _job_id() -> str | None:
    arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{arr}_{task}" if arr and task else os.environ.get("SLURM_JOB_ID")


# ---------------------------------------------------------------------------- scheduler queries
def _slurm(*cmd: str, timeout: float = 60) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: is this a SLURM login node?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(cmd)} timed out after {timeout} s") from None
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize: array indices must stay below it."""
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", _slurm("scontrol", "show", "config"), re.M)
    if not m:
        raise SlurmError("scontrol show config does not list MaxArraySize")
    return int(m.group(1))


def live_jobs() -> set[str]:
    """Ids (``123`` or ``123_4``) of this user's jobs that are queued or running."""
    out = _slurm("squeue", "-h", "-r", "-u", _user(), "-o", "%i|%T")
    live = set()
    for line in out.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and state not in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            live.add(jid)
    return live


def _user() -> str:
    import getpass

    return getpass.getuser()


# ---------------------------------------------------------------------------- submission records
def read_submissions(out: str | Path) -> list[dict]:
    p = Store(out).submissions
    if not p.exists():
        return []
    records = []
    for line in p.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _append_submissions(out: Path, records: list[dict]) -> None:
    p = Store(out).submissions
    old = p.read_text() if p.exists() else ""
    atomic_write_text(p, old + "".join(json.dumps(r) + "\n" for r in records))


def queued_elsewhere(out: str | Path, run_ids: set[str]) -> dict[str, str]:
    """Runs of ``run_ids`` in a job submitted earlier that SLURM still has queued or running."""
    records = [r for r in read_submissions(out) if set(r["runs"]) & run_ids]
    if not records:
        return {}
    live = live_jobs()
    held = {}
    for r in records:
        jid = r["job_id"]
        if jid in live or jid.split("_")[0] in live:
            for rid in r["runs"]:
                held[rid] = jid
    return {rid: jid for rid, jid in held.items() if rid in run_ids}


# ---------------------------------------------------------------------------- submit
def submit(runs: list, out: str | Path, settings, *, name: str, retry_failed: bool = False, extra_params: dict | None = None) -> list[str]:
    """Submit ``runs`` (SweepRun) as job arrays; returns the SLURM job id of every array."""
    from ..sweep import time_minutes

    out = Path(out).resolve()
    if not runs:
        return []
    folder = Store(out).slurm_dir / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.max_requeues)
    extra = dict(settings.params)
    extra.update(extra_params or {})
    if settings.mem:
        extra.setdefault("mem", settings.mem)  # SLURM's syntax ("4G"), not submitit's float GB
    params = dict(
        time=time_minutes(settings.time), cpus_per_task=settings.cpus_per_task, nodes=1, ntasks_per_node=1,
        job_name=settings.job_name or f"neurocl-{name}", signal_delay_s=settings.signal_delay_s,
        additional_parameters=extra, stderr_to_stdout=False,
    )
    if settings.partition:
        params["partition"] = settings.partition
    if settings.setup:
        params["setup"] = list(settings.setup)
    if settings.array_parallelism:
        params["array_parallelism"] = settings.array_parallelism
    executor.update_parameters(**params)

    k = settings.runs_per_job
    packs = [runs[i : i + k] for i in range(0, len(runs), k)]
    size = settings.max_array_size or max_array_size()
    array_ids: list[str] = []
    records = []
    for start in range(0, len(packs), size):
        group = packs[start : start + size]
        with executor.batch():
            jobs = [
                executor.submit(
                    SlurmBatch(
                        str(out), [(r.id, r.config) for r in pack],
                        {r.id for r in pack} if retry_failed else None, settings.cpus_per_task,
                    )
                )
                for pack in group
            ]
        array_ids.append(jobs[0].job_id.split("_")[0])
        now = time.time()
        records += [{"job_id": j.job_id, "runs": [r.id for r in pack], "submitted": now, "sweep": name} for j, pack in zip(jobs, group)]
    _append_submissions(out, records)
    return array_ids
