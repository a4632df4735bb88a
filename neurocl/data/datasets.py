"""Load a dataset by name (or IDX directory) into a :class:`RawDataset`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DataError, DatasetNotFound
from .idx import read_idx
from .registry import DATASETS, STANDARD_IDX, FileSpec
from .search import find_files, locate
from .splits import stratified_split

# Fixed so that every run, on every machine, trains and tests on the same images.
SPLIT_SEED = 0
T10K_TEST = 2000  # mnist-t10k: 8000 train / 2000 test
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class RawDataset:
    """Images float32 in [0, 1] shaped (N, H, W) and int64 labels; arrays are read-only.

    ``source`` names the files (or library) and split used, for reports.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @property
    def classes(self) -> list[int]:
        """Sorted class labels present in train or test."""
        return sorted(set(np.unique(self.train_labels)) | set(np.unique(self.test_labels)))

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"RawDataset({self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, image={self.image_shape}, source={self.source!r})"
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    # Loaded datasets are shared through the cache; read-only stops one caller
    # from silently changing another's data.
    a.setflags(write=False)
    return a


def _images(path: Path) -> np.ndarray:
    arr = read_idx(path, ndim=3)
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: expected unsigned-byte images, found {arr.dtype}")
    return arr.astype(np.float32) / np.float32(255.0)


def _labels(path: Path, n_images: int, images_path: Path, name: str) -> np.ndarray:
    arr = read_idx(path, ndim=1)
    if len(arr) != n_images:
        raise DataError(f"{path}: {len(arr)} labels but {images_path.name} has {n_images} images")
    spec = DATASETS.get(name)
    if spec is not None:  # a set neurocl knows: its labels are its classes, nothing else
        bad = np.flatnonzero(~np.isin(arr, spec.classes))
        if len(bad):
            raise DataError(
                f"{path}: label {int(arr[bad[0]])} (example {int(bad[0])}, and {len(bad) - 1} more) is not one of "
                f"{name}'s classes {min(spec.classes)}-{max(spec.classes)}: the file is damaged; "
                f"check it with `neurocl data verify {name}` and fetch it again"
            )
    return arr.astype(np.int64)


def _file_key(files: dict[str, Path]) -> tuple:
    # Keyed on the resolved path and its stat, so a re-fetched file is re-read.
    key = []
    for role, path in files.items():
        st = path.stat()
        key.append((role, str(path.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(key)


def _check_sums(name: str, files: dict[str, Path]) -> None:
    """The .gz files of a dataset neurocl knows must be the published ones (or a known copy):
    a damaged or different file is an error here, not a silently different experiment."""
    from .fetch import check_file

    spec = DATASETS.get(name)
    if spec is None:
        return
    for role, f in roles(spec.files).items():
        path = files.get(role)
        # Decompressed copies come back "unverified": the sums are of the .gz files.
        check = check_file(f, path) if path is not None else None
        if check is not None and check.failed:
            raise DataError(
                f"{path}: not the published {f.filename} ({check.detail}): the file is damaged or not {name}'s; "
                f"fetch it again (`neurocl data fetch {name}`) or check it (`neurocl data verify {name}`)"
            )


@lru_cache(maxsize=8)
def _load_idx_set(name: str, key: tuple, t10k_split: bool) -> RawDataset:
    files = {role: Path(path) for role, path, _, _ in key}
    _check_sums(name, files)  # once per process and file version: the load is cached on the key
    used = ", ".join(str(p) for p in files.values())
    if t10k_split:
        images = _images(files["test-images"])
        labels = _labels(files["test-labels"], len(images), files["test-images"], name)
        tr, te = stratified_split(labels, T10K_TEST, SPLIT_SEED)
        split = f"; stratified split {len(tr)}/{len(te)}, seed {SPLIT_SEED}"
        return RawDataset(
            name,
            _frozen(images[tr]),
            _frozen(labels[tr]),
            _frozen(images[te]),
            _frozen(labels[te]),
            f"{name}: {used}{split}",
        )
    tr_x = _images(files["train-images"])
    tr_y = _labels(files["train-labels"], len(tr_x), files["train-images"], name)
    te_x = _images(files["test-images"])
    te_y = _labels(files["test-labels"], len(te_x), files["test-images"], name)
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(
            f"{files['test-images']}: images are {te_x.shape[1:]}, "
            f"but the training images are {tr_x.shape[1:]}"
        )
    return RawDataset(
        name, _frozen(tr_x), _frozen(tr_y), _frozen(te_x), _frozen(te_y), f"{name}: {used}"
    )


def _bundled_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """scikit-learn's 8x8 digits (images (1797, 8, 8), float64 0-16; targets; its version), read
    from the file it ships, as its load_digits reads it: importing sklearn.datasets takes about
    a second (it imports scipy.stats), longer than a small run's training."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        import sklearn

        bunch = load_digits()
        return bunch.images, bunch.target, sklearn.__version__
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int), importlib.metadata.version("scikit-learn")


@lru_cache(maxsize=1)
def _load_digits() -> RawDataset:
    images, target, version = _bundled_digits()
    images = (images / 16.0).astype(np.float32)
    labels = target.astype(np.int64)
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    tr, te = stratified_split(labels, n_test, SPLIT_SEED)
    source = (
        f"digits: scikit-learn {version} load_digits (bundled); "
        f"stratified split {len(tr)}/{len(te)}, seed {SPLIT_SEED}"
    )
    return RawDataset(
        "digits",
        _frozen(images[tr]),
        _frozen(labels[tr]),
        _frozen(images[te]),
        _frozen(labels[te]),
        source,
    )


def roles(files: tuple[FileSpec, ...]) -> dict[str, FileSpec]:
    """Files keyed by role ("train-images", ...), from their standard names."""
    by_name = {s.filename: role for role, s in STANDARD_IDX.items()}
    return {by_name[f.filename]: f for f in files}


def _is_path(name: str) -> bool:
    return os.sep in name or (os.altsep is not None and os.altsep in name) or name.startswith(".")


@dataclass(frozen=True)
class DatasetShape:
    """What a protocol is checked against: a dataset's class labels and image size."""

    name: str
    classes: tuple[int, ...]
    image_shape: tuple[int, int]


def _locate(name: str | os.PathLike, root=None) -> tuple[str, dict[str, Path], bool]:
    """(name, files by role, whether it is the t10k split) of an IDX dataset; raises
    :class:`DatasetNotFound` when its files are not here."""
    if isinstance(name, os.PathLike) or _is_path(str(name)):
        directory = Path(name).expanduser()
        if not directory.is_dir():
            raise DatasetNotFound(f"{directory}: no such directory (the protocol's dataset.name is a path)")
        files = find_files(directory, STANDARD_IDX)
        if files is None:
            want = ", ".join(s.stem + "[.gz]" for s in STANDARD_IDX.values())
            raise DataError(f"{directory}: an IDX dataset directory must hold {want}")
        return directory.resolve().name, files, False
    spec = DATASETS.get(name)
    if spec is None:
        try:
            files = locate(name, STANDARD_IDX, (), root, fetchable=False)
        except DatasetNotFound as exc:
            raise DatasetNotFound(
                f"{name!r} is not a known dataset ({', '.join(DATASETS)}, or cognitive for NeuroGym "
                f"tasks) and no IDX set of that name was found.\n{exc}"
            ) from None
        return name, files, False
    return name, locate(name, roles(spec.files), spec.dirnames, root), name == "mnist-t10k"


def find_dataset(name: str | os.PathLike, root=None) -> None:
    """Raise :class:`DatasetNotFound` (saying where it looked and how to get it) unless the
    files of dataset ``name`` are here; reads nothing but directory entries. Bundled (digits)
    and generated (cognitive tasks) data need no files."""
    if name != "digits" and not str(name).startswith("cognitive"):
        _locate(name, root)


def dataset_shape(name: str | os.PathLike, root=None) -> DatasetShape:
    """The classes and image size of ``name``: from the registry for the datasets neurocl
    knows (no file is read, so this works where the data is absent), else from the files."""
    spec = None if isinstance(name, os.PathLike) or _is_path(str(name)) else DATASETS.get(name)
    if spec is not None:
        return DatasetShape(spec.name, spec.classes, spec.image_shape)
    raw = load_dataset(name, root)
    return DatasetShape(raw.name, tuple(int(c) for c in raw.classes), raw.image_shape)


def load_dataset(name: str | os.PathLike, root=None) -> RawDataset:
    """Load ``digits``, ``mnist-t10k``, ``mnist``, ``fashion-mnist``, or an IDX directory.

    Named datasets are looked for in ``root``, ``$NEUROCL_DATA``, ``~/.cache/neurocl``
    and ``/usr/share/datasets`` (each ``<dir>/<name>/`` then ``<dir>/``). A path (or an
    unknown name found as ``<dir>/<name>/`` there) must hold the four standard
    MNIST file names, gzipped or not. Results are cached per process. Raises
    :class:`DatasetNotFound` when the files are not here, :class:`DataError` when they are
    unreadable.
    """
    if name == "digits":
        return _load_digits()
    found_name, files, t10k_split = _locate(name, root)
    return _load_idx_set(found_name, _file_key(files), t10k_split)


def clear_cache() -> None:
    """Forget datasets loaded in this process."""
    _load_idx_set.cache_clear()
    _load_digits.cache_clear()
