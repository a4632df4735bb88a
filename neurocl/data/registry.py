"""What each named dataset is made of: file names, sizes, SHA-256 sums and mirrors.

Checksums are of the original ``.gz`` files as distributed. Every sum below was
copied from a published list, never computed from a download we could not
check, so that ``fetch`` and ``verify`` mean "this is the file the paper used".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..registry import Registry

# The MNIST sums are from tensorflow-datasets, tensorflow_datasets/url_checksums/mnist.txt
# (also listed by many other projects). The two t10k sums agree with
# shared/data/mnist-t10k/SHA256SUMS, which was made from real copies of the files.
# Sizes are the byte counts from the same list.
MNIST_MIRRORS = (
    # torchvision's primary mirror, then the original site (which now often refuses
    # unauthenticated downloads, hence second).
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# The Fashion-MNIST sums are from tensorflow-datasets,
# tensorflow_datasets/url_checksums/fashion_mnist.txt; sizes match the official
# README (train-images 26421880 bytes, ...).
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) ships the four files
# re-gzipped without the original file name in the gzip header, so its bytes differ
# from the published ones (each file is 23-24 bytes shorter: exactly the stored name).
# These sums were computed from the installed package and agree with the package's
# own /var/lib/dpkg/info/dataset-fashion-mnist.md5sums; they identify that copy only.
_DEBIAN_FASHION = "Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1 (re-gzipped)"


@dataclass(frozen=True)
class FileSpec:
    """One distributed file: its standard name, size in bytes and SHA-256 (None if unknown)."""

    filename: str
    size: int | None
    sha256: str | None
    # Other known-good copies: sha256 -> where that copy comes from.
    also_known: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def stem(self) -> str:
        """The name without ``.gz``."""
        return self.filename[:-3] if self.filename.endswith(".gz") else self.filename


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset made of IDX files (or bundled with a library when ``files`` is empty)."""

    name: str
    description: str
    files: tuple[FileSpec, ...] = ()
    mirrors: tuple[str, ...] = ()
    # Sub-directory names a search directory may hold this dataset under.
    dirnames: tuple[str, ...] = ()
    # What a protocol is checked against without reading the files (they may live only on
    # the cluster a sweep runs on): the class labels and the image height and width.
    classes: tuple[int, ...] = tuple(range(10))
    image_shape: tuple[int, int] = (28, 28)
    # A Debian package that installs the files into /usr/share/datasets, if there is one.
    debian_package: str | None = None


MNIST_FILES = {
    "train-images": FileSpec(
        "train-images-idx3-ubyte.gz",
        9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels": FileSpec(
        "train-labels-idx1-ubyte.gz",
        28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test-images": FileSpec(
        "t10k-images-idx3-ubyte.gz",
        1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test-labels": FileSpec(
        "t10k-labels-idx1-ubyte.gz",
        4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

FASHION_FILES = {
    "train-images": FileSpec(
        "train-images-idx3-ubyte.gz",
        26421880,
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        {"b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7": _DEBIAN_FASHION},
    ),
    "train-labels": FileSpec(
        "train-labels-idx1-ubyte.gz",
        29515,
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        {"0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056": _DEBIAN_FASHION},
    ),
    "test-images": FileSpec(
        "t10k-images-idx3-ubyte.gz",
        4422102,
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        {"cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa": _DEBIAN_FASHION},
    ),
    "test-labels": FileSpec(
        "t10k-labels-idx1-ubyte.gz",
        5148,
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        {"8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05": _DEBIAN_FASHION},
    ),
}

# The four standard names of any MNIST-like IDX set (KMNIST, EMNIST splits, ...).
STANDARD_IDX = {role: FileSpec(f.filename, None, None) for role, f in MNIST_FILES.items()}

# Every named dataset; a new one is one DatasetSpec here (files, sums, classes, image size).
DATASETS: Registry = Registry("dataset")
for _spec in (
    DatasetSpec(
        "digits",
        "scikit-learn's bundled 8x8 digits (1797 images), stratified 80/20 split, seed 0",
        image_shape=(8, 8),
    ),
    DatasetSpec(
        "mnist-t10k",
        "the 10,000 MNIST test images, stratified 8000/2000 split, seed 0",
        (MNIST_FILES["test-images"], MNIST_FILES["test-labels"]),
        MNIST_MIRRORS,
        ("mnist-t10k", "mnist", "MNIST/raw"),
    ),
    DatasetSpec(
        "mnist",
        "MNIST, 60,000 train + 10,000 test images of 28x28 digits",
        tuple(MNIST_FILES.values()),
        MNIST_MIRRORS,
        ("mnist", "MNIST/raw"),
    ),
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST, 60,000 train + 10,000 test images of 28x28 clothing",
        tuple(FASHION_FILES.values()),
        FASHION_MIRRORS,
        ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        debian_package="dataset-fashion-mnist",
    ),
):
    DATASETS.register(_spec)


def get_spec(name: str) -> DatasetSpec:
    from .errors import DataError

    if name not in DATASETS:
        raise DataError(f"{DATASETS.unknown(name)}; or give a directory holding the four standard IDX files")
    return DATASETS[name]
