"""The choices the figures command offers, importable without matplotlib (the CLI loads fast)."""

from __future__ import annotations

from pathlib import Path

# Style sheets shipped as package data (neurocl/styles/*.mplstyle): each file is a choice.
STYLES_DIR = Path(__file__).resolve().parent.parent / "styles"
STYLES = tuple(sorted(p.stem for p in STYLES_DIR.glob("*.mplstyle")))
FORMATS = ("png", "pdf", "svg")
