"""``neurocl store migrate DIR``: bring a results store of an older neurocl to today's run ids."""

from __future__ import annotations

import sys

import click


@click.group("store")
def store() -> None:
    """Maintain a results store."""


@store.command("migrate")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
def migrate_cmd(out: str) -> None:
    """Rename the runs of OUT to today's run ids (any command that opens a store also does this).

    Finished runs stay finished and killed runs resume; every rename is logged in
    OUT/migrations.jsonl. Runs held by a running process are left for a later migrate.
    """
    from .migrate import RUN_ID_FORMAT, describe, migrate_store

    report = migrate_store(out)
    text = describe(report, out)
    click.echo(text or f"{out}: every run already has its run id (format {RUN_ID_FORMAT})")
    if not report.complete:
        sys.exit(1)
