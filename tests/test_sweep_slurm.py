"""The SLURM executor against a real one-node SLURM (tests/slurm_cluster.py): submit, cancel, requeue.

Progress is read from the store's markers, as ``neurocl sweep status`` does; the scheduler is
only asked (scontrol) to find job ids and to check how arrays were split.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.executors.slurm import max_array_size
from neurocl.executors.status import counts, store_status
from neurocl.store import RunDir
from neurocl.sweep import load_sweep
from sweep_fixtures import TINY_PROTOCOL

pytestmark = [pytest.mark.xdist_group("slurm"), pytest.mark.timeout(360)]

BASE = TINY_PROTOCOL
# A run with a short first task and a long second one. scancel stops a job with SIGTERM, which
# submitit ignores, and SIGKILL after the cluster's KillWait (~5 s here): the second task must
# outlast that on a fast machine for the cancel to interrupt it (3000 epochs: ~45 s unloaded;
# 600 raced the cancel on an idle machine).
SLOW = "tasks.1.epochs: 3000"
# Preemption (USR2) stops the job at once: a shorter second task is enough.
PREEMPTED = "tasks.1.epochs: 1000"


def write_sweep(tmp_path: Path, body: str) -> Path:
    (tmp_path / "tiny.yaml").write_text(BASE)
    p = tmp_path / "sweep.yaml"
    p.write_text("protocol: tiny.yaml\n" + body)
    return p


def neurocl(*args: str, ok: bool = True):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return res


def submit(cluster, sweep: Path, out: Path, *extra: str) -> list[str]:
    res = neurocl("sweep", str(sweep), "--executor", "slurm", "--out", str(out), "--partition", cluster.partition,
                  "--time", "10", *extra)
    line = next((l for l in res.stdout.splitlines() if l.startswith("submitted ")), "")
    return line.split(": ", 1)[1].split() if line else []


def wait_for(pred, timeout: float, what: str, out: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((out / "slurm").rglob("*_log.*")))
    squeue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    ctld = Path(os.environ.get("SLURM_CONF", ".")).with_name("slurmctld.log")
    ctld_tail = "\n".join(ctld.read_text().splitlines()[-15:]) if ctld.is_file() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{squeue}\n{logs}\nslurmctld.log:\n{ctld_tail}")


def status(out: Path) -> dict[str, int]:
    return counts(store_status(out))


def records(out: Path, rid: str) -> list[dict]:
    p = out / "runs" / rid / "attempts.json"
    return [a for a in json.loads(p.read_text()) if "attempt" in a] if p.exists() else []


def finished(out: Path, rid: str) -> bool:
    """DONE, and the job has also closed its attempt record (it does so just after DONE)."""
    recs = records(out, rid)
    return RunDir(out / "runs" / rid).is_done() and bool(recs) and "outcome" in recs[-1]


def scontrol(job: str) -> list[dict]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True).stdout
    return [dict(t.split("=", 1) for t in line.split() if "=" in t) for line in out.splitlines() if line.startswith("JobId=")]


def array_tasks(spec: str) -> list[int]:
    """ "3" -> [3]; "0-1" or "0-1%2" (a pending remainder) -> [0, 1]."""
    out = []
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def test_sweep_runs_on_slurm_packed_into_an_array(slurm_cluster, tmp_path):
    sweep = write_sweep(tmp_path, "seeds: 3\n")
    ids = {r.id for r in load_sweep(sweep).runs}
    out = tmp_path / "store"
    arrays = submit(slurm_cluster, sweep, out, "--runs-per-job", "2")
    # the command submits and returns: nothing has had time to finish yet
    assert len(arrays) == 1 and status(out)["done"] < 3
    subs = [json.loads(l) for l in (out / "slurm" / "submissions.jsonl").read_text().splitlines()]
    assert [s["job_id"] for s in subs] == [f"{arrays[0]}_0", f"{arrays[0]}_1"]
    assert sorted(len(s["runs"]) for s in subs) == [1, 2] and {r for s in subs for r in s["runs"]} == ids

    wait_for(lambda: all(finished(out, rid) for rid in ids), 240, "3 runs DONE", out)
    assert status(out) == {"done": 3, "running": 0, "failed": 0, "pending": 0}
    for s in subs:
        for rid in s["runs"]:
            (rec,) = records(out, rid)
            assert rec["outcome"] == "done" and rec["executor"] == "slurm" and rec["job_id"] == s["job_id"]
            assert Path(rec["slurm_log"]).is_file()  # submitit's log, under <out>/slurm/
            assert Path(rec["slurm_log"]).is_relative_to(out / "slurm")
            assert "resumed from" not in (out / "runs" / rid / "run.log").read_text()
    sbatch = next((out / "slurm").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --time=10" in sbatch and "#SBATCH --signal=USR2@90" in sbatch and "--array=0-1" in sbatch

    # submitting again does nothing: every run is done
    res = neurocl("sweep", str(sweep), "--executor", "slurm", "--out", str(out))
    assert "done 3, failed 0, to run 0" in res.stdout and "submitted" not in res.stdout
    assert len((out / "slurm" / "submissions.jsonl").read_text().splitlines()) == 2


def test_cancelled_job_is_completed_by_submitting_again(slurm_cluster, tmp_path):
    sweep = write_sweep(tmp_path, f"list: [{{{SLOW}}}, {{}}]\n")
    slow, fast = [r.id for r in load_sweep(sweep).runs]
    out = tmp_path / "store"
    submit(slurm_cluster, sweep, out)
    ck = out / "runs" / slow / "checkpoints" / "task-000.pt"
    wait_for(ck.exists, 240, "the slow run's first checkpoint", out)
    job = records(out, slow)[-1]["job_id"]
    slurm_cluster.run("scancel", job)
    wait_for(lambda: scontrol(job) and scontrol(job)[0]["JobState"] == "CANCELLED", 60, f"job {job} cancelled", out)
    wait_for(lambda: finished(out, fast), 240, "the other run", out)
    assert not RunDir(out / "runs" / slow).is_done()
    fast_attempts = (out / "runs" / fast / "attempts.json").read_bytes()
    # from the markers alone: once its process is gone (SIGKILL follows scancel after
    # KillWait), the killed run shows as pending and will resume
    state = lambda: next(s for s in store_status(out) if s.id == slow)  # noqa: E731
    wait_for(lambda: state().status == "pending", 30, "the cancelled run's process to end", out)
    assert "resumes after task 0" in state().note and not RunDir(out / "runs" / slow).is_done()

    res = neurocl("sweep", str(sweep), "--executor", "slurm", "--out", str(out), "--partition", slurm_cluster.partition)
    assert "done 1, failed 0, to run 1" in res.stdout and "submitted 1 runs" in res.stdout
    wait_for(lambda: finished(out, slow), 240, "the resumed run", out)
    assert (out / "runs" / fast / "attempts.json").read_bytes() == fast_attempts  # not run again
    recs = records(out, slow)
    assert [r.get("outcome") for r in recs] == [None, "done"] and recs[0]["job_id"] == job != recs[1]["job_id"]
    starts = [a["resumed_after_task"] for a in RunDir(out / "runs" / slow).read_json("meta.json")["attempts"]]
    assert starts == [-1, 0]


def test_preempted_job_is_requeued_and_resumes(slurm_cluster, tmp_path):
    sweep = write_sweep(tmp_path, f"set: {{{PREEMPTED}}}\n")
    (rid,) = [r.id for r in load_sweep(sweep).runs]
    out = tmp_path / "store"
    (job,) = submit(slurm_cluster, sweep, out)
    wait_for((out / "runs" / rid / "checkpoints" / "task-000.pt").exists, 240, "the first checkpoint", out)
    # what SLURM sends before a time limit (--signal=USR2@90) or on preemption
    slurm_cluster.run("scancel", "--signal=USR2", job)
    requeued = lambda: (scontrol(job) or [{}])[0]  # noqa: E731
    wait_for(lambda: requeued().get("Restarts", "0") != "0" and requeued().get("JobState") == "PENDING", 60, "the requeue", out)
    # SLURM holds a requeued job back for its credential lifetime (120 s); let it go sooner, but
    # not within the second of the requeue: slurmd revokes the job's credentials issued up to
    # that second, and a restart inside it is killed ("Job credential revoked") for good.
    # (StartTime=now+N would wait for the scheduler's periodic pass, ~20 s more.)
    time.sleep(2)
    slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    wait_for(lambda: finished(out, rid), 240, "the requeued run", out)
    recs = records(out, rid)
    assert [r.get("outcome") for r in recs] == [None, "done"] and {r["job_id"] for r in recs} == {job}
    starts = [a["resumed_after_task"] for a in RunDir(out / "runs" / rid).read_json("meta.json")["attempts"]]
    assert starts == [-1, 0]  # resumed from its checkpoint, not started over
    log = next((out / "slurm").rglob(f"{job}_0_log.out")).read_text()
    assert "Calling checkpoint method" in log and f"Requeued job {job}" in log


def test_arrays_split_at_max_array_size(slurm_cluster, tmp_path):
    assert max_array_size() == slurm_cluster.max_array_size  # read from scontrol show config
    sweep = write_sweep(tmp_path, "seeds: 3\n")
    out = tmp_path / "store"
    arrays = submit(slurm_cluster, sweep, out, "--max-array-size", "2")
    assert len(arrays) == 2
    first, second = (scontrol(a) for a in arrays)
    assert sorted(t for r in first for t in array_tasks(r["ArrayTaskId"])) == [0, 1]
    assert len(second) == 1 and "ArrayTaskId" not in second[0]  # the remaining run: a job of its own
    wait_for(lambda: status(out)["done"] == 3, 240, "3 runs DONE", out)
    wait_for(lambda: all(finished(out, r.id) for r in load_sweep(sweep).runs), 30, "attempt records", out)
