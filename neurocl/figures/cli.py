"""``neurocl figures``: every figure of a run, a sweep or a results table, in one command."""

from __future__ import annotations

from pathlib import Path

import click

from .options import FORMATS, STYLES


def default_out(source: Path) -> Path:
    """DIR/figures for a run or store directory; TABLE-figures beside a results table."""
    return source / "figures" if source.is_dir() else source.with_name(f"{source.stem}-figures")


def _names(values: tuple[str, ...]) -> list[str]:
    # --only a --only b and --only a,b both work.
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command("figures")
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory [default: DIR/figures].")
@click.option("--only", multiple=True, metavar="NAME", help="Draw only these figures (repeat, or separate by commas).")
@click.option("--style", type=click.Choice(STYLES), default="paper", show_default=True, help="Style sheet.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="png", show_default=True, help="Image format.")
@click.option("--runs", multiple=True, metavar="GLOB",
              help="Only the runs whose name matches (repeat, or separate by commas), e.g. 'r5-*'.")
@click.option("--split", metavar="REGEX",
              help="One figure set per group of runs, in OUT/GROUP: the part of each run name the regular "
                   "expression matches at its start (its first group if it has one), e.g. 'r\\d+'.")
@click.option("--list", "list_only", is_flag=True, help="List the figures and the data each needs, then exit.")
def figures(source: Path | None, out: Path | None, only: tuple[str, ...], style: str, fmt: str,
            runs: tuple[str, ...], split: str | None, list_only: bool) -> None:
    """Draw the figures of SOURCE (a run directory, a store or sweep directory, or a results
    table written by `neurocl results`), each with the CSV of the numbers it plots and a
    manifest.json of sha256 sums. Same inputs, same bytes."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    from .inputs import InputError
    from .registry import figures as registered

    if list_only:
        for name, spec in registered().items():
            per_run = " (one per run)" if spec.per_run else ""
            click.echo(f"{name:20s} {spec.title}{per_run}; needs {spec.needs}")
        return
    if source is None:
        raise click.UsageError("missing SOURCE (a run directory, a store, or a results table)")
    from ..store import Store

    if Store(source).runs_dir.is_dir():
        from ..migrate import open_store_and_say

        open_store_and_say(source)  # an older neurocl's store: figures under today's run ids
    out = out or default_out(source)
    patterns = _names(runs) or None
    try:
        if split:
            from .build import run_groups
            from .inputs import read_raw

            raw = read_raw(source)  # once for every group
            for key, names in run_groups(raw, split, patterns).items():
                click.echo(f"== {key}: {', '.join(names)}")
                _draw(source, out / key, only, style, fmt, names, raw)
        else:
            _draw(source, out, only, style, fmt, patterns)
    except (InputError, ValueError) as err:
        raise click.ClickException(str(err)) from None


def _draw(source: Path, out: Path, only, style: str, fmt: str, runs: list[str] | None, raw=None) -> None:
    from .build import generate

    manifest = generate(source, out, only=_names(only) or None, style=style, fmt=fmt, runs=runs, raw=raw)
    for entry in manifest["figures"]:
        click.echo(f"wrote   {out / entry['files'][0]['path']}")
    for s in manifest["skipped"]:
        click.echo(f"skipped {s['name']}: {s['reason']}")
    n_runs = len(manifest["inputs"])
    plural = "s" if n_runs != 1 else ""
    click.echo(f"manifest {out / 'manifest.json'} ({len(manifest['figures'])} figures from {n_runs} run{plural})")
