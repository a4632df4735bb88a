"""``neurocl data list | fetch NAME | verify NAME``."""

from __future__ import annotations

from pathlib import Path

import click

from .datasets import roles
from .errors import DataError
from .fetch import DEFAULT_TIMEOUT, fetch_dataset, verify_dataset
from .registry import DATASETS, get_spec
from .search import candidate_dirs, find_files


def _size(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError


def _where(name: str, root) -> tuple[Path, int] | None:
    spec = DATASETS[name]
    for d, _ in candidate_dirs(name, spec.dirnames, root):
        files = find_files(d, roles(spec.files))
        if files is not None:
            return d, sum(p.stat().st_size for p in files.values())
    return None


@click.group(name="data")
def data() -> None:
    """List, download and verify datasets."""


@data.command("list")
@click.option("--root", type=click.Path(file_okay=False), help="Search this directory first.")
def list_cmd(root: str | None) -> None:
    """Show each named dataset, whether and where it is found, and its size."""
    for name, spec in DATASETS.items():
        if not spec.files:
            click.echo(f"{name:14s} bundled      scikit-learn            {spec.description}")
            continue
        found = _where(name, root)
        if found is None:
            total = sum(f.size or 0 for f in spec.files)
            click.echo(
                f"{name:14s} not found    {_size(total) + ' to download':23s} {spec.description}"
            )
        else:
            directory, nbytes = found
            click.echo(f"{name:14s} found        {_size(nbytes):23s} {directory}")


@data.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    help="Directory to save into (default ~/.cache/neurocl/NAME).",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Base URL to download from, instead of $NEUROCL_MIRROR or the built-in "
    "list; repeat to try several in order.",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the server at each step.",
)
@click.option(
    "--if-missing",
    is_flag=True,
    help="Download only the datasets that no search directory holds yet "
    "(--root, $NEUROCL_DATA, the cache, /usr/share/datasets).",
)
@click.option("--root", type=click.Path(file_okay=False), help="With --if-missing: search this directory first.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def fetch_cmd(
    names: tuple[str, ...],
    dest: str | None,
    mirrors: tuple[str, ...],
    timeout: float,
    if_missing: bool,
    root: str | None,
    progress: bool,
) -> None:
    """Download datasets NAME..., verifying each file's SHA-256."""
    if dest is not None and len(names) > 1:
        raise click.UsageError("--dest takes one dataset at a time")
    for name in names:
        try:
            get_spec(name)
        except DataError as exc:
            raise click.ClickException(str(exc)) from None
    for name in names:
        if if_missing:
            found = _where(name, root) if DATASETS[name].files else ("scikit-learn", 0)
            if found is not None:
                click.echo(f"{name}: found in {found[0]}")
                continue
        try:
            where = fetch_dataset(name, dest, list(mirrors) or None, timeout, progress)
        except DataError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{name}: verified, in {where}")


@data.command("verify")
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), help="Search this directory first.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Check the files in this directory instead of searching.",
)
def verify_cmd(name: str, root: str | None, directory: str | None) -> None:
    """Recompute SHA-256 of NAME's local files; exit 1 on a mismatch or missing file."""
    try:
        checks = verify_dataset(name, root, directory)
    except DataError as exc:
        raise click.ClickException(str(exc)) from exc
    for c in checks:
        where = c.path if c.path is not None else c.filename
        click.echo(f"{c.status.upper():10s} {where}  ({c.detail})")
    if any(c.failed for c in checks):
        raise click.ClickException(
            f"{name}: {sum(c.failed for c in checks)} file(s) failed; "
            f"re-download with `neurocl data fetch {name}`"
        )
