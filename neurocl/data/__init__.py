"""Datasets, input encodings and continual-learning tasks.

Quick start::

    from neurocl.data import load_dataset, build_task
    raw = load_dataset("mnist-t10k")          # or "digits", "mnist", "fashion-mnist", a path
    task = build_task(raw, name="0-1", classes=[0, 1], relabel={"offset": "min"})
    task.train.x.shape                        # (N, T, n_in): every model takes this
"""

# The names below load on first use: a protocol's checks read the dataset and transform
# registries without importing torch through the task builder.
from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {
    "DATASETS": ".registry",
    "DataError": ".errors",
    "DatasetNotFound": ".errors",
    "DatasetShape": ".datasets",
    "ENCODINGS": ".encodings",
    "FileCheck": ".fetch",
    "NORMALISATIONS": ".encodings",
    "RawDataset": ".datasets",
    "Task": ".tasks",
    "TaskSplit": ".tasks",
    "build_task": ".tasks",
    "cache_dir": ".search",
    "clear_cache": ".datasets",
    "dataset_shape": ".datasets",
    "encode": ".encodings",
    "fetch_dataset": ".fetch",
    "find_dataset": ".datasets",
    "load_dataset": ".datasets",
    "normalise_images": ".encodings",
    "parse_idx": ".idx",
    "pixel_permutation": ".transforms",
    "read_idx": ".idx",
    "relabel_map": ".transforms",
    "rotate_images": ".transforms",
    "search_dirs": ".search",
    "sha256_file": ".fetch",
    "standardisation_stats": ".encodings",
    "stratified_sample": ".splits",
    "stratified_split": ".splits",
    "verify_dataset": ".fetch",
    "write_idx": ".idx",
})

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ loads them
    from .datasets import DatasetShape, RawDataset, clear_cache, dataset_shape, find_dataset, load_dataset
    from .encodings import ENCODINGS, NORMALISATIONS, encode, normalise_images, standardisation_stats
    from .errors import DataError, DatasetNotFound
    from .fetch import FileCheck, fetch_dataset, sha256_file, verify_dataset
    from .idx import parse_idx, read_idx, write_idx
    from .registry import DATASETS
    from .search import cache_dir, search_dirs
    from .splits import stratified_sample, stratified_split
    from .tasks import Task, TaskSplit, build_task
    from .transforms import pixel_permutation, relabel_map, rotate_images


__all__ = [
    "DATASETS",
    "ENCODINGS",
    "NORMALISATIONS",
    "DataError",
    "DatasetNotFound",
    "DatasetShape",
    "FileCheck",
    "RawDataset",
    "Task",
    "TaskSplit",
    "build_task",
    "cache_dir",
    "clear_cache",
    "dataset_shape",
    "encode",
    "fetch_dataset",
    "find_dataset",
    "load_dataset",
    "normalise_images",
    "parse_idx",
    "pixel_permutation",
    "read_idx",
    "relabel_map",
    "rotate_images",
    "search_dirs",
    "sha256_file",
    "standardisation_stats",
    "stratified_sample",
    "stratified_split",
    "verify_dataset",
    "write_idx",
]
