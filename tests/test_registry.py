"""The one registry mechanism, and every kind of thing neurocl names going through it."""

from __future__ import annotations

import sys
import types

import pytest

from neurocl.registry import Registry, UnknownName


def test_register_lookup_and_did_you_mean():
    reg = Registry("colour")

    @reg.register
    class Red:
        name = "red"

    reg.register("a string", name="green")
    assert reg["red"] is Red and reg.lookup("green") == "a string"
    assert list(reg) == ["red", "green"] and len(reg) == 2 and "red" in reg and "blue" not in reg
    assert reg.get("blue") is None  # a Mapping's get
    with pytest.raises(UnknownName) as err:
        reg.lookup("gren")
    assert str(err.value) == "unknown colour 'gren' (did you mean 'green'?)"
    with pytest.raises(KeyError):  # UnknownName is a KeyError, so `name in` / except KeyError work
        reg["nothing-like-it"]
    assert reg.unknown("zzz") == "unknown colour 'zzz' (known: green, red)"


def test_a_taken_name_is_an_error_but_the_same_object_again_is_not():
    reg = Registry("thing")
    obj = object()
    reg.register(obj, name="x")
    reg.register(obj, name="x")
    with pytest.raises(ValueError, match="thing 'x' is registered twice"):
        reg.register(object(), name="x")


def test_the_defining_modules_load_on_first_lookup(monkeypatch):
    loaded = []
    reg = Registry("plug-in", modules=("neurocl_test_plugin_a",))
    module = types.ModuleType("neurocl_test_plugin_a")

    def import_it(name):
        loaded.append(name)
        reg.register("from a", name="a")
        return module

    monkeypatch.setattr("neurocl.registry.importlib.import_module", import_it)
    assert loaded == []  # creating the registry imports nothing
    assert reg["a"] == "from a" and loaded == ["neurocl_test_plugin_a"]
    assert reg.names() == ["a"] and loaded == ["neurocl_test_plugin_a"]  # once


def test_every_kind_of_named_thing_uses_it():
    from neurocl.data.registry import DATASETS
    from neurocl.figures.registry import FIGURES
    from neurocl.nets.base import MODEL_KINDS
    from neurocl.rules import RULES
    from neurocl.sim.backends import BACKENDS
    from neurocl.sweep_cli import EXECUTORS

    for reg, expected in ((RULES, {"naive", "ewc", "si", "supermask"}), (MODEL_KINDS, {"ei-rnn", "lstm", "mlp", "masked-mlp"}),
                          (DATASETS, {"digits", "mnist-t10k", "mnist", "fashion-mnist"}),
                          (FIGURES, {"accuracy-matrix", "weight-moments"}), (EXECUTORS, {"local", "slurm"}),
                          (BACKENDS, {"torch", "numba"})):
        assert isinstance(reg, Registry) and expected <= set(reg), reg
    assert "neurocl.rules.consolidation" in sys.modules  # loaded by the lookups above
