"""The ``neurocl`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .config import ConfigError


class _Group(click.Group):
    """Turn configuration errors into clean messages and a non-zero exit, not tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            click.echo("\n".join(err.messages), err=True)
            ctx.exit(2)
        except Exception as err:
            # Imported here: neurocl.data pulls in numpy, which `--help` should not pay for.
            from .data.errors import DataError

            if not isinstance(err, DataError):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)


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
    """Train PROTOCOL (a YAML file), with dotted OVERRIDES such as training.lr=3e-4."""
    from .protocol import load_protocol
    from .run import RunFailed, run_protocol

    from .data.errors import DatasetNotFound
    from .migrate import open_store_and_say

    proto = load_protocol(protocol, list(overrides))
    open_store_and_say(out)
    try:
        rd = run_protocol(proto, out, retry_failed=retry_failed)
    except DatasetNotFound as err:
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
    s = rd.read_json("summary.json")
    R = np.array(s["accuracy_matrix"], dtype=float)
    n = R.shape[0]
    click.echo("accuracy matrix R[i, j] (row: after training task i, column: task j)")
    click.echo("        " + "".join(f"  task{j:<3d}" for j in range(n)))
    for i in range(n):
        click.echo(f"task{i:<3d} " + "".join(f"  {R[i, j]:7.4f}" for j in range(n)))
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
    from .protocol import dataset_warnings, load_protocol, protocol_run_id

    proto = load_protocol(protocol, list(overrides))
    # A missing dataset does not make the protocol wrong: the run may be meant for a machine
    # (a cluster) where the data lives.
    for warning in dataset_warnings(proto):
        click.echo(f"{protocol}: warning: {warning}", err=True)
    click.echo(f"{protocol}: ok (run id {protocol_run_id(proto)})")


def _register_optional() -> None:
    """Subcommands that live next to the code they drive."""
    import importlib

    for module, attr in (
        ("neurocl.data.cli", "data"),
        ("neurocl.sweep_cli", "sweep"),
        ("neurocl.results_cli", "results"),
        ("neurocl.figures.cli", "figures"),
        ("neurocl.store_cli", "store"),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            raise
        main.add_command(getattr(mod, attr))


_register_optional()

if __name__ == "__main__":
    main()
