"""A read-only or full disk is a clear error, never a traceback, and loses nothing.

Real file systems: a tmpfs mounted read-only, and one of 256 kB that a run fills up (the tests
are skipped where this process may not mount, e.g. without root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.protocol import load_protocol, protocol_run_id
from neurocl.store import Store
from sweep_fixtures import TINY_PROTOCOL


@pytest.fixture
def mount(tmp_path):
    mounted = []

    def make(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def protocol(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    return p


def test_a_run_into_a_read_only_store(tmp_path, mount):
    store = mount("ro", "ro,size=1m")
    res = CliRunner().invoke(main, ["run", str(protocol(tmp_path)), "--out", str(store)])
    assert res.exit_code == 2, res.output
    assert "error: cannot write" in res.stderr and "Read-only file system" in res.stderr
    assert "Traceback" not in res.output


def test_a_full_disk_stops_the_run_without_failing_it_and_it_resumes(tmp_path, mount):
    p = protocol(tmp_path)
    # Enough for the configuration and the markers, not for a checkpoint (about 1 MB here).
    store = mount("full", "size=64k")
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(store)])
    assert res.exit_code == 2, res.output
    assert "error: cannot write" in res.stderr and "No space left on device" in res.stderr
    rd = Store(store).run(protocol_run_id(load_protocol(p)))
    assert not rd.is_failed() and not rd.is_done()  # the disk's fault, not the run's
    assert not [f for f in rd.path.rglob("*") if f.name.endswith(".tmp")]  # no half-written file left
    subprocess.run(["mount", "-o", "remount,size=16m", str(store)], check=True)  # space again
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(store)])
    assert res.exit_code == 0 and rd.is_done(), res.output


def test_results_into_a_read_only_store(tmp_path, mount):
    p = protocol(tmp_path)
    store = tmp_path / "store"
    assert CliRunner().invoke(main, ["run", str(p), "--out", str(store)]).exit_code == 0
    target = mount("ro-results", "ro,size=1m")
    res = CliRunner().invoke(main, ["results", str(store), "--out", str(target / "r.csv")])
    assert res.exit_code == 2 and "Read-only file system" in res.stderr, res.output


def test_a_sweep_into_a_read_only_store(tmp_path, mount):
    (tmp_path / "tiny.yaml").write_text(TINY_PROTOCOL)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("protocol: tiny.yaml\nseeds: 2\n")
    store = mount("ro-sweep", "ro,size=1m")
    res = CliRunner().invoke(main, ["sweep", "run", str(sweep), "--out", str(store), "--workers", "1"])
    assert res.exit_code == 2 and "Read-only file system" in res.stderr, res.output
    assert "Traceback" not in res.output
