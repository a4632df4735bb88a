"""Imports run one way, from the command line down to the simulator (docs/architecture.md).

Every ``import`` in neurocl, at module level or inside a function, is read from the source; a
module may import only modules of its own layer or of a layer below it, and no two modules
import each other at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "neurocl"

# Lowest first. A module belongs to the layer of the longest prefix that names it; the list is
# the one in docs/architecture.md, and a new module falls into its package's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("neurocl.config", "neurocl.registry", "neurocl.lazy", "neurocl.store", "neurocl.progress", "neurocl.metrics")),
    ("core", ("neurocl.sim", "neurocl.nets", "neurocl.data")),
    ("models and losses", ("neurocl.models", "neurocl.training", "neurocl.analysis.masks")),
    ("rules", ("neurocl.rules",)),
    ("protocol", ("neurocl.protocol",)),
    ("run", ("neurocl.run", "neurocl.evaluation", "neurocl.recording", "neurocl.checkpoints", "neurocl.migrate",
             "neurocl.results")),
    ("studies", ("neurocl.sweep", "neurocl.executors", "neurocl.analysis", "neurocl.figures")),
    ("interface", ("neurocl", "neurocl.cli", "neurocl.__main__", "neurocl.sweep_cli", "neurocl.results_cli",
                   "neurocl.store_cli", "neurocl.doctor_cli", "neurocl.analyse_cli", "neurocl.data.cli", "neurocl.figures.cli")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, level = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_only = prefix == "neurocl"  # the package itself is the public API, not its contents
            if (module == prefix or (not exact_only and module.startswith(prefix + "."))) and len(prefix) > len(best):
                best, level = prefix, i
    assert level is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return level


def import_statements(module: str, top_level_only: bool = False):
    """(imported module, names) for every neurocl import in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("neurocl"):
                    yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("neurocl"):
                yield target, [a.name for a in node.names]


def imports(module: str, top_level_only: bool = False) -> set[str]:
    """The neurocl modules ``module`` imports (``from . import x`` counts as module ``x``)."""
    found = set()
    for target, names in import_statements(module, top_level_only):
        if target == "neurocl" and names == ["__version__"]:
            continue  # a constant, not the API's modules
        subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
        found |= subs or {target}
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    here = layer_of(module)
    upward = [
        f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for target in sorted(imports(module)) if target in MODULES and layer_of(target) > here
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles_at_import_time():
    graph = {m: {t for t in imports(m, top_level_only=True) if t in MODULES and t != m} for m in MODULES}
    # A package imports its own modules from __init__; a module importing its package's
    # __init__ back is the cycle that breaks, so keep both directions in the graph.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                if not all(c == cycle[0] or c.startswith(cycle[0] + ".") or cycle[0].startswith(c + ".")
                           for c in cycle):  # a package and its own modules
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layering_catches_an_upward_import(tmp_path, monkeypatch):
    # The checker itself: a core module that imported the runner would be reported.
    fake = tmp_path / "neurocl" / "sim" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..run import Runner\n")
    monkeypatch.setitem(MODULES, "neurocl.sim.bad", fake)
    assert imports("neurocl.sim.bad") == {"neurocl.run"}
    assert layer_of("neurocl.sim.bad") < layer_of("neurocl.run")


# The files of a store; only neurocl/store.py may spell their names (RunDir and Store).
STORE_FILES = ("config.json", "meta.json", "metrics.parquet", "summary.json", "run.log", "histograms.parquet",
               "activity.npz", "attempts.json", "submissions.jsonl", "migrations.jsonl", "store.json", "checkpoints")


def test_only_the_store_names_the_files_of_a_store():
    spelled = [
        f"{module}: '{name}'"
        for module, path in sorted(MODULES.items()) if module != "neurocl.store"
        for name in STORE_FILES if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text()
    ]
    assert not spelled, "use neurocl.store.RunDir / Store instead: " + ", ".join(spelled)


def test_the_runner_is_one_room():
    # The loop only: evaluation, recording, checkpoints and the task sequence live beside it,
    # and nothing outside neurocl/run.py imports anything from it but run_protocol and friends.
    tree = ast.parse(MODULES["neurocl.run"].read_text())
    [runner] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Runner"]
    assert runner.end_lineno - runner.lineno + 1 < 170
    public = {"run_protocol", "RunFailed", "RunBusy", "CannotStart", "mark_failed", "load_run", "Runner",
              "make_optimizer"}
    for module in MODULES:
        for target, names in import_statements(module):
            if target == "neurocl.run" and module != "neurocl.run":
                assert set(names) <= public, f"{module} imports {sorted(set(names) - public)} from neurocl.run"
