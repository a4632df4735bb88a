"""The one-node SLURM test cluster is real and usable (sbatch, job arrays via submitit, scancel).

Needs SLURM installed (.ci/install-slurm.sh) and root; skipped otherwise, failed if CI is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# pytest's default (prepend) import mode puts tests/ on sys.path; make sure of it anyway
# (e.g. --import-mode=importlib), so that the helper module has one name: "slurm_cluster"
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["conftest_slurm"]

from slurm_cluster import (  # noqa: E402
    SlurmCluster,
    _munge_works,
    _pid_alive,
    scontrol_jobs,
    sleep_then,
    start_cluster,
    task_report,
    wait_for_job,
)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def _sbatch(cluster: SlurmCluster, *args: str) -> str:
    out = cluster.run("sbatch", "--parsable", *args)
    return out.stdout.strip().split(";")[0]


def _wait_running(cluster: SlurmCluster, job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        recs = scontrol_jobs(job_id, env=cluster.env)
        state = recs[0].get("JobState", "") if recs else ""
        if state == "RUNNING":
            return
        assert state in ("", "PENDING", "CONFIGURING"), f"job {job_id} went {state}"
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not running after {timeout} s (state {state!r})")


def _wait_jobs(jobs, timeout: float) -> None:
    """Bounded wait for submitit jobs (job.result() alone would wait forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(j.done() for j in jobs):
            return
        time.sleep(0.5)
    for j in jobs:
        j.cancel(check=False)
    squeue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    logs = "\n".join(f"{j.job_id}: {j.stderr()}" for j in jobs)
    pytest.fail(f"submitit jobs not done after {timeout} s\n{squeue}\n{logs}")


def test_cluster_is_up_and_configured(slurm_cluster: SlurmCluster):
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf_path)
    assert slurm_cluster.is_running()
    assert slurm_cluster.node_state() == "idle"
    sinfo = slurm_cluster.run("sinfo", "-h", "-o", "%P %a %D %c").stdout.split()
    assert sinfo == [f"{slurm_cluster.partition}*", "up", "1", str(slurm_cluster.cpus)]
    config = slurm_cluster.run("scontrol", "show", "config").stdout
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    assert m and int(m.group(1)) == slurm_cluster.max_array_size
    assert re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none", config, re.M)
    assert slurm_cluster.run("scontrol", "ping").stdout.count("UP") >= 1
    assert slurm_cluster.run("squeue", "-h").returncode == 0


def test_sbatch_wrap_writes_file(slurm_cluster: SlurmCluster, tmp_path: Path):
    out = tmp_path / "hello.txt"
    job = _sbatch(
        slurm_cluster, "--chdir", str(tmp_path), "--output", str(tmp_path / "slurm-%j.out"),
        "--time=1", "--wrap", f'echo "hello from $SLURM_JOB_ID on $(hostname -s)" > {out}',
    )
    assert wait_for_job(job, env=slurm_cluster.env, timeout=30) == "COMPLETED"
    assert out.read_text().strip() == f"hello from {job} on {slurm_cluster.node}"
    rec = scontrol_jobs(job, env=slurm_cluster.env)[0]
    assert rec["ExitCode"] == "0:0"
    # the sacct stand-in answers like sacct would
    sacct = slurm_cluster.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job).stdout
    assert sacct.splitlines() == ["JobID|State|NodeList", f"{job}|COMPLETED|{slurm_cluster.node}"]


def test_submitit_job_array(slurm_cluster: SlurmCluster, tmp_path: Path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j")
    assert executor.cluster == "slurm"
    executor.update_parameters(
        timeout_min=5,
        slurm_partition=slurm_cluster.partition,
        slurm_array_parallelism=2,
        cpus_per_task=1,
        tasks_per_node=1,
        nodes=1,
        name="neurocl-test-array",
    )
    xs = [1, 2, 3, 4]
    t0 = time.monotonic()
    jobs = executor.map_array(task_report, xs)
    assert len(jobs) == 4
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]
    sbatch_script = next((tmp_path / "submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in sbatch_script
    assert "#SBATCH --time=5" in sbatch_script
    assert "#SBATCH --cpus-per-task=1" in sbatch_script

    _wait_jobs(jobs, timeout=60)
    results = [j.result() for j in jobs]
    elapsed = time.monotonic() - t0
    assert [r["x"] for r in results] == xs
    assert [r["square"] for r in results] == [x * x for x in xs]
    assert {r["array_job_id"] for r in results} == {array_id}
    assert sorted(r["array_task_id"] for r in results) == ["0", "1", "2", "3"]
    assert {r["cpus"] for r in results} == {"1"}
    assert {r["python"] for r in results} == {sys.executable}
    # with the sacct stand-in submitit reads the real final state (job.state is cached
    # and refreshed every few s: force a refresh)
    assert [j.get_info(mode="force").get("State") for j in jobs] == ["COMPLETED"] * 4
    # at most two tasks at a time (2 CPUs, parallelism 2), but more than one at once
    starts = sorted(r["start"] for r in results)
    assert starts[1] - starts[0] < 5, f"first two tasks did not run together: {starts}"
    print(f"4-task submitit array done in {elapsed:.1f} s")


def test_scancel_running_job_while_other_completes(slurm_cluster: SlurmCluster, tmp_path: Path):
    done_file = tmp_path / "other.txt"
    common = ["--chdir", str(tmp_path), "--output", str(tmp_path / "slurm-%j.out"),
              "--time=2", "--cpus-per-task=1"]
    victim = _sbatch(slurm_cluster, *common, "--wrap", "sleep 300")
    other = _sbatch(slurm_cluster, *common, "--wrap", f"sleep 3; echo finished > {done_file}")
    _wait_running(slurm_cluster, victim)
    slurm_cluster.run("scancel", victim)
    assert wait_for_job(victim, env=slurm_cluster.env, timeout=20) == "CANCELLED"
    show = slurm_cluster.run("scontrol", "show", "job", victim).stdout
    assert "JobState=CANCELLED" in show
    running = slurm_cluster.run("squeue", "-h", "-t", "RUNNING,PENDING", "-o", "%i").stdout.split()
    assert victim not in running
    assert wait_for_job(other, env=slurm_cluster.env, timeout=30) == "COMPLETED"
    assert done_file.read_text().strip() == "finished"
    sacct = slurm_cluster.run("sacct", "-P", "-o", "JobID,State", "-j", victim).stdout
    assert f"{victim}|CANCELLED by 0" in sacct.splitlines()


def test_submitit_sees_cancelled_job(slurm_cluster: SlurmCluster, tmp_path: Path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=2, slurm_partition=slurm_cluster.partition, cpus_per_task=1)
    job = executor.submit(sleep_then, 7, 300)
    _wait_running(slurm_cluster, job.job_id)
    job.cancel()
    # without the sacct stand-in this would never become done (no result pickle)
    _wait_jobs([job], timeout=30)
    assert job.state.startswith("CANCELLED")
    # result() of a job without a result pickle first waits _results_timeout_s (15 s) for
    # a slow filesystem to show it; submitit's own tests set it to 0 as well
    job._results_timeout_s = 0
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()


def test_submitit_without_sacct_reports_unknown(slurm_cluster: SlurmCluster, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """Documents submitit's behaviour with the real sacct (no accounting storage)."""
    submitit = pytest.importorskip("submitit")
    real_sacct = shutil.which("sacct", path=os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p != str(slurm_cluster.sacct_shim.parent)
    )) if slurm_cluster.sacct_shim else shutil.which("sacct")
    assert real_sacct
    bare = subprocess.run([real_sacct, "-j", "1"], capture_output=True, text=True, env=slurm_cluster.env)
    assert bare.returncode != 0 and "accounting storage is disabled" in bare.stderr + bare.stdout

    job = _sbatch(slurm_cluster, "--chdir", str(tmp_path), "--output", "/dev/null", "--wrap", "true")
    wait_for_job(job, env=slurm_cluster.env, timeout=30)
    monkeypatch.setenv("PATH", os.path.dirname(real_sacct) + os.pathsep + os.environ["PATH"])
    watcher = submitit.slurm.slurm.SlurmInfoWatcher(delay_s=0)
    watcher.register_job(job)
    assert watcher.get_state(job, mode="force") == "UNKNOWN"  # "Bypassing sacct error" logged
    assert not watcher.is_done(job, mode="cache")


def test_restart_over_leftovers(slurm_cluster: SlurmCluster):
    """A second cluster coexists with the session one; restarting on a live workdir is clean."""
    workdir = Path(tempfile.mkdtemp(prefix="slurm-re-"))
    try:
        # a stale pid file pointing at an unrelated live process must not be killed
        (workdir / "slurmctld.pid").write_text(f"{os.getpid()}\n")
        first = start_cluster(workdir, timeout=30)
        old = first.daemon_pids()
        assert all(old.values()) and first.ports != slurm_cluster.ports
        assert first.munged_pid is None  # the session cluster's munged is reused
        second = start_cluster(workdir, timeout=30)  # over the running first one
        new = second.daemon_pids()
        assert all(new.values()) and set(new.values()).isdisjoint(old.values())
        assert not any(_pid_alive(p) for p in old.values())  # the first one was stopped
        assert first.superseded()
        first.stop()  # a stale handle must not kill the new daemons
        assert second.is_running()
        job = _sbatch(second, "--output", "/dev/null", "--wrap", "true")
        assert wait_for_job(job, env=second.env, timeout=30) == "COMPLETED"
        second.stop()
        assert not second.is_running()
        assert _munge_works()  # still needed by the session cluster: not killed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # the session cluster is untouched
    assert slurm_cluster.is_running() and slurm_cluster.node_state() == "idle"
