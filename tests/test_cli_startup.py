"""The commands that need no tensors start without importing the heavy libraries.

`neurocl --help` used to import torch, pandas and scipy (seconds on a loaded machine). A run in a
fresh interpreter reports which of them got imported; timings are in benchmarks, never here.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from neurocl.cli import LAZY_COMMANDS

HEAVY = ("torch", "numpy", "numba", "scipy", "pandas", "pyarrow", "matplotlib", "sklearn", "pydantic", "yaml")

PROBE = """
import json, sys
from click.testing import CliRunner
from neurocl.cli import main
res = CliRunner().invoke(main, sys.argv[1:])
print(json.dumps({"code": res.exit_code, "output": res.output,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY,)


def probe(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["validate", "--help"], ["show", "--help"]])
def test_help_imports_nothing_heavy(args):
    got = probe(*args)
    assert got["code"] == 0, got["output"]
    assert {m.split(".")[0] for m in got["heavy"]} == set(), got["heavy"]


def test_help_lists_every_command_with_its_own_help():
    text = probe("--help")["output"]
    for name in ("data", "figures", "results", "run", "schema", "show", "store", "sweep", "validate"):
        assert f"\n  {name} " in text, name


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_lazy_table_matches_each_command(name):
    module, attr, help_text = LAZY_COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    assert cmd.name == name and cmd.get_short_help_str(limit=1000) == help_text


def test_the_package_loads_its_api_on_first_use():
    code = ("import sys, neurocl; before = 'torch' in sys.modules; m = neurocl.build_model('ei-rnn-64'); "
            "from neurocl import simulate; print(before, type(m).__name__, callable(simulate))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "EIRNN", "True"]
