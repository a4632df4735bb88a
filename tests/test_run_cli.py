"""`neurocl run` at its edges: a run held by another process, Ctrl-C, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import neurocl.run
from neurocl.cli import main
from neurocl.protocol import load_protocol, protocol_run_id
from neurocl.store import Store, run_lock
from sweep_fixtures import TINY_PROTOCOL


def tiny(tmp_path: Path) -> tuple[Path, str]:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    return p, protocol_run_id(load_protocol(p))


def test_a_run_held_by_another_process_is_not_trained_twice(tmp_path):
    p, rid = tiny(tmp_path)
    out = tmp_path / "store"
    rd = Store(out).run(rid)
    rd.path.mkdir(parents=True)
    rd.running_marker.write_text(json.dumps({"pid": 4242, "host": "node7", "started": 0}))
    with run_lock(rd, wait_s=0):  # as the other process does while it trains
        res = CliRunner().invoke(main, ["run", str(p), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert f"run {rid} is being run by another process (pid 4242 on node7)" in res.stderr
    assert not rd.config.exists() and not rd.is_done()  # nothing of ours was written
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(out)])  # the lock is free again
    assert res.exit_code == 0 and rd.is_done(), res.output


def test_ctrl_c_says_where_and_the_rerun_says_it_resumes(tmp_path, monkeypatch):
    p, rid = tiny(tmp_path)
    out, clean = tmp_path / "store", tmp_path / "clean"
    original = neurocl.run.Runner.save_checkpoint

    def save_then_ctrl_c(self, task, global_epoch):
        original(self, task, global_epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(neurocl.run.Runner, "save_checkpoint", save_then_ctrl_c)
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(out)])
    assert res.exit_code == 130
    assert f"interrupted after task 0; rerun the same command to resume (run {rid})" in res.stderr
    rd = Store(out).run(rid)
    assert not rd.is_done() and not rd.is_failed()
    monkeypatch.setattr(neurocl.run.Runner, "save_checkpoint", original)
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"run {rid}: resuming after task 0 ({rd.checkpoint(0)})" in res.stderr
    CliRunner().invoke(main, ["run", str(p), "--out", str(clean)])
    assert rd.read_json("summary.json")["accuracy_matrix"] == \
        Store(clean).run(rid).read_json("summary.json")["accuracy_matrix"]


def test_show_names_the_tasks_as_the_protocol_does(tmp_path):
    p = tmp_path / "named.yaml"
    p.write_text(TINY_PROTOCOL.replace("  - classes: [0, 1]", "  - {classes: [0, 1], name: zeros-and-ones}"))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(out)])
    assert res.exit_code == 0, res.output
    run_dir = next((out / "runs").iterdir())
    assert json.loads((run_dir / "summary.json").read_text())["task_names"] == ["zeros-and-ones", "2-3"]
    shown = CliRunner().invoke(main, ["show", str(run_dir)]).output.splitlines()
    header = shown[2].split()
    assert header == ["zeros-and-ones", "2-3"], shown
    assert shown[3].startswith("zeros-and-ones") and shown[4].startswith("2-3")
