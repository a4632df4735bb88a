"""Reading a protocol or expanding a sweep never needs the data files; starting a run does.

A researcher prepares a sweep on a laptop and runs it on a cluster where the data lives: every
test here runs with no dataset anywhere (the ``isolated`` fixture), except the one that shows
the run ids are the same where the data is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.config import ConfigError
from neurocl.protocol import dataset_warnings, load_protocol, protocol_run_id

REPO = Path(__file__).resolve().parent.parent
R5 = str(REPO / "protocols" / "r5-naive.yaml")
R5_SIZE = str(REPO / "sweeps" / "reproductions" / "r5-data-size.yaml")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_says_how_to_get(text: str, name: str, home: Path) -> None:
    assert f"dataset {name!r} not found" in text
    assert str(home / ".cache" / "neurocl" / name) in text  # where it looked (and would save)
    assert f"neurocl data fetch {name}" in text
    assert "Traceback" not in text


def test_validate_warns_and_gives_the_run_id_of_a_machine_with_the_data(isolated, t10k_dir, monkeypatch):
    res = invoke("validate", R5)
    assert res.exit_code == 0, res.output
    assert f"{R5}: ok (run id " in res.stdout
    assert_says_how_to_get(res.stderr, "mnist-t10k", isolated / "home")
    assert res.stderr.startswith(f"{R5}: warning: dataset: ")
    absent_id = res.stdout.split("run id ")[1].rstrip(")\n")

    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    res = invoke("validate", R5)
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout == f"{R5}: ok (run id {absent_id})\n"


def test_debian_datasets_say_which_package(isolated):
    res = invoke("validate", R5, "dataset.name=fashion-mnist")
    assert res.exit_code == 0, res.output
    assert_says_how_to_get(res.stderr, "fashion-mnist", isolated / "home")
    assert "apt-get install dataset-fashion-mnist" in res.stderr


def test_checks_that_need_the_data_still_run_without_it(isolated):
    # Classes and image sizes of the datasets neurocl knows come from its registry.
    with pytest.raises(ConfigError) as err:
        load_protocol(R5, ["dataset.name=fashion-mnist", "tasks.0.classes=[0, 2, 12]"])
    assert any("tasks.0.classes: classes [12] do not exist in fashion-mnist" in m for m in err.value.messages)
    with pytest.raises(ConfigError) as err:
        load_protocol(R5, ["dataset.encoding=rows"])
    assert any("model.n_in" in m and "gives 28 (set model.n_in: 28)" in m for m in err.value.messages)


def test_an_unknown_idx_set_that_is_absent_is_a_warning_too(isolated):
    proto = load_protocol(R5, [f"dataset.name={isolated / 'my-idx-set'}"])
    [warning] = dataset_warnings(proto)
    assert f"{isolated / 'my-idx-set'}: no such directory" in warning


def test_run_without_the_data_stops_before_writing_anything(isolated):
    out = isolated / "store"
    res = invoke("run", R5, "dataset.name=fashion-mnist", "--out", str(out))
    assert res.exit_code == 2
    assert res.stderr.startswith(f"{R5}: cannot start the run: dataset 'fashion-mnist' not found")
    assert_says_how_to_get(res.stderr, "fashion-mnist", isolated / "home")
    assert not out.exists()  # no run directory, so no FAILED run to clear later


def test_sweep_expansion_dry_run_and_status_need_no_data(isolated):
    out = isolated / "store"
    res = invoke("sweep", "run", R5_SIZE, "--out", str(out), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "12 runs" in res.stdout and res.stdout.count("  todo   ") == 12
    assert res.stderr.count("warning: dataset 'fashion-mnist' not found") == 1
    assert not (out / "runs").exists()


def test_a_local_sweep_without_its_data_starts_nothing(isolated):
    out = isolated / "store"
    res = invoke("sweep", "run", R5_SIZE, "--out", str(out))
    assert res.exit_code == 2
    assert f"{R5_SIZE}: cannot run this sweep here: dataset 'fashion-mnist' not found" in res.stderr
    assert "Nothing was started" in res.output and "Traceback" not in res.output
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def test_run_ids_hash_the_configuration_not_the_files(isolated, t10k_dir, monkeypatch):
    absent = protocol_run_id(load_protocol(R5))
    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    assert protocol_run_id(load_protocol(R5)) == absent


def test_trains_on_the_real_fashion_mnist(tmp_path):
    """The R5 data-size path for real, on Debian's Fashion-MNIST (installed by .ci/run): the
    full 60,000-image set loads and verifies, and an 8,000-image subset of it trains."""
    import os

    from neurocl.data import DatasetNotFound, find_dataset, load_dataset, verify_dataset
    from neurocl.run import run_protocol

    try:
        find_dataset("fashion-mnist")
    except DatasetNotFound as err:
        if os.environ.get("CI"):
            pytest.fail(f".ci/run installs Debian's dataset-fashion-mnist, yet: {err}")
        pytest.skip("Fashion-MNIST is not here (apt-get install dataset-fashion-mnist)")
    assert [c.status for c in verify_dataset("fashion-mnist")] == ["ok"] * 4
    raw = load_dataset("fashion-mnist")
    assert (len(raw.train_labels), len(raw.test_labels), raw.image_shape) == (60000, 10000, (28, 28))
    assert raw.classes == list(range(10))

    rd = run_protocol(
        R5, tmp_path, ["dataset.name=fashion-mnist", "dataset.max_train=8000", "dataset.max_test=2000",
                       "training.epochs=1", "execution.progress=none"],
    )
    summary = rd.read_json("summary.json")
    R = summary["accuracy_matrix"]
    # Five classes per task (chance 0.2): each task is learnt during its own training.
    assert R[0][0] > 0.6 and R[1][1] > 0.6, R
    assert "fashion-mnist" in rd.read_json("config.json")["dataset"]["name"]
