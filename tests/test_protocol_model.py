"""The protocol holds the validated model config: presets expand once, overrides reach inside
them, and errors name the override, the key and the closest valid name."""

from __future__ import annotations

from pathlib import Path

import pytest

import neurocl.models
from neurocl.config import ConfigError
from neurocl.nets.mlp import MLPConfig
from neurocl.protocol import load_protocol, resolved_config
from neurocl.sim.config import EIRNNConfig
from neurocl.sweep import load_sweep

REPO = Path(__file__).resolve().parent.parent
R3 = REPO / "protocols" / "r3-naive.yaml"  # model: mlp-2x2000 (a preset by name)


def errors(path, overrides) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_protocol(path, overrides)
    return err.value.messages


def test_the_protocol_holds_the_validated_model():
    proto = load_protocol(R3)
    assert isinstance(proto.model, MLPConfig) and proto.model.hidden == [2000, 2000]
    assert resolved_config(proto)["model"] == proto.model.model_dump(mode="json")
    assert isinstance(load_protocol(REPO / "protocols" / "split-digits.yaml").model, EIRNNConfig)


def test_an_override_of_a_preset_named_model_keeps_the_preset():
    # It used to replace `model: mlp-2x2000` by {dropout: 0.3}: a default E/I network.
    proto = load_protocol(R3, ["model.dropout=0.3"])
    assert isinstance(proto.model, MLPConfig)
    assert (proto.model.hidden, proto.model.dropout) == ([2000, 2000], 0.3)


def test_a_sweep_over_model_keys_of_a_preset_named_model(tmp_path):
    (tmp_path / "s.yaml").write_text(f"protocol: {R3}\ngrid: {{model.dropout: [0.1, 0.2]}}\n")
    runs = load_sweep(tmp_path / "s.yaml").runs
    assert [(r.config["model"]["kind"], r.config["model"]["hidden"], r.config["model"]["dropout"]) for r in runs] == [
        ("mlp", [2000, 2000], 0.1), ("mlp", [2000, 2000], 0.2)]


def test_the_preset_file_is_read_once_per_protocol(monkeypatch):
    reads = []
    original = neurocl.models.load_yaml
    monkeypatch.setattr(neurocl.models, "load_yaml", lambda p: reads.append(Path(p).name) or original(p))
    proto = load_protocol(R3)
    resolved_config(proto)
    resolved_config(proto)
    assert reads == ["mlp-2x2000.yaml"]


@pytest.mark.parametrize("override, expected", [
    ("model.kind=lstn", "override 'model.kind=lstn': model.kind: unknown kind 'lstn' (did you mean 'lstm'?)"),
    ("model.tua=3", "override 'model.tua=3': model.tua: unknown key (allowed: activation, dropout, dtype, hidden, "
                    "init, kind, n_in, n_out, output)"),
    ("model.dropout=-1", "override 'model.dropout=-1': model.dropout: Input should be greater than or equal to 0"),
    ("rules=[ecw]", "override 'rules=[ecw]': rules.0.name: unknown name 'ecw' (did you mean 'ewc'?)"),
    ("rules.0.lamda=3", "override 'rules.0.lamda=3': rules.0.lamda: unknown key (allowed: name)"),
    ("model=no-such-preset", "override 'model=no-such-preset': model: model preset 'no-such-preset' not found"),
])
def test_model_and_rule_errors_name_the_override_and_a_fix(override, expected):
    msgs = errors(R3, [override])
    assert any(m.startswith(expected) for m in msgs), msgs


def test_a_preset_key_misspelt_in_the_protocol_file_names_its_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(R3.read_text().replace("model: mlp-2x2000", "model: {preset: mlp-2x2000, dropuot: 0.1}"))
    line = next(i for i, text in enumerate(p.read_text().splitlines(), 1) if text.startswith("model:"))
    assert any(m.startswith(f"{p}:{line}:") and "model.dropuot: unknown key (did you mean 'dropout'?)" in m
               for m in errors(p, []))
