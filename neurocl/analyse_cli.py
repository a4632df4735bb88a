"""``neurocl analyse KIND SOURCE``: the registered analyses of stored runs (``analysis.kinds``)."""

from __future__ import annotations

import click


class _Analyses(click.Group):
    """The subcommands are the entries of ANALYSES, loaded when asked for."""

    def list_commands(self, ctx):
        from .analysis.kinds import ANALYSES

        return sorted(ANALYSES.names())

    def get_command(self, ctx, name):
        from .analysis.kinds import ANALYSES

        if name not in ANALYSES:
            raise click.UsageError(ANALYSES.unknown(name), ctx)
        return ANALYSES[name]


@click.group("analyse", cls=_Analyses)
def analyse() -> None:
    """Analyse stored runs: one subcommand per kind of analysis (neurocl analyse KIND --help)."""
