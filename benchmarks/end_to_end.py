"""Where the wall time of one short run goes: start-up, setup, training, evaluation and writing.

    .venv/bin/python benchmarks/end_to_end.py [--epochs 3] [--repeats 3] [--threads 1]

Runs ``neurocl run protocols/r1-ei-all-digits.yaml training.epochs=E`` (the R1-size E/I network,
8,000 training images) in a fresh interpreter per repeat, as a user would, and splits its wall
time (from before the interpreter starts to its exit) into:

* ``imports``: the interpreter's start and ``import neurocl.run`` (torch, numba, pandas ...);
* ``training``: inside ``Runner.train_epoch`` (forward, backward, rule hooks, optimiser steps);
* ``rest``: everything else (the protocol and the data, building the model, evaluating every
  task after every epoch, checkpoints, metrics and summary files, exit).

Two variants alternate in every repeat, so that a change in the machine's load hits both:
``torch optimiser`` builds torch's optimisers as they come (their first use imports
``torch._dynamo``), ``neurocl`` the way ``neurocl run`` does (``training.lean_optimizer``). The
table shows medians over repeats and the share of the wall time spent in training (issue 21's
goal: at least 75 %).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIVER = r"""
import json, sys, time
t_imports = time.perf_counter()
import neurocl.run as run
import neurocl.training as training
t_imported = time.perf_counter()
if sys.argv[3] == "torch":
    training.lean_optimizer = lambda make: make()   # torch's optimisers, dynamo import included
    run.lean_optimizer = training.lean_optimizer
spent = [0.0]
train_epoch = run.Runner.train_epoch
def timed(self, *a, **k):
    t = time.perf_counter()
    try:
        return train_epoch(self, *a, **k)
    finally:
        spent[0] += time.perf_counter() - t
run.Runner.train_epoch = timed
run.run_protocol(sys.argv[1], sys.argv[2], [f"training.epochs={sys.argv[4]}", "execution.progress=none"])
print(json.dumps({"imports": t_imported - t_imports, "training": spent[0],
                  "driver": time.perf_counter() - t_imports, "dynamo": "torch._dynamo" in sys.modules}))
"""


def one(variant: str, epochs: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(REPO / "protocols" / "r1-ei-all-digits.yaml"), out,
                               variant, str(epochs)], env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{variant}: the run failed\n{proc.stderr[-2000:]}")
    inside = json.loads(proc.stdout.strip().splitlines()[-1])
    # The interpreter's own start and exit (outside the driver's lines) count as imports.
    return {"wall": wall, "imports": inside["imports"] + wall - inside["driver"],
            "training": inside["training"], "dynamo": inside["dynamo"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               NUMBA_NUM_THREADS=str(args.threads))
    if not env.get("NEUROCL_DATA") and (REPO.parent / "shared" / "data").is_dir():
        env["NEUROCL_DATA"] = str(REPO.parent / "shared" / "data")
    one("neurocl", 1, env)  # warm numba's cache and the OS file cache
    results: dict[str, list[dict]] = {"torch optimiser": [], "neurocl": []}
    for _ in range(args.repeats):
        for variant, key in (("torch", "torch optimiser"), ("lean", "neurocl")):
            results[key].append(one(variant, args.epochs, env))
    print(f"# neurocl run protocols/r1-ei-all-digits.yaml training.epochs={args.epochs}; {args.threads} thread(s); "
          f"{args.repeats} repeats, medians; load average {os.getloadavg()[0]:.2f}")
    print("| variant | wall s | imports s | training s | rest s | training share | torch._dynamo imported |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for key, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("wall", "imports", "training")}
        rest = med["wall"] - med["imports"] - med["training"]
        print(f"| {key} | {med['wall']:.2f} | {med['imports']:.2f} | {med['training']:.2f} | {rest:.2f} | "
              f"{100 * med['training'] / med['wall']:.0f} % | {rows[0]['dynamo']} |")


if __name__ == "__main__":
    main()
