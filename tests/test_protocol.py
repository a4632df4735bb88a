"""Protocol validation: every error at once, each with file:line:column and a suggestion."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neurocl.config import ConfigError
from neurocl.protocol import load_protocol, protocol_run_id, resolved_config

REPO = Path(__file__).resolve().parent.parent
GOOD = """\
name: t
dataset: {name: digits, encoding: rows}
scenario: class-incremental
tasks:
  - classes: [0, 1]
  - classes: [2, 3]
training:
  epochs: 1
  batch_size: 32
model: {preset: ei-rnn-64, n_in: 8}
rules: [naive]
"""


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(path, overrides=()):
    with pytest.raises(ConfigError) as err:
        load_protocol(path, list(overrides))
    return err.value.messages


def test_good_protocol_validates(tmp_path):
    proto = load_protocol(write(tmp_path, GOOD))
    assert proto.tasks[1].classes == [2, 3] and proto.rules[0].name == "naive"


def test_unknown_key_names_file_line_column_and_suggests(tmp_path):
    p = write(tmp_path, GOOD.replace("  batch_size: 32", "  batch_sise: 32"))
    (msg,) = errors_of(p)
    assert msg == f"{p}:9:3: training.batch_sise: unknown key (did you mean 'batch_size'?)"


def test_wrong_type_names_its_line(tmp_path):
    p = write(tmp_path, GOOD.replace("epochs: 1", "epochs: many"))
    (msg,) = errors_of(p)
    assert msg.startswith(f"{p}:8:3: training.epochs:") and "integer" in msg


def test_all_errors_reported_at_once(tmp_path):
    text = GOOD.replace("epochs: 1", "epochs: -1").replace("scenario: class-incremental", "scenario: class-incremnetal")
    text = text.replace("name: t\n", "name: t\nsede: 3\n")
    msgs = errors_of(write(tmp_path, text))
    assert len(msgs) == 3
    assert any("sede: unknown key (did you mean 'seed'?)" in m for m in msgs)
    assert any(":4:1: scenario:" in m for m in msgs)
    assert any(":9:3: training.epochs:" in m for m in msgs)


def test_classes_that_do_not_exist(tmp_path):
    p = write(tmp_path, GOOD.replace("classes: [2, 3]", "classes: [2, 13]"))
    (msg,) = errors_of(p)
    assert msg.startswith(f"{p}:6:5: tasks.1.classes:") and "[13] do not exist in digits" in msg


def test_scenario_that_contradicts_the_task_list(tmp_path):
    p = write(tmp_path, GOOD.replace("scenario: class-incremental", "scenario: domain-incremental"))
    (msg,) = errors_of(p)
    assert msg.startswith(f"{p}:6:5: scenario: domain-incremental tasks must share their outputs")
    p2 = write(tmp_path, GOOD.replace("classes: [2, 3]", "classes: [1, 3]"), "p2.yaml")
    (msg2,) = errors_of(p2)
    assert "class-incremental tasks must add new classes" in msg2 and "[1]" in msg2


def test_model_input_size_must_match_the_encoding(tmp_path):
    p = write(tmp_path, GOOD.replace("n_in: 8", "n_in: 28"))
    (msg,) = errors_of(p)
    assert msg.startswith(f"{p}:10:1: model.n_in:") and "set model.n_in: 8" in msg


def test_unknown_rule_and_rule_option(tmp_path):
    msgs = errors_of(write(tmp_path, GOOD.replace("rules: [naive]", "rules: [{name: naive, lamda: 3}]")))
    assert len(msgs) == 1 and ":11:" in msgs[0] and "lamda" in msgs[0]
    msgs = errors_of(write(tmp_path, GOOD.replace("rules: [naive]", "rules: [naiv]"), "q.yaml"))
    assert len(msgs) == 1 and "naiv" in msgs[0] and ":11:" in msgs[0]


def test_overrides_apply_and_errors_name_the_override(tmp_path):
    p = write(tmp_path, GOOD)
    proto = load_protocol(p, ["training.optimizer.lr=3e-4", "model.n=32", "rules=[joint]"])
    assert proto.training.optimizer.lr == 3e-4 and proto.rules[0].name == "joint"
    assert resolved_config(proto)["model"]["n"] == 32
    (msg,) = errors_of(p, ["training.batch_sise=3"])
    assert msg.startswith("override 'training.batch_sise=3':") and "did you mean 'batch_size'" in msg
    (msg,) = errors_of(p, ["training.epochs"])
    assert "expected KEY=VALUE" in msg


def test_run_id_ignores_execution_settings_only(tmp_path):
    p = write(tmp_path, GOOD)
    base = protocol_run_id(load_protocol(p))
    assert base == protocol_run_id(load_protocol(p, ["execution.threads=2", "execution.progress=none"]))
    assert base != protocol_run_id(load_protocol(p, ["seed=1"]))
    # The preset is resolved before hashing: naming it or writing it out gives the same id.
    assert base != protocol_run_id(load_protocol(p, ["model.tau=49"]))


def test_schema_command_prints_json_schema():
    out = subprocess.run([sys.executable, "-m", "neurocl", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(out.stdout)
    assert "tasks" in schema["properties"] and schema.get("additionalProperties") is False


def test_cli_reports_errors_without_traceback(tmp_path):
    p = write(tmp_path, GOOD.replace("  batch_size: 32", "  batch_sise: 32"))
    out = subprocess.run([sys.executable, "-m", "neurocl", "run", str(p), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "batch_sise: unknown key" in out.stderr
    assert not (tmp_path / "o").exists()  # nothing written before validation passes


@pytest.mark.parametrize("path", sorted((REPO / "protocols").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_protocol_validates(path):
    proto = load_protocol(path)
    assert proto.name


def test_rules_default_to_naive(tmp_path):
    p = write(tmp_path, GOOD.replace("rules: [naive]\n", ""))
    proto = load_protocol(p)
    assert [r.name for r in proto.rules] == ["naive"]
