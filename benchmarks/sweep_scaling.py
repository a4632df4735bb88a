"""What the local sweep executor costs per run, and what a second worker buys.

    .venv/bin/python benchmarks/sweep_scaling.py [--runs 8] [--epochs 20] [--repeats 3]

A tiny protocol (split digits, 2 tasks, an MLP) is run ``--runs`` times (one run per seed):

* directly, one run after the other in this process (``run_protocol``), after a warm-up run so
  that imports and the data set are already loaded: the cost of the training itself;
* as a sweep with 1 worker and with 2 workers (``LocalExecutor``: spawned processes, run lock,
  attempt records, markers), each into a fresh store.

It prints, as medians over ``--repeats``:

* ``overhead ratio``: sweep seconds per run (1 worker, start-up included) / direct seconds per
  run; and ``steady ratio``: the same once the worker is up (time between the first and the
  last result / (runs - 1)), i.e. what a run costs beyond its training in a long sweep;
* ``start-up``: seconds until the first result beyond the direct run time (spawning a worker
  and importing torch, pandas and scipy in it);
* ``speed-up``: wall time with 1 worker / wall time with 2 workers (ideal 2 on 2 idle cores),
  and ``steady speed-up``: the ratio of the rates at which results arrive once the workers
  are up (start-up, paid once per sweep, left out).

The numbers mean something only on an otherwise idle machine: on a loaded one the second
worker competes with other programs, not only with the first worker. As a control it also
prints ``host parallelism``: how much faster two CPU-bound processes finish two pieces of
work than one process does (2.0 on two idle cores), measured around the sweeps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE = """\
name: bench
dataset: {name: digits, max_train: 200, max_test: 100, encoding: flat}
model: {kind: mlp, n_in: 64, hidden: [32], n_out: 10}
tasks:
  - classes: [0, 1]
  - classes: [2, 3]
training: {epochs: EPOCHS}
rules: [naive]
execution: {progress: none, threads: 1}
"""


def make_runs(tmp: Path, n: int, epochs: int, seed0: int):
    from neurocl.sweep import load_sweep

    (tmp / "bench.yaml").write_text(BASE.replace("EPOCHS", str(epochs)))
    (tmp / "sweep.yaml").write_text(f"protocol: bench.yaml\nseeds: {list(range(seed0, seed0 + n))}\n")
    return load_sweep(tmp / "sweep.yaml").runs


def direct(runs, out: Path) -> float:
    """Seconds per run, trained one after the other in this process."""
    from neurocl.run import run_protocol

    t0 = time.perf_counter()
    for r in runs:
        run_protocol(r.config, out)
    return (time.perf_counter() - t0) / len(runs)


def swept(runs, out: Path, workers: int) -> tuple[float, float, float]:
    """(wall seconds, seconds to the first result, seconds between the first and last result)."""
    from neurocl.executors.local import LocalExecutor

    stamps: list[float] = []
    ex = LocalExecutor(out, workers=workers, threads=1, on_result=lambda result, run: stamps.append(time.perf_counter()))
    t0 = time.perf_counter()
    report = ex.run(runs)
    wall = time.perf_counter() - t0
    assert len(report.ran) == len(runs), report
    return wall, stamps[0] - t0, stamps[-1] - stamps[0]


def _spin(n: int) -> None:
    x = 0
    for i in range(n):
        x += i


def host_parallelism(n: int = 20_000_000) -> float:
    """(time for 2 units of CPU work in 1 process) / (time for them in 2 processes)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    _spin(2 * n)
    one = time.perf_counter() - t0
    procs = [ctx.Process(target=_spin, args=(n,)) for _ in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return one / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    results: dict[str, list[float]] = {k: [] for k in ("direct", "wall1", "first1", "span1", "wall2", "span2", "host")}
    with tempfile.TemporaryDirectory(prefix="neurocl-bench-") as tmpdir:
        tmp = Path(tmpdir)
        warm = make_runs(tmp, 1, args.epochs, seed0=10_000)
        direct(warm, tmp / "warm")  # imports and the data set, once
        for rep in range(args.repeats):
            results["host"].append(host_parallelism())
            # fresh seeds each time: every measurement trains new runs into a fresh store
            base = 100 * rep
            results["direct"].append(direct(make_runs(tmp, args.runs, args.epochs, base), tmp / f"direct{rep}"))
            wall, first, span = swept(make_runs(tmp, args.runs, args.epochs, base), tmp / f"w1-{rep}", 1)
            results["wall1"].append(wall)
            results["first1"].append(first)
            results["span1"].append(span)
            wall2, _, span2 = swept(make_runs(tmp, args.runs, args.epochs, base), tmp / f"w2-{rep}", 2)
            results["wall2"].append(wall2)
            results["span2"].append(span2)
            print(
                f"repeat {rep + 1}: direct {results['direct'][-1]:.3f} s/run, 1 worker {wall:.2f} s, "
                f"2 workers {wall2:.2f} s", file=sys.stderr, flush=True,
            )

    med = {k: statistics.median(v) for k, v in results.items()}
    n = args.runs
    per_run_1 = med["wall1"] / n
    steady = med["span1"] / (n - 1) if n > 1 else float("nan")
    print(f"host parallelism: {med['host']:.2f}  (2 CPU-bound processes vs 1; 2.0 on 2 idle cores)")
    print(f"cpus: {os.cpu_count()}  runs: {n}  epochs: {args.epochs}  repeats: {args.repeats} (medians)")
    print(f"direct:           {med['direct']:.3f} s per run")
    print(f"sweep, 1 worker:  {per_run_1:.3f} s per run (wall {med['wall1']:.2f} s)")
    print(f"start-up:         {med['first1'] - med['direct']:.2f} s (spawn + imports in the worker)")
    print(f"overhead ratio:   {per_run_1 / med['direct']:.2f}  (sweep s/run / direct s/run, start-up included)")
    print(f"steady ratio:     {steady / med['direct']:.2f}  (once the worker is up)")
    print(f"speed-up:         {med['wall1'] / med['wall2']:.2f}  (1 worker / 2 workers, wall)")
    # After its first result a worker delivers one result per run: w workers deliver n - w
    # results between the first and the last one.
    rate1, rate2 = (n - 1) / med["span1"], (n - 2) / med["span2"]
    print(f"steady speed-up:  {rate2 / rate1:.2f}  (result rate, 2 workers / 1 worker, start-up left out)")


if __name__ == "__main__":  # the workers are spawned: this module is imported again in each
    main()
