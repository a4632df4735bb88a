"""Named datasets, encodings, task transforms and the Task abstraction."""

import numpy as np
import pytest
import torch

from neurocl.data import (
    DataError,
    TaskSplit,
    build_task,
    clear_cache,
    encode,
    load_dataset,
    pixel_permutation,
    read_idx,
    relabel_map,
    rotate_images,
    standardisation_stats,
    stratified_sample,
)


@pytest.fixture(scope="module")
def t10k(t10k_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEUROCL_DATA", str(t10k_dir.parent))
        yield load_dataset("mnist-t10k")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def class_counts(labels, n_classes=10):
    return np.bincount(np.asarray(labels), minlength=n_classes)


# --- named datasets -------------------------------------------------------------------------


def test_t10k_split_is_disjoint_and_complete(t10k, t10k_dir):
    assert len(t10k.train_labels) == 8000 and len(t10k.test_labels) == 2000
    train = {img.tobytes() for img in t10k.train_images}
    test = {img.tobytes() for img in t10k.test_images}
    assert len(train) == 8000 and len(test) == 2000  # t10k has no duplicate images
    assert not train & test
    all_labels = read_idx(t10k_dir / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(
        class_counts(t10k.train_labels) + class_counts(t10k.test_labels), class_counts(all_labels)
    )


def test_t10k_split_is_stratified(t10k):
    total = class_counts(t10k.train_labels) + class_counts(t10k.test_labels)
    expected = total * 2000 / 10000
    assert np.all(np.abs(class_counts(t10k.test_labels) - expected) < 1)


def test_t10k_split_is_deterministic(t10k):
    clear_cache()
    again = load_dataset("mnist-t10k", root=None)
    assert again is not t10k
    np.testing.assert_array_equal(again.test_labels, t10k.test_labels)
    np.testing.assert_array_equal(again.test_images, t10k.test_images)


def test_digits(digits):
    n = len(digits.train_labels) + len(digits.test_labels)
    assert n == 1797
    assert digits.image_shape == (8, 8) and digits.train_images.dtype == np.float32
    assert digits.train_images.max() == 1.0 and digits.train_images.min() == 0.0
    assert digits.train_labels.dtype == np.int64 and digits.classes == list(range(10))
    assert len(digits.test_labels) == round(0.2 * 1797)
    assert "scikit-learn" in digits.source


def test_stratified_sample_exact_size_and_proportions():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    idx = stratified_sample(labels, 10, seed=3)
    assert len(idx) == 10 and len(set(idx)) == 10
    np.testing.assert_array_equal(class_counts(labels[idx], 3), [5, 3, 2])
    np.testing.assert_array_equal(idx, stratified_sample(labels, 10, seed=3))
    assert not np.array_equal(idx, stratified_sample(labels, 10, seed=4))


# --- encodings ------------------------------------------------------------------------------


def test_encodings_shapes_and_order():
    images = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    flat, rows, pixels = (encode(images, e) for e in ("flat", "rows", "pixels"))
    assert flat.shape == (3, 1, 20) and rows.shape == (3, 4, 5) and pixels.shape == (3, 20, 1)
    for x in (flat, rows, pixels):
        assert x.dtype == torch.float32
    # rows: step t shows image row t; pixels: step k shows pixel k in row-major order.
    np.testing.assert_array_equal(rows[1, 2].numpy(), images[1, 2])
    np.testing.assert_array_equal(pixels[2, 7, 0].item(), images[2, 1, 2])
    np.testing.assert_array_equal(flat[0, 0].numpy(), images[0].ravel())


def test_normalisations():
    train = np.random.default_rng(1).random((50, 4, 4)).astype(np.float32)
    stats = standardisation_stats(train)
    z = encode(train, "flat", "standard", stats)
    assert abs(z.mean().item()) < 1e-5 and abs(z.std(unbiased=False).item() - 1) < 1e-4
    with pytest.raises(DataError, match="needs the training set"):
        encode(train, "flat", "standard")
    edge = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_allclose(encode(edge, "flat", "tanh").numpy().ravel(), [-1, 0, 1])
    np.testing.assert_allclose(encode(edge, "flat", "none").numpy().ravel(), [0, 0.5, 1])
    with pytest.raises(DataError, match="unknown encoding"):
        encode(edge, "columns")


# --- transforms -----------------------------------------------------------------------------


def test_permutation_bijection_and_seeds():
    p = pixel_permutation(3, 784)
    np.testing.assert_array_equal(np.sort(p), np.arange(784))
    np.testing.assert_array_equal(p, pixel_permutation(3, 784))
    assert not np.array_equal(p, pixel_permutation(4, 784))
    assert not np.array_equal(p, np.arange(784))
    np.testing.assert_array_equal(pixel_permutation(None, 784), np.arange(784))
    np.testing.assert_array_equal(pixel_permutation("identity", 784), np.arange(784))


def test_permuted_task_moves_pixels_by_the_seeded_permutation(digits):
    plain = build_task(digits, name="a", encoding="flat")
    perm = build_task(digits, name="b", encoding="flat", permutation_seed=7)
    p = pixel_permutation(7, 64)
    np.testing.assert_array_equal(perm.train.x[:, 0].numpy(), plain.train.x[:, 0].numpy()[:, p])
    assert perm.meta["permutation_seed"] == 7


def test_rotation_90_is_rot90(t10k):
    img = t10k.test_images[0]
    rotated = rotate_images(img[None], 90.0)[0]
    np.testing.assert_allclose(rotated, np.rot90(img), atol=1e-5)
    # Counter-clockwise as displayed: a dot right of the centre ends up above it.
    dot = np.zeros((1, 9, 9), dtype=np.float32)
    dot[0, 4, 7] = 1.0
    assert rotate_images(dot, 90.0)[0, 1, 4] == pytest.approx(1.0)


def test_rotation_task_keeps_non_negative_inputs(digits):
    task = build_task(digits, name="rot", rotation=40.0, encoding="rows")
    plain = build_task(digits, name="plain", encoding="rows")
    assert task.train.x.min() >= 0.0
    assert not torch.allclose(task.train.x, plain.train.x)
    assert task.meta["rotation"] == 40.0


def test_image_transforms_come_from_their_registry(digits, monkeypatch):
    from neurocl.data.errors import DataError
    from neurocl.data.transforms import TASK_TRANSFORMS, ImageTransform
    from neurocl.protocol import TaskConfig

    # The protocol's task keys are the registered transforms (plus the task's own fields).
    assert {"rotation", "permutation_seed"} <= set(TASK_TRANSFORMS)
    assert set(TASK_TRANSFORMS) <= set(TaskConfig.model_fields)
    # A new transform is a function and a registration; build_task applies it, after
    # the ones with a lower order, and records its value.
    invert = ImageTransform("invert", bool | None, lambda x, on: 16.0 - x if on else x, order=30)
    monkeypatch.setitem(TASK_TRANSFORMS._entries, "invert", invert)
    plain = build_task(digits, name="a", encoding="flat")
    inverted = build_task(digits, name="b", encoding="flat", invert=True)
    np.testing.assert_array_equal(inverted.train.x.numpy(), 16.0 - plain.train.x.numpy())
    assert inverted.meta["invert"] is True and plain.meta["invert"] is None
    both = build_task(digits, name="c", encoding="flat", permutation_seed=3, invert=True)
    p = pixel_permutation(3, 64)
    np.testing.assert_array_equal(both.train.x[:, 0].numpy(), 16.0 - plain.train.x[:, 0].numpy()[:, p])
    with pytest.raises(DataError, match="unknown task transform 'rotaton' \\(did you mean 'rotation'"):
        build_task(digits, name="d", rotaton=10.0)


@pytest.mark.parametrize(
    "classes, relabel, expected",
    [
        ([2, 3], None, {2: 2, 3: 3}),
        ([2, 3], {"offset": "min"}, {2: 0, 3: 1}),
        ([4, 7], {"offset": 3}, {4: 1, 7: 4}),
        (list(range(10)), {"floor_division": 2}, {c: c // 2 for c in range(10)}),
        ([7, 9], {"map": {7: 1, 9: 0, 5: 3}}, {7: 1, 9: 0}),
    ],
)
def test_relabel_maps(classes, relabel, expected):
    assert relabel_map(classes, relabel) == expected


@pytest.mark.parametrize(
    "relabel, message",
    [
        ({"map": {7: 0}}, r"no entry for classes \[9\]"),
        ({"offset": 8}, "negative labels"),
        ({"floor_division": 0}, "k >= 1"),
        ({"modulo": 2}, "unknown relabel"),
    ],
)
def test_relabel_errors(relabel, message):
    with pytest.raises(DataError, match=message):
        relabel_map([7, 9], relabel)


def test_task_relabels_and_keeps_original_labels(digits):
    task = build_task(digits, name="even-odd", classes=[0, 1, 2, 3], relabel={"floor_division": 2})
    assert task.classes == [0, 1]
    np.testing.assert_array_equal(task.train.y.numpy(), task.train.labels_orig.numpy() // 2)
    assert set(task.train.labels_orig.tolist()) == {0, 1, 2, 3}
    assert task.meta["classes_orig"] == [0, 1, 2, 3]
    assert task.train.y.dtype == torch.int64


def test_unknown_classes_named(digits):
    with pytest.raises(DataError, match=r"classes \[10, 12\] do not exist in digits"):
        build_task(digits, name="x", classes=[1, 10, 12])


def test_max_train_is_stratified_and_deterministic(t10k):
    a = build_task(t10k, name="a", classes=[3, 5, 8], max_train=90, max_test=30)
    b = build_task(t10k, name="a", classes=[3, 5, 8], max_train=90, max_test=30)
    c = build_task(t10k, name="a", classes=[3, 5, 8], max_train=90, max_test=30, subset_seed=1)
    assert len(a.train) == 90 and len(a.test) == 30
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    counts = class_counts(a.train.labels_orig)[[3, 5, 8]]
    assert counts.min() >= 25 and counts.sum() == 90
    assert a.train.x.shape == (90, 28, 28) and a.n_in == 28 and a.n_steps == 28


def test_standard_normalisation_uses_the_whole_training_set(digits):
    task = build_task(digits, name="s", classes=[0, 1], normalise="standard")
    mean, std = standardisation_stats(digits.train_images)
    assert task.meta["norm_stats"] == (mean, std)
    plain = build_task(digits, name="p", classes=[0, 1])
    torch.testing.assert_close(task.test.x, (plain.test.x - mean) / std)


# --- the Task abstraction -------------------------------------------------------------------


def test_per_step_targets_and_mask_survive_subset():
    n, t = 5, 4
    x = torch.arange(n * t * 2, dtype=torch.float32).reshape(n, t, 2)
    y = torch.arange(n * t).reshape(n, t) % 3
    mask = torch.rand(n, t)
    split = TaskSplit(x, y, mask, labels_orig=torch.arange(n) + 10)
    assert split.per_step and len(split) == n
    for idx in ([3, 1], np.array([3, 1]), torch.tensor([3, 1])):
        sub = split.subset(idx)
        assert len(sub) == 2
        assert torch.equal(sub.y, y[[3, 1]]) and torch.equal(sub.mask, mask[[3, 1]])
        assert torch.equal(sub.x, x[[3, 1]]) and sub.labels_orig.tolist() == [13, 11]
    sub = split.subset(np.array([True, False, False, True, False]))
    assert sub.labels_orig.tolist() == [10, 13] and torch.equal(sub.mask, mask[[0, 3]])


def test_default_mask_is_last_step_only():
    split = TaskSplit(torch.zeros(2, 3, 1), torch.tensor([0, 1]))
    assert not split.per_step and split.mask is None
    assert split.step_mask().tolist() == [[0, 0, 1], [0, 0, 1]]
    assert split.subset([1]).mask is None


def test_tasksplit_rejects_misaligned_shapes():
    with pytest.raises(DataError, match=r"y must be \(2,\) or \(2, 3\)"):
        TaskSplit(torch.zeros(2, 3, 1), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(DataError, match=r"mask must be \(2, 3\)"):
        TaskSplit(torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long), torch.ones(2, 1))
