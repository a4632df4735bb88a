"""``neurocl results DIR``: every finished run of a store as one tidy table (CSV or Parquet)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("results")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), help="Default: from --out's suffix, else csv.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Output file ('-' for stdout, csv only). Default: STORE/results.<format>.")
@click.option("--include-unfinished", is_flag=True, help="Also the metrics of runs that are not DONE (if they have any).")
@click.option("--summary", is_flag=True,
              help="Instead: final average accuracy, BWT and forgetting, mean +- sd over the runs of each condition "
                   "(the settings that differ between runs, the seed aside).")
@click.option("--by", multiple=True, metavar="KEY",
              help="With --summary: group by these configuration keys (e.g. rules.0.name), not by all that differ.")
def results(store: str, fmt: str | None, out_file: str | None, include_unfinished: bool, summary: bool,
            by: tuple[str, ...]) -> None:
    """One row per run and metric, the configuration flattened into dotted config.* columns.

    The same DataFrame as ``neurocl.results.load(STORE)``. With --summary, one row per condition
    (``neurocl.results.condition_table(STORE)``), printed.
    """
    from .migrate import open_store_and_say
    from .results import load

    open_store_and_say(store)
    if summary:
        _print_conditions(store, list(by) or None)
        return
    if fmt is None:
        fmt = "parquet" if out_file and Path(out_file).suffix == ".parquet" else "csv"
    if out_file == "-" and fmt == "parquet":
        raise click.BadParameter("parquet cannot go to stdout; give a file", param_hint="--out")
    df = load(store, include_unfinished=include_unfinished)
    if out_file == "-":
        df.to_csv(sys.stdout, index=False)
        return
    target = Path(out_file) if out_file else Path(store) / f"results.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(target, index=False)
    else:
        df.to_parquet(target, index=False)
    n_runs = df["run_id"].nunique() if len(df) else 0
    click.echo(f"wrote {len(df)} rows ({n_runs} runs, {df.shape[1]} columns) to {target}")


def _print_conditions(store: str, by: list[str] | None) -> None:
    from .results import SUMMARY_METRICS, condition_table

    try:
        table = condition_table(store, by)
    except KeyError as err:
        raise click.BadParameter(str(err.args[0]), param_hint="--by") from None
    if table.empty:
        click.echo(f"{store}: no finished run")
        return
    width = max(len("condition"), *(len(c) for c in table["condition"]))
    head = "".join(f"  {m:>24s}" for m in SUMMARY_METRICS)
    click.echo(f"{'condition':<{width}s}  runs{head}")
    for _, row in table.iterrows():
        cells = "".join(f"  {_mean_sd(row[f'{m} mean'], row[f'{m} sd']):>24s}" for m in SUMMARY_METRICS)
        click.echo(f"{row['condition']:<{width}s}  {row['runs']:4d}{cells}")


def _mean_sd(mean: float, sd: float) -> str:
    if mean != mean:  # nan
        return "-"
    return f"{mean:.4f}" if sd != sd else f"{mean:.4f} +- {sd:.4f}"
