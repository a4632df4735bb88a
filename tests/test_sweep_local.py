"""The local executor with real processes and real signals.

Every sweep runs through the ``neurocl`` command with its real spawned worker processes; the
sweeps that get killed run as a separate process, killed with real signals: SIGKILL of the
sweep process at several points, SIGKILL of a worker, SIGTERM and Ctrl-C (SIGINT to the
process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.executors.attempts import run_lock
from neurocl.results import load
from neurocl.store import RunDir, iter_runs
from neurocl.sweep import load_sweep
from sweep_fixtures import TINY_PROTOCOL

pytestmark = pytest.mark.timeout(300)

BASE = TINY_PROTOCOL
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_sweep(tmp_path: Path, body: str) -> Path:
    (tmp_path / "tiny.yaml").write_text(BASE)
    p = tmp_path / "sweep.yaml"
    p.write_text("protocol: tiny.yaml\n" + body)
    return p


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, ok: bool = True) -> Result:
    """The ``neurocl`` command, in this process (its workers are still real spawned processes).

    Sweeps that a test kills run in a subprocess instead (:func:`start`); in-process runs save
    one interpreter start-up (torch, pandas, scipy: seconds) per command.
    """
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    r = Result(res.exit_code, res.stdout, res.stderr)
    if ok:
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def start(*args: str) -> subprocess.Popen:
    # Its own session, so that a Ctrl-C to its process group reaches nothing else.
    return subprocess.Popen(
        [sys.executable, "-m", "neurocl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV, start_new_session=True,
    )


def wait_until(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"sweep exited ({proc.returncode}) before {what}\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def done_ids(out: Path) -> set[str]:
    return {rd.id for rd in iter_runs(out) if rd.is_done()}


def running_pids(out: Path) -> dict[str, int]:
    pids = {}
    for rd in iter_runs(out):
        try:
            pids[rd.id] = json.loads(rd.running_marker.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pass
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def attempts(out: Path, rid: str) -> list[dict]:
    p = out / "runs" / rid / "attempts.json"
    return json.loads(p.read_text()) if p.exists() else []


def outcomes(out: Path, rid: str) -> list:
    return [a.get("outcome") for a in attempts(out, rid) if "attempt" in a]


def workers_of(pid: int) -> set[int]:
    """The sweep's worker processes (spawned by multiprocessing), found through /proc."""
    kids = set()
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if parent_of(int(proc_dir.name)) == pid and b"spawn_main" in (proc_dir / "cmdline").read_bytes():
                kids.add(int(proc_dir.name))
        except (OSError, AssertionError):
            pass  # it ended while we looked
    return kids


def kill_sweep(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL the sweep process only; its workers (running a run, or waiting for one's lock)
    must then go away by themselves."""
    workers = set(running_pids(out).values()) | workers_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_until(lambda: not any(alive(p) for p in workers), 10, f"orphaned workers {workers} to exit")


# ---------------------------------------------------------------------------- tests
def test_sweep_finishes_rerun_does_nothing_and_results_table(tmp_path):
    sweep = write_sweep(tmp_path, "grid: {training.optimizer.lr: [0.01, 0.02]}\nseeds: 2\n")
    out = tmp_path / "store"
    first = cli("sweep", str(sweep), "--out", str(out), "--workers", "2")
    ids = {r.id for r in load_sweep(sweep).runs}
    assert len(ids) == 4 and done_ids(out) == ids
    assert "finished 4 runs, 0 were already done, 0 failed" in first.stdout
    for rid in ids:
        assert outcomes(out, rid) == ["done"]
        assert json.loads((out / "runs" / rid / "summary.json").read_text())["n_tasks"] == 2
    before = {rid: (out / "runs" / rid / "attempts.json").read_bytes() for rid in ids}
    done_mtime = {rid: (out / "runs" / rid / "DONE").stat().st_mtime_ns for rid in ids}

    again = cli("sweep", "run", str(sweep), "--out", str(out))
    assert "done 4, failed 0, to run 0" in again.stdout
    assert {rid: (out / "runs" / rid / "attempts.json").read_bytes() for rid in ids} == before
    assert {rid: (out / "runs" / rid / "DONE").stat().st_mtime_ns for rid in ids} == done_mtime

    status = cli("sweep", "status", str(out))
    assert status.stdout.splitlines()[0] == f"{out}: done 4  running 0  failed 0  pending 0  (total 4)"

    # results: the same tidy table as neurocl.results.load, in both formats
    expected = load(out)
    assert set(expected.run_id) == ids and "config.training.optimizer.lr" in expected
    cli("results", str(out), "--format", "parquet", "--out", str(tmp_path / "r.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), expected)
    cli("results", str(out), "--out", str(tmp_path / "r.csv"))
    csv = pd.read_csv(tmp_path / "r.csv")
    assert csv.shape == expected.shape and list(csv.columns) == list(expected.columns)
    assert (csv["value"].to_numpy() == expected["value"].to_numpy()).all()


def hold_runs(out: Path, rids) -> ExitStack:
    """Hold the runs' locks, as another process running them would: the sweep's workers wait
    for them (lock_wait_s) and cannot finish them until the returned stack is closed."""
    stack = ExitStack()
    for rid in rids:
        assert stack.enter_context(run_lock(RunDir(out / "runs" / rid), wait_s=0))
    return stack


def test_sigkill_of_the_sweep_at_several_points_loses_nothing(tmp_path):
    # The runs the test holds cannot finish, so the kill lands at the point the test chose
    # whatever the machine's speed (no race between the sweep finishing and the kill).
    sweep = write_sweep(tmp_path, "set: {training.epochs: 10}\nseeds: 5\nlocal: {lock_wait_s: 600}\n")
    order = [r.id for r in load_sweep(sweep).runs]  # the order the sweep hands runs out
    ids = set(order)
    base, out = tmp_path / "uninterrupted", tmp_path / "killed"
    cli("sweep", str(sweep), "--out", str(base), "--workers", "2")
    assert done_ids(base) == ids

    for n_done in (1, 3):  # kill right after the first, then after the third DONE appears
        with hold_runs(out, order[n_done:]):
            proc = start("sweep", str(sweep), "--out", str(out), "--workers", "2")
            wait_until(lambda: len(done_ids(out)) >= n_done, 180, f"{n_done} runs DONE", proc)
            kill_sweep(proc, out)
        assert done_ids(out) == set(order[:n_done])
    cli("sweep", str(sweep), "--out", str(out), "--workers", "2")

    assert done_ids(out) == done_ids(base) == ids
    for rid in ids:
        # Finished once: no execution of the run began after its DONE was written (the runner
        # logs every start in meta.json), at most one attempt saw it through (a worker killed
        # between writing DONE and closing its record leaves that record open), and no restart
        # went back before a checkpoint an earlier one had written.
        rd = RunDir(out / "runs" / rid)
        finished_at = rd.read_json("DONE")["finished"]
        starts = rd.read_json("meta.json")["attempts"]
        assert all(a["started"] < finished_at for a in starts)
        assert outcomes(out, rid).count("done") <= 1
        resumed = [a["resumed_after_task"] for a in starts]
        assert resumed == sorted(resumed), resumed
        killed = RunDir(out / "runs" / rid).read_json("summary.json")
        clean = RunDir(base / "runs" / rid).read_json("summary.json")
        assert killed["accuracy_matrix"] == clean["accuracy_matrix"]  # resumed bit-identically
    assert len(load(out)) == len(load(base))


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_sigterm_and_ctrl_c_stop_cleanly_and_resume(tmp_path, how):
    sweep = write_sweep(tmp_path, "list: [{tasks.1.epochs: 30}, {}]\n")
    slow, fast = [r.id for r in load_sweep(sweep).runs]
    out = tmp_path / "store"
    proc = start("sweep", str(sweep), "--out", str(out), "--workers", "2")
    ck = out / "runs" / slow / "checkpoints" / "task-000.pt"
    wait_until(ck.exists, 180, "a checkpoint of the slow run", proc)  # it is now training task 1
    worker = running_pids(out)[slow]
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + (signal.SIGTERM if how == "sigterm" else signal.SIGINT), err
    assert "finished runs are kept" in err
    assert not alive(worker)
    assert slow not in done_ids(out) and outcomes(out, slow) == ["interrupted"]
    kept = done_ids(out)  # the fast run, if it finished before the signal
    status = cli("sweep", "status", str(out), "-v").stdout
    assert f"done {len(kept)}  running 0  failed 0  pending {2 - len(kept)}" in status
    assert "resumes after task 0" in status

    cli("sweep", str(sweep), "--out", str(out))
    assert done_ids(out) == {slow, fast}
    assert outcomes(out, slow) == ["interrupted", "done"]
    assert outcomes(out, fast) == (["done"] if fast in kept else [o for o in outcomes(out, fast) if o != "done"] + ["done"])
    starts = [a["resumed_after_task"] for a in RunDir(out / "runs" / slow).read_json("meta.json")["attempts"]]
    assert starts == [-1, 0]  # resumed from its checkpoint, not started over


def test_killed_worker_is_retried_and_its_run_finishes(tmp_path):
    sweep = write_sweep(tmp_path, "list: [{tasks.1.epochs: 30}, {}]\n")
    slow, fast = [r.id for r in load_sweep(sweep).runs]
    out = tmp_path / "store"
    proc = start("sweep", str(sweep), "--out", str(out), "--workers", "1")
    ck = out / "runs" / slow / "checkpoints" / "task-000.pt"
    wait_until(lambda: ck.exists(), 180, "a checkpoint of the slow run", proc)
    worker = running_pids(out)[slow]
    assert worker != proc.pid and parent_of(worker) == proc.pid  # a worker, not the sweep
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert "killed by SIGKILL (out of memory?); retrying (attempt 2 of 3)" in stderr
    assert done_ids(out) == {slow, fast}
    recs = [a for a in attempts(out, slow) if "attempt" in a]
    assert [a["outcome"] for a in recs] == ["died", "done"] and recs[0]["pid"] == worker
    assert recs[1]["pid"] != worker  # a new worker took it over
    starts = [a["resumed_after_task"] for a in RunDir(out / "runs" / slow).read_json("meta.json")["attempts"]]
    assert starts == [-1, 0]  # resumed from the checkpoint, not started over


def test_worker_dying_too_often_fails_the_run_and_retry_failed_runs_it(tmp_path):
    sweep = write_sweep(tmp_path, "list: [{tasks.1.epochs: 30}, {}]\n")
    slow, fast = [r.id for r in load_sweep(sweep).runs]
    out = tmp_path / "store"
    proc = start("sweep", str(sweep), "--out", str(out), "--workers", "1", "--max-attempts", "1")
    wait_until(lambda: running_pids(out).get(slow), 180, "the slow run to start", proc)
    os.kill(running_pids(out)[slow], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1
    reason = "worker process killed by SIGKILL (out of memory?); gave up after 1 attempts"
    assert RunDir(out / "runs" / slow).failure_reason() == reason
    assert done_ids(out) == {fast}  # the sweep went on
    status = cli("sweep", "status", str(out)).stdout
    assert "done 1  running 0  failed 1  pending 0" in status and f"FAILED  {slow}" in status and reason in status

    cli("sweep", str(sweep), "--out", str(out), "--retry-failed", "--max-attempts", "1")
    assert done_ids(out) == {slow, fast}
    assert outcomes(out, slow) == ["died", "done"]


def test_diverging_run_fails_with_its_reason_and_the_others_finish(tmp_path):
    sweep = write_sweep(tmp_path, "list:\n  - {}\n  - {training.optimizer.lr: 1.0e+6, training.max_loss: 1000}\nseeds: 2\n")
    runs = load_sweep(sweep).runs
    bad = {r.id for r in runs if r.config["training"]["optimizer"]["lr"] == 1e6}
    good = {r.id for r in runs} - bad
    out = tmp_path / "store"
    first = cli("sweep", str(sweep), "--out", str(out), "--workers", "2", ok=False)
    assert first.returncode == 1
    assert done_ids(out) == good
    for rid in bad:
        assert RunDir(out / "runs" / rid).failure_reason().startswith("loss diverged (")
        assert outcomes(out, rid) == ["failed"]
    status = cli("sweep", "status", str(out)).stdout
    assert "done 2  running 0  failed 2  pending 0" in status
    assert sum("loss diverged" in line and "FAILED" in line for line in status.splitlines()) == 2

    # without --retry-failed a failed run is left alone; with it, it is tried again
    again = cli("sweep", str(sweep), "--out", str(out), ok=False)
    assert again.returncode == 1 and "to run 0" in again.stdout
    assert all(outcomes(out, rid) == ["failed"] for rid in bad)
    retry = cli("sweep", str(sweep), "--out", str(out), "--retry-failed", ok=False)
    assert "(retrying 2 failed)" in retry.stdout and retry.returncode == 1
    assert all(outcomes(out, rid) == ["failed", "failed"] for rid in bad)
    assert all(outcomes(out, rid) == ["done"] for rid in good)
