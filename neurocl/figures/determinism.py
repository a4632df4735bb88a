"""Byte-identical output: the same inputs give the same PNG, PDF, SVG and CSV bytes.

Matplotlib's renderers are deterministic once three things are pinned: the metadata it would
stamp (creation date, software version), the salt of the ids it writes into SVG, and the
sizes and resolution (fixed in the style sheets, never taken from the screen). Fonts come
from the DejaVu family bundled with matplotlib, so no system font can change the glyphs.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import atomic_write_bytes
from .options import FORMATS

if TYPE_CHECKING:  # the command imports this module before it needs matplotlib
    import pandas as pd
    from matplotlib.figure import Figure

# Applied on top of every style sheet.
RC = {
    "svg.hashsalt": "neurocl",  # otherwise a fresh random salt per run names the SVG ids
    "svg.fonttype": "path",  # text as paths: no dependence on the viewer's fonts
    "pdf.fonttype": 42,  # embedded TrueType subsets
    "font.family": "DejaVu Sans",
}

# Every key matplotlib would fill with a date or its version, set to None to leave it out.
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": None, "Date": None},
}


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    buf = io.BytesIO()
    # dpi from the style sheet (savefig.dpi), never 'figure': the screen must not matter.
    fig.savefig(buf, format=fmt, metadata=METADATA[fmt])
    return buf.getvalue()


def csv_bytes(data: pd.DataFrame) -> bytes:
    # Python's shortest round-trip float repr and "\n" line ends on every platform.
    return data.to_csv(index=False, lineterminator="\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> str:
    """Write atomically; return the file's sha256."""
    atomic_write_bytes(path, data)
    return sha256(data)
