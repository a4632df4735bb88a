"""Where datasets are looked for, and finding a dataset's files there."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import DataError, DatasetNotFound
from .registry import DATASETS, FileSpec

DEBIAN_DATASETS = Path("/usr/share/datasets")


def cache_dir() -> Path:
    """``~/.cache/neurocl``: where ``neurocl data fetch`` puts datasets by default."""
    return Path.home() / ".cache" / "neurocl"


def search_dirs(root: str | Path | Sequence[str | Path] | None = None) -> list[tuple[Path, str]]:
    """Directories to search, in order, each with where it came from.

    ``root`` (explicit, e.g. from a protocol) first, then ``$NEUROCL_DATA`` (an
    ``os.pathsep``-separated list), then the fetch cache, then Debian's
    ``/usr/share/datasets`` (``apt-get install dataset-fashion-mnist``).
    """
    out: list[tuple[Path, str]] = []
    if root is not None:
        roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
        out += [(Path(r).expanduser(), "root") for r in roots]
    env = os.environ.get("NEUROCL_DATA", "")
    out += [(Path(p).expanduser(), "$NEUROCL_DATA") for p in env.split(os.pathsep) if p]
    out += [(cache_dir(), "cache"), (DEBIAN_DATASETS, "Debian datasets")]
    seen: set[Path] = set()
    unique = []
    for path, origin in out:
        if path not in seen:
            seen.add(path)
            unique.append((path, origin))
    return unique


def _variants(spec: FileSpec) -> list[str]:
    stem = spec.stem
    # Some unzip tools restore the name stored in the gzip header, "t10k-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def find_file(directory: Path, spec: FileSpec) -> Path | None:
    """The file for ``spec`` in ``directory`` (gzipped or not), or None."""
    for name in _variants(spec):
        path = directory / name
        if path.is_file():
            return path
        if path.is_dir():  # a folder where the file should be (an unzip gone wrong, say)
            raise DataError(f"{path}: is a directory, not the file {spec.filename}; remove it and fetch the file again")
    return None


def find_files(directory: Path, specs: dict[str, FileSpec]) -> dict[str, Path] | None:
    """All of ``specs`` found in ``directory``, by role, or None if any is missing."""
    found = {role: find_file(directory, spec) for role, spec in specs.items()}
    if any(p is None for p in found.values()):
        return None
    return found  # type: ignore[return-value]


def candidate_dirs(
    name: str, dirnames: Iterable[str], root=None, bare: bool = True
) -> list[tuple[Path, str]]:
    """Every directory that may hold dataset ``name``: each search dir's sub-dirs, then
    (if ``bare``) the search dir itself."""
    subs = list(dict.fromkeys([*dirnames, name])) + ([""] if bare else [])
    return [(base / sub, origin) for base, origin in search_dirs(root) for sub in subs]


def locate(
    name: str,
    specs: dict[str, FileSpec],
    dirnames: Iterable[str] = (),
    root=None,
    fetchable: bool = True,
) -> dict[str, Path]:
    """Find the files of dataset ``name``; raise a :class:`DataError` listing where we looked.

    A dataset that neurocl does not know (not ``fetchable``) must sit in its own
    ``<dir>/<name>/``: files lying bare in a search dir could be any IDX set.
    """
    tried = candidate_dirs(name, dirnames, root, bare=fetchable)
    for directory, _ in tried:
        found = find_files(directory, specs)
        if found is not None:
            return found
    wanted = ", ".join(s.stem + "[.gz]" for s in specs.values())
    lines = "\n".join(f"  {d}  ({origin})" for d, origin in tried)
    how = (
        f"Get it with `neurocl data fetch {name}` (saves to {cache_dir() / name}), or set "
        "NEUROCL_DATA to a directory that holds it."
        if fetchable
        else "Set NEUROCL_DATA, or pass a root, to a directory that holds it."
    )
    package = DATASETS[name].debian_package if name in DATASETS else None
    if package:
        how += f" On Debian or Ubuntu, `apt-get install {package}` puts it in {DEBIAN_DATASETS}."
    raise DatasetNotFound(
        f"dataset {name!r} not found: no directory holds all of {wanted}.\n"
        f"Searched, in order:\n{lines}\n{how}"
    )
