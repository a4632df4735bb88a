"""IDX reading, dataset loading and the search path."""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from neurocl.data import DataError, clear_cache, load_dataset, read_idx, search_dirs, write_idx


def idx_bytes(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def write_set(directory, n_train=6, n_test=4, fill=0, gz=True):
    """A tiny MNIST-like set; image pixel (0, 0) holds ``fill`` so tests can tell sets apart."""
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 5, 4), dtype=np.uint8)
        images[:, 0, 0] = fill
        images[:, 4, 3] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n, dtype=np.uint8) % 3)
    return directory


# --- the IDX format -------------------------------------------------------------------------


def test_reads_hand_built_header(tmp_path):
    # Written byte by byte from the format description, not with write_idx.
    data = np.arange(24, dtype=np.uint8)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (2, 3, 4), data.tobytes()))
    np.testing.assert_array_equal(read_idx(path), data.reshape(2, 3, 4))
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_idx(gz), data.reshape(2, 3, 4))


def test_big_endian_multibyte_types(tmp_path):
    path = tmp_path / "shorts"
    path.write_bytes(idx_bytes(0x0B, (3,), struct.pack(">3h", -2, 258, 7)))
    np.testing.assert_array_equal(read_idx(path), [-2, 258, 7])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx", "a-idx.gz"])
def test_round_trip(tmp_path, dtype, name):
    arr = (np.arange(60).reshape(3, 4, 5) % 120).astype(dtype)
    path = write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)


def test_gzip_detected_by_magic_not_name(tmp_path):
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (3,), b"\x01\x02\x03")))
    np.testing.assert_array_equal(read_idx(path), [1, 2, 3])


def test_bad_magic_names_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x03" + bytes(20))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: bad magic 0x01020803"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(0x07, (1,), b"\x00"))
    with pytest.raises(DataError, match=r"f: bad magic 0x00000701"):
        read_idx(path)


def test_truncated_data_says_how_much(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    full = idx_bytes(0x08, (10, 28, 28), bytes(10 * 28 * 28))
    path.write_bytes(gzip.compress(full[: 16 + 1234]))
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "truncated: header says 10x28x28 = 7840 bytes, found 1234" in msg


def test_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match=r"short: truncated: header declares 3 dimensions"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(0x08, (3,), b"\x01\x02\x03\x04"))
    with pytest.raises(DataError, match=r"long: trailing data: header says 3 = 3 bytes, found 4"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    blob = gzip.compress(idx_bytes(0x08, (5000,), np.random.default_rng(0).bytes(5000)))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: not a valid gzip stream"):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    path = tmp_path / "x.gz"
    blob = bytearray(gzip.compress(idx_bytes(0x08, (5000,), bytes(5000))))
    blob[-6] ^= 0xFF  # inside the CRC32 trailer
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"x\.gz: not a valid gzip stream"):
        read_idx(path)


def test_wrong_dimension_count(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels: expected 3 dimension\(s\), header says 1"):
        read_idx(path, ndim=3)


# --- IDX directories ------------------------------------------------------------------------


def test_idx_directory_by_path(isolated):
    d = write_set(isolated / "kmnist", fill=51, gz=False)
    raw = load_dataset(str(d))
    assert raw.name == "kmnist"
    assert raw.train_images.shape == (6, 5, 4) and raw.test_images.shape == (4, 5, 4)
    assert raw.train_images.dtype == np.float32 and raw.train_labels.dtype == np.int64
    assert raw.train_images[0, 0, 0] == pytest.approx(0.2) and raw.train_images[0, 4, 3] == 1.0
    np.testing.assert_array_equal(raw.test_labels, [0, 1, 2, 0])
    assert str(d / "train-images-idx3-ubyte") in raw.source
    with pytest.raises(ValueError):
        raw.train_images[0, 0, 0] = 1.0  # shared through the cache, so read-only


def test_images_with_wrong_dimensions_name_the_file(isolated):
    d = write_set(isolated / "bad")
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: expected 3 dimension"):
        load_dataset(str(d))


def test_label_count_must_match_images(isolated):
    d = write_set(isolated / "bad")
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: 3 labels but .* 4 images"):
        load_dataset(str(d))


def test_directory_missing_files(isolated):
    d = isolated / "empty"
    d.mkdir()
    with pytest.raises(DataError, match="must hold train-images-idx3-ubyte"):
        load_dataset(str(d))


# --- the search path ------------------------------------------------------------------------


def test_search_order_root_env_cache(isolated, monkeypatch):
    # Decompressed tiny stand-ins: .gz files named as MNIST's would have to be MNIST's (their
    # published sums are checked when a known dataset loads).
    root = write_set(isolated / "root" / "mnist", fill=10, gz=False)
    write_set(isolated / "env" / "mnist", fill=20, gz=False)
    # Files lying directly in the cache dir (not in cache/mnist/) are accepted too.
    cache = write_set(isolated / "home" / ".cache" / "neurocl", fill=30, gz=False)
    monkeypatch.setenv(
        "NEUROCL_DATA", os.pathsep.join([str(isolated / "nothing"), str(isolated / "env")])
    )

    def pixel(**kw):
        clear_cache()
        return round(float(load_dataset("mnist", **kw).train_images[0, 0, 0]) * 255)

    assert pixel(root=isolated / "root") == 10
    assert pixel() == 20
    monkeypatch.delenv("NEUROCL_DATA")
    assert pixel() == 30
    assert str(cache) in load_dataset("mnist").source
    assert [p for p, _ in search_dirs(root)][:2] == [root, isolated / "home" / ".cache" / "neurocl"]


def test_not_found_lists_every_directory_and_the_fix(isolated, monkeypatch):
    monkeypatch.setenv("NEUROCL_DATA", str(isolated / "a") + os.pathsep + str(isolated / "b"))
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", root=isolated / "r")
    msg = str(err.value)
    for d in ("r", "a", "b", "home/.cache/neurocl", "debian"):
        assert str(isolated / d / "fashion-mnist") in msg
    assert (
        msg.index(str(isolated / "r"))
        < msg.index(str(isolated / "a"))
        < msg.index(str(isolated / "home"))
    )
    assert "neurocl data fetch fashion-mnist" in msg


def test_unknown_name_is_found_only_in_its_own_directory(isolated, monkeypatch):
    monkeypatch.setenv("NEUROCL_DATA", str(isolated / "data"))
    write_set(isolated / "data", fill=5)  # bare files: could be any set
    with pytest.raises(DataError, match="not a known dataset"):
        load_dataset("kmnist")
    write_set(isolated / "data" / "kmnist", fill=7)
    raw = load_dataset("kmnist")
    assert round(float(raw.train_images[0, 0, 0]) * 255) == 7


def test_cache_sees_a_replaced_file(isolated):
    d = write_set(isolated / "set", fill=1)
    assert round(float(load_dataset(str(d)).train_images[0, 0, 0]) * 255) == 1
    write_set(d, n_train=8, fill=2)
    assert load_dataset(str(d)).train_images.shape[0] == 8


# --- the real files -------------------------------------------------------------------------


def test_real_t10k_files(t10k_dir):
    sums = dict(
        line.split()[::-1] for line in (t10k_dir / "SHA256SUMS").read_text().splitlines() if line
    )
    assert set(sums) == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for name, digest in sums.items():
        assert hashlib.sha256((t10k_dir / name).read_bytes()).hexdigest() == digest
    images = read_idx(t10k_dir / "t10k-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(t10k_dir / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    assert images.max() == 255 and images.min() == 0


def test_real_t10k_found_through_neurocl_data(t10k_dir, monkeypatch):
    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    raw = load_dataset("mnist-t10k")
    assert str((t10k_dir / "t10k-images-idx3-ubyte.gz").resolve()) in raw.source
    assert len(raw.train_labels) + len(raw.test_labels) == 10000
    assert raw.train_images.shape[1:] == (28, 28)
    assert 0.0 == raw.train_images.min() and raw.train_images.max() == 1.0
