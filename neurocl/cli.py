"""The ``neurocl`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

# Subcommands that live next to the code they drive: (module, attribute, one-line help). They are
# imported only when run (or asked for their own --help), so that `neurocl --help` imports
# neither torch nor numpy.
LAZY_COMMANDS = {
    "analyse": ("neurocl.analyse_cli", "analyse",
                "Analyse stored runs: one subcommand per kind of analysis (neurocl analyse KIND --help)."),
    "data": ("neurocl.data.cli", "data", "List, download and verify datasets."),
    "doctor": ("neurocl.doctor_cli", "doctor",
               ("Report how trainable the E/I network of SOURCE is (a model preset, a model or protocol YAML file, or "
                "a run directory): spectra, E/I balance, silent units and pinned synapses, each problem with what to "
                "change.")),
    "figures": ("neurocl.figures.cli", "figures", "Draw the figures of SOURCE (a run directory, a store or sweep directory, "
                "or a results table written by `neurocl results`), each with the CSV of the numbers it plots and a "
                "manifest.json of sha256 sums."),
    "results": ("neurocl.results_cli", "results",
                "One row per run and metric, the configuration flattened into dotted config.* columns."),
    "store": ("neurocl.store_cli", "store", "Maintain a results store."),
    "sweep": ("neurocl.sweep_cli", "sweep", "Run every combination of a sweep file (grid, zip, list, seeds); see docs/sweeps.md."),
}


class _Group(click.Group):
    """Turn configuration errors into clean messages and a non-zero exit, not tracebacks; load
    the subcommands of LAZY_COMMANDS on first use."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            module, attr, _ = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        # The listing of `neurocl --help`: lazy commands show their help from the table.
        from click.utils import make_default_short_help

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(LAZY_COMMANDS[name][2], limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as err:
            # The error classes are looked up only where their module is loaded: neither can
            # have been raised otherwise, and importing them would cost `--help` pydantic or numpy.
            config, data = sys.modules.get("neurocl.config"), sys.modules.get("neurocl.data.errors")
            if config is not None and isinstance(err, config.ConfigError):
                click.echo("\n".join(err.messages), err=True)
                ctx.exit(2)
            if data is not None and isinstance(err, data.DataError):
                click.echo(f"error: {err}", err=True)
                ctx.exit(2)
            store = sys.modules.get("neurocl.store")
            problem = store.storage_problem(err) if store is not None else None
            if problem is not None:
                click.echo(f"error: {problem}. Nothing that was written before is lost; free space or "
                           "choose a writable --out, then run the same command again.", err=True)
                ctx.exit(2)
            raise


@click.group(cls=_Group)
@click.version_option(package_name="neurocl")
def main() -> None:
    """Continual learning on biologically constrained recurrent networks."""


@main.command("run")
@click.argument("protocol", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--out", default="neurocl-out", show_default=True, help="Store directory (runs go to OUT/runs/<id>).")
@click.option("--retry-failed", is_flag=True, help="Run again a run that is marked FAILED.")
def run_cmd(protocol: str, overrides: tuple[str, ...], out: str, retry_failed: bool) -> None:
    """Train PROTOCOL (a YAML file), with dotted OVERRIDES such as training.optimizer.lr=3e-4."""
    from .data.errors import DatasetNotFound
    from .migrate import open_store_and_say
    from .protocol import leak_warnings, load_protocol, protocol_run_id
    from .run import CannotStart, RunBusy, RunFailed, run_protocol
    from .store import Store

    proto = load_protocol(protocol, list(overrides))
    for warning in leak_warnings(proto):
        click.echo(f"{protocol}: warning: {warning}", err=True)
    open_store_and_say(out)
    rd = Store(out).run(protocol_run_id(proto))
    found = rd.last_checkpoint()
    if found is not None and not rd.is_done() and not rd.is_failed():
        click.echo(f"run {rd.id}: resuming after task {found[0]} ({found[1]})", err=True)
    try:
        rd = run_protocol(proto, out, retry_failed=retry_failed)
    except KeyboardInterrupt:
        found = rd.last_checkpoint()
        where = f"after task {found[0]}" if found is not None else "before the first task finished"
        click.echo(f"interrupted {where}; rerun the same command to resume (run {rd.id})", err=True)
        sys.exit(130)
    except RunBusy as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    except (DatasetNotFound, CannotStart) as err:
        # Before anything is written: nothing to resume, no FAILED run to clear.
        click.echo(f"{protocol}: cannot start the run: {err}", err=True)
        sys.exit(2)
    except RunFailed as err:
        click.echo(f"FAILED: {err.reason}", err=True)
        sys.exit(1)
    _print_summary(rd.path)


def _print_summary(path: Path) -> None:
    import numpy as np

    from .store import RunDir

    rd = RunDir(path)
    click.echo(f"run {rd.id}: {rd.status()}  ({rd.path})")
    if rd.is_failed():
        click.echo(f"reason: {rd.failure_reason()}")
        return
    if not rd.summary.exists():
        return
    s = json.loads(rd.summary.read_text())
    R = np.array(s["accuracy_matrix"], dtype=float)
    n = R.shape[0]
    # Runs stored before task names were recorded show their indices.
    names = s.get("task_names") or [f"task{j}" for j in range(n)]
    width = max(7, *(len(name) for name in names))
    click.echo("accuracy matrix R[i, j] (row: after training task i, column: task j)")
    click.echo(" " * width + "".join(f"  {name:>{width}s}" for name in names))
    for i in range(n):
        click.echo(f"{names[i]:<{width}s}" + "".join(f"  {R[i, j]:{width}.4f}" for j in range(n)))
    click.echo("average accuracy after each task: " + " ".join(f"{a:.4f}" for a in s["average_accuracy"]))
    for key in ("final_average_accuracy", "backward_transfer", "forward_transfer", "forgetting"):
        click.echo(f"{key}: {s[key]:.4f}")


@main.command("show")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def show_cmd(run_dir: str) -> None:
    """Print the accuracy matrix and summary of a stored run."""
    _print_summary(Path(run_dir))


@main.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of protocol files (for editors)."""
    from .protocol import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command("validate")
@click.argument("protocol", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
def validate_cmd(protocol: str, overrides: tuple[str, ...]) -> None:
    """Check a protocol file without running it; print its run id."""
    from .protocol import dataset_warnings, leak_warnings, load_protocol, protocol_run_id

    proto = load_protocol(protocol, list(overrides))
    for warning in leak_warnings(proto):
        click.echo(f"{protocol}: warning: {warning}", err=True)
    # A missing dataset does not make the protocol wrong: the run may be meant for a machine
    # (a cluster) where the data lives.
    for warning in dataset_warnings(proto):
        click.echo(f"{protocol}: warning: {warning}", err=True)
    click.echo(f"{protocol}: ok (run id {protocol_run_id(proto)})")


if __name__ == "__main__":
    main()
