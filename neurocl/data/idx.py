"""Read and write the IDX format used by MNIST-like datasets.

Layout (big-endian): two zero bytes, a type code, the number of dimensions,
one uint32 per dimension, then the data in C order. Files may be gzipped;
gzip is detected from the magic bytes 1f 8b rather than the file name,
because renamed or hand-decompressed copies are common.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype.
TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder(">"): code for code, dt in TYPE_CODES.items()}


def _raw_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        # EOFError: stream cut short; BadGzipFile (an OSError): bad header or CRC.
        raise DataError(f"{path}: not a valid gzip stream ({exc})") from exc


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes (already decompressed); ``name`` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    zero, code, nd = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in TYPE_CODES or nd == 0:
        raise DataError(
            f"{name}: bad magic 0x{magic:08x} (an IDX file starts with 0x0000, a type code "
            f"among {', '.join(f'0x{c:02x}' for c in TYPE_CODES)} and a non-zero dimension count)"
        )
    if ndim is not None and nd != ndim:
        raise DataError(f"{name}: expected {ndim} dimension(s), header says {nd}")
    header_len = 4 + 4 * nd
    if len(data) < header_len:
        raise DataError(
            f"{name}: truncated: header declares {nd} dimensions but the file ends after "
            f"{len(data)} bytes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd))
    dtype = TYPE_CODES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "trailing data"
        shape = "x".join(map(str, dims))
        raise DataError(f"{name}: {what}: header says {shape} = {expected} bytes, found {found}")
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw); raise :class:`DataError` naming the file if bad."""
    path = Path(path)
    return parse_idx(_raw_bytes(path), name=str(path), ndim=ndim)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX; gzip when ``compress`` or (if None) when the name ends in .gz."""
    path = Path(path)
    arr = np.asarray(array)
    big = arr.dtype.newbyteorder(">")
    if big not in _CODE_OF:
        raise DataError(f"{path}: dtype {arr.dtype} has no IDX type code")
    if arr.ndim == 0 or arr.ndim > 255:
        raise DataError(f"{path}: IDX needs 1..255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, _CODE_OF[big], arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=big).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    return path
