"""Download datasets with SHA-256 verification, and check local copies.

A download streams into a temporary file in the target directory and is renamed
into place only once its checksum matches, so an interrupted or corrupted
download never leaves a file that a later run would load.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .registry import DatasetSpec, FileSpec, get_spec
from .search import cache_dir, candidate_dirs, find_file

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "neurocl-data-fetch (urllib)"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def mirrors_for(
    spec: DatasetSpec, override: list[str] | tuple[str, ...] | None = None
) -> list[str]:
    """``override`` (``--mirror``), else ``$NEUROCL_MIRROR`` (comma/space separated), else the
    built-in list."""
    if override:
        return list(override)
    env = os.environ.get("NEUROCL_MIRROR", "").strip()
    if env:
        return [m for m in re.split(r"[,\s]+", env) if m]
    return list(spec.mirrors)


def _url(mirror: str, filename: str) -> str:
    return mirror if mirror.endswith(filename) else mirror.rstrip("/") + "/" + filename


def download(
    url: str, dest: Path, spec: FileSpec, timeout: float = DEFAULT_TIMEOUT, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest`` (a file path) if its SHA-256 matches ``spec``; else raise.

    Nothing is left at ``dest`` or beside it when this raises.
    """
    if spec.sha256 is None:
        raise DataError(
            f"{spec.filename}: no published SHA-256 is known, so neurocl will not download it "
            "(an unverified file could silently differ from the one other results used)"
        )
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        got = 0
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=spec.filename,
                disable=not progress,
                leave=False,
            ) as bar:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    got += len(block)
                    if spec.size is not None and got > spec.size:
                        raise DataError(
                            f"{url}: server sent more than the expected {spec.size} bytes"
                        )
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
            if total is not None and got != total:
                raise DataError(f"{url}: connection closed early: got {got} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise DataError(
                f"{url}: checksum mismatch for {spec.filename}: expected SHA-256 "
                f"{spec.sha256}, got {digest} ({got} bytes); the file was discarded"
            )
        # mkstemp makes the file private (0600); a dataset cache is often shared by a lab.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return dest
    except http.client.IncompleteRead as exc:
        raise DataError(
            f"{url}: connection closed early: got {got + len(exc.partial)} bytes, "
            f"{exc.expected} more expected"
        ) from exc
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataError(f"{url}: cannot connect ({exc.reason})") from exc
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise DataError(f"{url}: download failed ({type(exc).__name__}: {exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch_dataset(
    name: str,
    dest: str | Path | None = None,
    mirrors: list[str] | tuple[str, ...] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download dataset ``name`` into ``dest`` (default ``~/.cache/neurocl/NAME``); return ``dest``.

    Files already there with the right checksum are kept. Each file tries every
    mirror in order; if all fail, the error lists what each one said.
    """
    spec = get_spec(name)
    if not spec.files:
        raise DataError(f"{name!r} is bundled with scikit-learn; there is nothing to fetch")
    dest = Path(dest).expanduser() if dest is not None else cache_dir() / name
    unknown = [f.filename for f in spec.files if f.sha256 is None]
    if unknown:
        raise DataError(
            f"{name!r}: no published SHA-256 is known for {', '.join(unknown)}, so neurocl "
            "will not download it (an unverified file could differ from the one others used)"
        )
    urls = mirrors_for(spec, mirrors)
    if not urls:
        raise DataError(f"no mirror to fetch {name!r} from")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for f in spec.files:
            target = dest / f.filename
            if target.is_file() and sha256_file(target) == f.sha256:
                continue
            errors = []
            for mirror in urls:
                try:
                    download(_url(mirror, f.filename), target, f, timeout, progress)
                    break
                except DataError as exc:
                    errors.append(str(exc))
            else:
                raise DataError(
                    f"could not fetch {f.filename} for {name!r}; every mirror failed:\n  "
                    + "\n  ".join(errors)
                    + f"\nWithout internet access here: run `neurocl data fetch {name}` on a machine "
                    f"that has it and copy the folder it prints to {dest}, or set NEUROCL_DATA to "
                    f"a directory that holds {name}/ (or use --mirror URL)."
                )
        write_sums(dest, spec.files)
    finally:
        # Leave no empty directory behind a failed first fetch.
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
    return dest


SUMS_FILE = "SHA256SUMS"


def write_sums(directory: Path, files: tuple[FileSpec, ...]) -> Path:
    """``SHA256SUMS`` beside fetched files, in ``sha256sum`` format, so a copy of the
    directory can be checked anywhere with ``sha256sum -c SHA256SUMS``."""
    text = "".join(f"{f.sha256}  {f.filename}\n" for f in files)
    path = directory / SUMS_FILE
    tmp = directory / f".{SUMS_FILE}.part"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one local file against the published SHA-256."""

    filename: str
    path: Path | None
    status: str  # "ok", "mismatch", "missing", "invalid" (a sums file that cannot be read) or "unverified"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("mismatch", "missing", "invalid")


def check_file(spec: FileSpec, path: Path) -> FileCheck:
    """``path`` against the published SHA-256 of ``spec`` (or a known copy's)."""
    if not path.name.endswith(".gz"):
        # Published checksums are of the .gz files; a decompressed copy cannot be checked.
        return FileCheck(spec.filename, path, "unverified", "uncompressed copy; sums are for .gz")
    if spec.sha256 is None:
        return FileCheck(spec.filename, path, "unverified", "no published SHA-256 known")
    digest = sha256_file(path)
    if digest == spec.sha256:
        return FileCheck(spec.filename, path, "ok", "matches the published SHA-256")
    if digest in spec.also_known:
        return FileCheck(spec.filename, path, "ok", f"matches {spec.also_known[digest]}")
    return FileCheck(spec.filename, path, "mismatch", f"expected {spec.sha256}, got {digest}")


def verify_dataset(name: str, root=None, directory: str | Path | None = None) -> list[FileCheck]:
    """Recompute the SHA-256 of each file of ``name`` where it is found (or in ``directory``)."""
    spec = get_spec(name)
    if not spec.files:
        raise DataError(f"{name!r} is bundled with scikit-learn; there are no files to verify")
    if directory is not None:
        dirs = [Path(directory).expanduser()]
    else:
        dirs = [d for d, _ in candidate_dirs(name, spec.dirnames, root)]
    found_in = [(d, [find_file(d, f) for f in spec.files]) for d in dirs]
    # The directory load_dataset would use (first complete one); failing that, the
    # first partial copy, so that the report says which files it lacks.
    chosen = next((x for x in found_in if all(x[1])), None) or next(
        (x for x in found_in if any(x[1])), None
    )
    if chosen is None:
        return [
            FileCheck(f.filename, None, "missing", "not found in any search directory")
            for f in spec.files
        ]
    d, paths = chosen
    checks = [
        check_file(f, p) if p is not None else FileCheck(f.filename, None, "missing", f"not in {d}")
        for f, p in zip(spec.files, paths, strict=True)
    ]
    return checks + _check_sums_file(d / SUMS_FILE)


_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def _check_sums_file(path: Path) -> list[FileCheck]:
    """A ``SHA256SUMS`` beside the files (as fetch writes it) must be readable and right too:
    a copy whose sums file disagrees with its files is not the copy it claims to be."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        return [FileCheck(SUMS_FILE, path, "invalid", f"cannot be read ({err})")]
    checks = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _SUMS_LINE.match(line.strip())
        if m is None:
            checks.append(FileCheck(SUMS_FILE, path, "invalid", f"line {n} is not '<sha256>  <file name>'"))
            continue
        digest, name = m.group(1).lower(), m.group(2)
        target = path.parent / name
        if not target.is_file():
            checks.append(FileCheck(name, None, "missing", f"listed in {path} but not there"))
        elif sha256_file(target) != digest:
            checks.append(FileCheck(name, target, "mismatch", f"{SUMS_FILE} line {n} says {digest}"))
    if not checks and not any(line.strip() for line in lines):
        checks.append(FileCheck(SUMS_FILE, path, "invalid", "is empty"))
    return checks
