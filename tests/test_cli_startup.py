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


def test_reading_a_store_imports_no_torch(tmp_path):
    """show and results read summary.json and metrics.parquet: no torch, numba or scipy."""
    from neurocl.run import run_protocol
    from sweep_fixtures import TINY_PROTOCOL

    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    rd = run_protocol(p, tmp_path / "out", ["execution.progress=none"])
    for args in (["show", str(rd.path)], ["results", str(tmp_path / "out")]):
        got = probe(*args)
        assert got["code"] == 0, got["output"]
        assert {m.split(".")[0] for m in got["heavy"]} & {"torch", "numba", "scipy"} == set(), (args, got["heavy"])


def test_help_lists_every_command_with_its_own_help():
    text = probe("--help")["output"]
    for name in ("analyse", "data", "figures", "results", "run", "schema", "show", "store", "sweep", "validate"):
        assert f"\n  {name} " in text, name


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_lazy_table_matches_each_command(name):
    module, attr, help_text = LAZY_COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    assert cmd.name == name and cmd.get_short_help_str(limit=1000) == help_text


def test_the_package_loads_its_api_on_first_use():
    code = ("import sys, neurocl; before = 'torch' in sys.modules; m = neurocl.build_model('ei-rnn-64'); "
            "from neurocl import simulate; print(before, type(m).__name__, callable(simulate), "
            "all(callable(getattr(neurocl, n)) for n in neurocl.__all__ if n != '__version__'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "EIRNN", "True", "True"]


RUN_PROBE = """
import sys
from neurocl.run import run_protocol
run_protocol(sys.argv[1], sys.argv[2], ["training.epochs=1", "training.batch_size=64", "execution.progress=none"])
print("torch._dynamo" in sys.modules, "scipy.stats" in sys.modules)
"""


def test_a_run_never_imports_torch_dynamo_or_scipy_stats(tmp_path):
    """torch's optimisers import torch._dynamo (about 1 s) on first use, and scipy.stats took
    0.8 s for the weight moments; a run imports neither."""
    from pathlib import Path

    proto = Path(__file__).resolve().parent.parent / "protocols" / "split-digits.yaml"
    out = subprocess.run([sys.executable, "-c", RUN_PROBE, str(proto), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout


@pytest.mark.parametrize("name, kw", [("Adam", {}), ("Adam", {"fused": True}), ("Adam", {"weight_decay": 0.1}),
                                      ("SGD", {"momentum": 0.9}), ("RMSprop", {"momentum": 0.5})])
def test_the_lean_optimizer_steps_bit_for_bit_as_torch(name, kw):
    import types

    import torch

    from neurocl.training import _plain_step

    g = torch.Generator().manual_seed(0)
    start = torch.randn(7, 5, generator=g)
    grads = [torch.randn(7, 5, generator=g) for _ in range(6)]
    params = []
    for lean in (False, True):
        p = torch.nn.Parameter(start.clone())
        opt = getattr(torch.optim, name)([p], lr=0.01, **kw)
        if lean:  # what lean_optimizer does where dynamo is not loaded (here it may be)
            opt.step = types.MethodType(_plain_step, opt)
        for grad in grads:
            opt.zero_grad()
            p.grad = grad.clone()
            opt.step()
        params.append(p.detach())
    assert torch.equal(params[0], params[1])


def test_analyse_lists_its_kinds_and_names_an_unknown_one():
    from click.testing import CliRunner

    from neurocl.cli import main

    res = CliRunner().invoke(main, ["analyse", "--help"])
    assert res.exit_code == 0 and "psychometric" in res.output
    res = CliRunner().invoke(main, ["analyse", "psychometrc", "x"])
    assert res.exit_code == 2 and "unknown analysis 'psychometrc' (did you mean 'psychometric'?)" in res.output
