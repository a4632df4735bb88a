"""``neurocl sweep``: run a sweep file locally or on SLURM, and see where it stands.

``neurocl sweep SWEEP.yaml ...`` is short for ``neurocl sweep run SWEEP.yaml ...``.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from .registry import Registry


class _DefaultRun(click.Group):
    """A group whose first argument, unless it names a subcommand, is a sweep file for ``run``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("sweep", cls=_DefaultRun)
def sweep() -> None:
    """Run every combination of a sweep file (grid, zip, list, seeds); see docs/sweeps.md."""


class _Progress:
    """A bar over runs on a terminal, one log line per finished run otherwise."""

    def __init__(self, total: int, done: int, mode: str):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.n = mode, total, done
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="run", desc="sweep", dynamic_ncols=True)

    def __call__(self, result: dict, run) -> None:
        status = result["status"]
        if status == "busy":
            msg = f"skipped {run.id} ({run.label}): {result.get('reason')}"
        else:
            self.n += 1
            secs = f" in {result['seconds']:.1f} s" if result.get("seconds") else ""
            msg = f"{status} {run.id} ({run.label}){secs}"
            if status == "failed":
                msg += f": {result.get('reason')}"
        if self.bar is not None:
            if status != "busy":
                self.bar.update(1)
            if status != "done":
                self.bar.write(msg, file=sys.stderr)
        elif self.mode == "log":
            click.echo(f"[{self.n}/{self.total}] {msg}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _param(values: tuple[str, ...]) -> dict:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}' is not KEY=VALUE", param_hint="--slurm-param")
        k, val = v.split("=", 1)
        out[k.strip()] = True if val == "" else val
    return out


def _missing_datasets(runs) -> list[str]:
    """One message per dataset that the runs to do need and this machine does not have."""
    from .data.errors import DatasetNotFound
    from .data.datasets import find_dataset

    wanted = {(r.config["dataset"]["name"], r.config["dataset"]["root"]) for r in runs}
    messages = []
    for name, root in sorted(wanted, key=str):
        try:
            find_dataset(name, root=root)
        except DatasetNotFound as err:
            messages.append(str(err))
    return messages


def _run_local(sw, p, out, opts: dict, retry_failed: bool) -> None:
    from .executors.local import Interrupted, LocalExecutor

    if not p.todo:
        return
    workers, threads, max_attempts, progress = opts["workers"], opts["threads"], opts["max_attempts"], opts["progress"]
    local = sw.spec.local
    bar = _Progress(len(sw.runs), len(p.done) + len(p.failed), progress)
    ex = LocalExecutor(
        out, workers=workers or local.workers, threads=threads or local.threads,
        max_attempts=max_attempts or local.max_attempts, retry_failed=retry_failed, on_result=bar,
        lock_wait_s=local.lock_wait_s,
    )
    try:
        report = ex.run(p.todo)
    except Interrupted as stop:
        bar.close()
        click.echo(
            f"stopped by {signal.Signals(stop.signum).name}: finished runs are kept; run the same command "
            "again to resume the others from their last task checkpoint.", err=True,
        )
        sys.exit(128 + stop.signum)
    bar.close()
    click.echo(
        f"finished {len(report.ran)} runs, {len(report.already_done)} were already done, "
        f"{len(report.failed)} failed" + (f", {len(report.busy)} running elsewhere" if report.busy else "")
    )
    for rid, reason in report.failed.items():
        click.echo(f"  FAILED  {rid}: {reason}")
    if report.failed:
        sys.exit(1)


def _run_slurm(sw, p, out, opts: dict, retry_failed: bool) -> None:
    from .executors.slurm import SlurmError, queued_elsewhere, submit

    updates = {
        k: v for k, v in dict(
            partition=opts["partition"], time=opts["time_"], cpus_per_task=opts["cpus_per_task"], mem=opts["mem"],
            runs_per_job=opts["runs_per_job"], max_array_size=opts["max_array_size"],
            array_parallelism=opts["array_parallelism"],
        ).items() if v is not None
    }
    settings = sw.spec.slurm.model_validate({**sw.spec.slurm.model_dump(), **updates})
    extra = _param(opts["slurm_param"])
    try:
        held = queued_elsewhere(out, {r.id for r in p.todo})
        todo = [r for r in p.todo if r.id not in held]
        if held:
            click.echo(f"{len(held)} runs are still queued or running in earlier jobs: not submitted again")
        ids = submit(todo, out, settings, name=sw.name, retry_failed=retry_failed, extra_params=extra)
    except SlurmError as err:
        raise click.ClickException(str(err)) from None
    except RuntimeError as err:  # submitit: no srun here
        raise click.ClickException(f"cannot submit to SLURM: {err}") from None
    if ids:
        n_jobs = -(-len(todo) // settings.runs_per_job)
        click.echo(f"submitted {len(todo)} runs as {n_jobs} array tasks in {len(ids)} job arrays: {' '.join(ids)}")
    click.echo(f"logs: {Path(out) / 'slurm'}; follow with: neurocl sweep status {out}")


@dataclass(frozen=True)
class Executor:
    """How `neurocl sweep run --executor NAME` runs the planned runs."""

    name: str
    run: Callable  # (sweep, plan, out, the command's options, retry_failed)
    needs_data_here: bool  # the runs read the data on this machine
    where: str  # where the runs read their data, for warnings


# One entry per executor; the --executor choices come from here.
EXECUTORS: Registry = Registry("executor")
EXECUTORS.register(Executor("local", _run_local, needs_data_here=True, where="where it runs"))
EXECUTORS.register(Executor("slurm", _run_slurm, needs_data_here=False, where="on the nodes that run it"))


@sweep.command("run")
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--executor", type=click.Choice(EXECUTORS.names()), default="local", show_default=True)
@click.option("--out", default="neurocl-out", show_default=True, help="Store directory (runs go to OUT/runs/<id>).")
@click.option("--dry-run", is_flag=True, help="List the runs and what is left to do; run nothing.")
@click.option("--retry-failed", is_flag=True, help="Run again the runs marked FAILED.")
@click.option("--workers", type=click.IntRange(min=1), help="[local] Worker processes (default: local.workers or the CPU count).")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads per run (default: local.threads = 1, or slurm cpus per task).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="[local] Tries for a run whose worker dies (default 3).")
@click.option("--progress", type=click.Choice(["auto", "bar", "log", "none"]), default="auto", show_default=True)
@click.option("--partition", help="[slurm] Partition.")
@click.option("--time", "time_", help="[slurm] Time limit per array task: minutes or HH:MM:SS.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), help="[slurm] CPUs per array task.")
@click.option("--mem", help="[slurm] Memory per array task, e.g. 4G.")
@click.option("--runs-per-job", type=click.IntRange(min=1), help="[slurm] Runs packed into one array task.")
@click.option("--max-array-size", type=click.IntRange(min=1), help="[slurm] Split arrays at this size (default: the cluster's MaxArraySize).")
@click.option("--array-parallelism", type=click.IntRange(min=1), help="[slurm] At most this many array tasks at once.")
@click.option("--slurm-param", multiple=True, help="[slurm] Extra sbatch parameter KEY=VALUE (repeatable), e.g. account=lab.")
def run_cmd(sweep_file, executor, out, dry_run, retry_failed, **opts) -> None:
    """Run every combination of SWEEP_FILE that is not finished yet."""
    from .executors import plan, start_retries, write_manifest
    from .migrate import open_store_and_say
    from .sweep import load_sweep

    sw = load_sweep(sweep_file)
    # A store of an older neurocl: its finished runs under today's ids, so none is run again.
    open_store_and_say(out)
    p = plan(sw.runs, out, retry_failed)
    dups = sw.n_combinations - len(sw.runs)
    click.echo(
        f"sweep {sw.name}: {sw.n_combinations} combinations, {len(sw.runs)} runs"
        + (f" ({dups} duplicate configurations)" if dups else "")
        + f"; done {len(p.done)}, failed {len(p.failed)}, to run {len(p.todo)}"
        + (f" (retrying {len(p.retried)} failed)" if p.retried else "")
    )
    for run in p.failed:
        from .store import Store

        click.echo(f"  FAILED  {run.id}  {run.label}: {Store(out).run(run.id).failure_reason()} (--retry-failed to run it again)")
    ex = EXECUTORS[executor]
    missing = _missing_datasets(p.todo)
    if missing and ex.needs_data_here and not dry_run:
        # Every run would stop at its start; say so once, before any worker starts.
        click.echo(
            f"{sweep_file}: cannot run this sweep here: " + "\n".join(missing) + "\nNothing was started; "
            "run the same command again once the data is here.", err=True,
        )
        sys.exit(2)
    for message in missing:
        click.echo(f"warning: {message}\n(the runs need it {ex.where})", err=True)
    if dry_run:
        done, failed = {r.id for r in p.done}, {r.id for r in p.failed}
        for run in sw.runs:
            state = "done" if run.id in done else "failed" if run.id in failed else "todo"
            click.echo(f"  {state:<6s} {run.id}  {run.label}")
        return
    write_manifest(out, sw)
    start_retries(p, out)
    ex.run(sw, p, out, opts, retry_failed)
    if p.failed:
        sys.exit(1)


@sweep.command("status")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("-v", "--verbose", is_flag=True, help="One line per run.")
@click.option("--json", "as_json", is_flag=True, help="Counts and runs as JSON.")
def status_cmd(out: str, verbose: bool, as_json: bool) -> None:
    """Done / running / failed / pending runs in the store OUT, with failure reasons."""
    from .executors.status import counts, format_status, store_status
    from .migrate import open_store_and_say

    open_store_and_say(out)
    states = store_status(out)
    if as_json:
        click.echo(json.dumps({"counts": counts(states), "runs": [s.__dict__ for s in states]}, indent=2))
    else:
        click.echo(format_status(out, states, verbose))
