"""Figures regenerated from stored results, byte for byte.

``neurocl figures DIR`` draws every registered figure (:mod:`.registry`) from the tidy results
table and the run artefacts, never re-running training. Each figure function is pure: it takes
the table (and a read-only :class:`~.artifacts.Artifacts`) and returns the Figure with the
DataFrame of exactly the numbers it plots. :func:`generate` writes them with a manifest.
"""

from __future__ import annotations

# Loaded on first use: `neurocl` imports the command module at start-up, and every other
# command should not pay for matplotlib and pandas.
_EXPORTS = {
    "generate": "build", "figures": "registry", "register": "registry", "Output": "registry", "Skip": "registry",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
