"""Values that used to validate and then crash the run, or were accepted though wrong, are
errors from `validate` naming the key (issue 20), and a device this machine lacks stops a run
before it writes anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.config import ConfigError
from neurocl.protocol import load_protocol

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "protocols" / "split-digits.yaml"


@pytest.mark.parametrize("override, expected", [
    ("training.grad_clip=true", "training.grad_clip: Input should be a valid number"),
    ("training.epochs=true", "training.epochs: Input should be a valid integer"),
    ("training.optimizer.lr=.inf", "training.optimizer.lr: Input should be a finite number"),
    ("training.optimizer.lr=1e400", "training.optimizer.lr: Input should be a finite number"),
    ("training.optimizer.lr=.nan", "training.optimizer.lr: Input should be a finite number"),
    ("training.optimizer.betas=[1.5, 0.9]", "training.optimizer.betas.0: Input should be less than 1"),
    ("seed=99999999999999999999999", "seed: Input should be less than 9223372036854775808"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("tasks.0.classes=[]", "tasks.0.classes: List should have at least 1 item"),
    ("tasks.0.classes=[-1, 2]", "tasks.0.classes.0: Input should be greater than or equal to 0"),
    ("model.p_connect=1.5", "model.p_connect: Input should be less than or equal to 1"),
    ("model.dt=100", "dt 100.0 is larger than tau 2.0: the Euler step (a = dt/tau = 50) would overshoot"),
    ("execution.device=tpu9", "execution.device: 'tpu9' is not a device (cpu, cuda, cuda:N or mps)"),
    ("recording.activity.tasks=[0, 9]", "recording.activity.tasks: tasks [9] do not exist (this protocol has tasks 0-4)"),
])
def test_values_that_would_break_the_run_are_errors(override, expected):
    with pytest.raises(ConfigError) as err:
        load_protocol(DIGITS, [override])
    assert any(expected in m for m in err.value.messages), err.value.messages


def test_mlp_layers_of_size_zero_are_errors():
    with pytest.raises(ConfigError) as err:
        load_protocol(REPO / "protocols" / "r3-naive.yaml", ["model.hidden=[0]"])
    assert any("model.hidden.0: Input should be greater than or equal to 1" in m for m in err.value.messages)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_gpu_this_machine_lacks_warns_in_validate_and_stops_run(tmp_path):
    res = CliRunner().invoke(main, ["validate", str(DIGITS), "execution.device=cuda"])
    assert res.exit_code == 0 and "warning: execution.device: cuda is not available here (no CUDA device)" in res.stderr
    out = tmp_path / "store"
    res = CliRunner().invoke(main, ["run", str(DIGITS), "execution.device=cuda", "--out", str(out)])
    assert res.exit_code == 2 and "cannot start the run: execution.device: cuda is not available here" in res.stderr
    assert not out.exists()


def test_training_memory_beyond_the_machine_is_an_error():
    with pytest.raises(ConfigError) as err:
        load_protocol(DIGITS, ["model.n=1000000"])
    assert any("model: training it takes about" in m and "GiB" in m and "make it smaller" in m
               for m in err.value.messages), err.value.messages


@pytest.mark.parametrize("override, expected", [
    ("tasks.0.env_kwargs.timing.bogus=5", "tasks.0.env_kwargs.timing.bogus: PerceptualDecisionMaking-v0 has no period "
                                          "'bogus' (its periods: decision, delay, fixation, stimulus)"),
    ("tasks.0.env_kwargs.timing.fixation=-200", "tasks.0.env_kwargs.timing.fixation: a duration cannot be negative"),
    ("model.dt=20", "model.dt: the model steps 20 ms but the tasks' time step is 100 ms (env_kwargs.dt): set model.dt: 100"),
])
def test_cognitive_timing_and_time_step_mistakes(override, expected):
    with pytest.raises(ConfigError) as err:
        load_protocol(REPO / "protocols" / "cognitive-sequence.yaml", [override])
    assert any(expected in m for m in err.value.messages), err.value.messages


def test_a_folder_where_a_data_file_should_be_is_named(isolated):
    from neurocl.data import DataError, load_dataset

    d = isolated / "data" / "mnist-t10k"
    (d / "t10k-images-idx3-ubyte.gz").mkdir(parents=True)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: is a directory, not the file"):
        load_dataset("mnist-t10k", root=isolated / "data")
