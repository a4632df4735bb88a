"""``neurocl doctor``: the trainability report on the command line (a table, or JSON)."""

from __future__ import annotations

import json
import sys

import click

# (label, key, format) of the table's rows; a row whose value is absent everywhere is left out.
ROWS = [
    ("NSE (1 = flat singular values)", "nse", ".3f"),
    ("NSE of the E->E block", "nse_ee", ".3f"),
    ("sigma1", "sigma1", ".3g"),
    ("sigma1 / sigma2", "sigma1_over_sigma2", ".3g"),
    ("sigma1 / median sigma", "sigma1_over_median", ".3g"),
    ("spectral radius", "spectral_radius", ".3g"),
    ("sigma1 / spectral radius", "sigma1_over_radius", ".3g"),
    ("|lambda1| - |lambda2|", "eig_gap", ".3g"),
    ("1'W1 / n (uniform gain)", "uniform_gain", ".3g"),
    ("departure from normality", "non_normality", ".3g"),
    ("leak a = dt/tau (mean)", "alpha", ".3g"),
    ("step input reached in the probe", "integration", ".0%"),
    ("leak Jacobian sigma1", "jacobian_sigma1", ".3g"),
    ("leak Jacobian NSE", "jacobian_nse", ".3f"),
    ("E/I balance, weights (mean)", "ei_balance", ".3f"),
    ("E/I balance, weights (sd)", "ei_balance_sd", ".3f"),
    ("E/I balance, currents (mean)", "ei_balance_current", ".3f"),
    ("silent units", "silent_fraction", ".1%"),
    ("silent E units", "silent_fraction_E", ".1%"),
    ("silent I units", "silent_fraction_I", ".1%"),
    ("pinned synapses", "pinned_fraction", ".1%"),
]


@click.command("doctor")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--probe-trials", type=click.IntRange(min=1), default=64, show_default=True,
              help="Trials of the probe batch that drives the network (rates, operating point).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed that builds a preset or model file (a protocol or run uses its own).")
def doctor(source: str, as_json: bool, probe_trials: int, seed: int) -> None:
    """Report how trainable the E/I network of SOURCE is (a model preset, a model or protocol YAML
    file, or a run directory): spectra, E/I balance, silent units and pinned synapses, each problem
    with what to change.

    A run is reported at init (rebuilt from its configuration and seed) and after every task
    whose checkpoint it kept (execution.keep_checkpoints: all keeps each one).
    """
    from .analysis.doctor import DoctorError
    from .analysis.doctor import doctor as run_doctor
    from .analysis.trainability import NotAnEINetwork
    from .config import ConfigError
    from .data.errors import DataError

    try:
        result = run_doctor(source, probe_trials=probe_trials, seed=seed)
    except (ConfigError, DoctorError, NotAnEINetwork, DataError) as err:
        lines = err.messages if isinstance(err, ConfigError) else str(err).splitlines()
        click.echo(f"error: {'; '.join(line.strip() for line in lines if line.strip())}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result, indent=2, allow_nan=False))
        return
    if "init" in result:
        columns = [("init", result["init"])] + [(f"task {t['task']}", t) for t in result["tasks"]]
    else:
        columns = [("value", result)]
    click.echo(f"source: {result['source']}")
    first = columns[0][1]
    click.echo(f"network: {first['kind']}, {first['n']} units ({first['n_exc']} E, {first['n_inh']} I)")
    click.echo(f"probe: {result['probe']}, {first['probe_trials']} trials x {first['probe_steps']} steps")
    click.echo("")
    click.echo(table(columns))
    for name, rep in columns if len(columns) == 1 else [columns[0], columns[-1]]:
        where = "" if len(columns) == 1 else f" ({name})"
        if rep["warnings"]:
            click.echo(f"\nwarnings{where}:")
            for w in rep["warnings"]:
                click.echo(f"  - {w}")
        else:
            click.echo(f"\nno warnings{where}")
    if "init" in result and not result["tasks"]:
        click.echo("\nno checkpoints in this run: only init is reported")


def table(columns: list[tuple[str, dict]]) -> str:
    """The report(s) as rows of quantities and one column per report."""
    keys = [r for r in ROWS if any(rep.get(r[1]) is not None for _, rep in columns)]
    factors = sorted({k for _, rep in columns for k in rep.get("pinned_by_factor", {})})
    cells = [[label] + [_fmt(rep.get(key), f) for _, rep in columns] for label, key, f in keys]
    cells += [[f"  pinned in {k}"] + [_fmt(rep["pinned_by_factor"].get(k), ".1%") for _, rep in columns] for k in factors]
    head = [""] + [name for name, _ in columns]
    width = [max(len(row[i]) for row in cells + [head]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(width[0]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(row))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(row) for row in cells])


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
