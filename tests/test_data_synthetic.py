"""Synthetic datasets: determinism, split independence, class imbalance, the Sec. 4.1 circles."""

import numpy as np
import pytest

import jaxseg.data as jd
from jaxseg.data import synthetic


def test_shapes_deterministic_and_prefix_stable():
    a = synthetic.generate("shapes", "train", image_size=32, num_train=6, seed=3)
    b = synthetic.generate("shapes", "train", image_size=32, num_train=9, seed=3)
    # Image i depends only on (seed, split, i), not on how many images are generated.
    np.testing.assert_array_equal(a["image"], b["image"][:6])
    np.testing.assert_array_equal(a["label"], b["label"][:6])
    img, lab = synthetic.shapes_example(3, "train", 4, 32)
    np.testing.assert_array_equal(img, a["image"][4])
    np.testing.assert_array_equal(lab, a["label"][4])
    c = synthetic.generate("shapes", "train", image_size=32, num_train=6, seed=4)
    assert not np.array_equal(a["image"], c["image"])


def test_shapes_splits_differ_and_aliases():
    tr = synthetic.generate("shapes", "train", image_size=32, num_train=4)
    va = synthetic.generate("shapes", "val", image_size=32, num_validation=4)
    assert not np.array_equal(tr["image"], va["image"])
    assert va["id"][0].startswith("shapes_validation_")


def test_shapes_content_is_imbalanced_and_valid():
    d = synthetic.generate("shapes", "train", image_size=64, num_train=128, seed=0)
    assert d["image"].shape == (128, 64, 64, 3) and d["image"].dtype == np.uint8
    assert d["label"].shape == (128, 64, 64) and d["label"].dtype == np.uint8
    counts = np.bincount(d["label"].ravel(), minlength=8)
    assert counts.size == 8 and counts.min() > 0  # every class occurs, nothing outside 0..7
    freq = counts / counts.sum()
    assert freq[0] > 0.6  # dominant background
    assert freq[1] > 20 * freq[7]  # large frequent class vs tiny rare class
    present = np.stack([(d["label"] == k).any(axis=(1, 2)) for k in range(8)], 1).mean(0)
    assert present[1] > 2 * present[7]  # rare class appears in fewer images
    # Noisy: the same class has a wide range of pixel values (not readable off one pixel).
    disc = d["image"][d["label"] == 1].astype(float)
    assert disc.std(axis=0).min() > 10


def test_shapes_noise_option():
    quiet = synthetic.generate("shapes", "train", image_size=32, num_train=4, noise=0.0)
    loud = synthetic.generate("shapes", "train", image_size=32, num_train=4, noise=40.0)
    np.testing.assert_array_equal(quiet["label"], loud["label"])  # same scenes
    bg_q = quiet["image"][quiet["label"] == 0].astype(float)
    bg_l = loud["image"][loud["label"] == 0].astype(float)
    assert np.abs(np.diff(bg_l, axis=0)).mean() > 2 * np.abs(np.diff(bg_q, axis=0)).mean()
    with pytest.raises(ValueError, match="noise"):
        synthetic.generate("shapes", "train", noise=-1.0)
    with pytest.raises(ValueError, match="Unknown option"):
        synthetic.generate("circles", "train", noise=1.0)


def test_shapes_small_sizes_and_bad_options():
    d = synthetic.generate("shapes", "train", image_size=32, num_train=3)
    assert d["image"].shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="Unknown option"):
        synthetic.generate("shapes", "train", imgsize=3)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate("shapes", "train", image_size=4)
    with pytest.raises(ValueError, match="Unknown split"):
        synthetic.generate("shapes", "nope")


def test_circles_match_section_4_1():
    data = jd.circles(seed=0)
    assert data.label.shape == (10, 50, 50) and data.feature.shape == (10, 50, 50)
    assert data.image.shape == (10, 50, 50, 3)
    assert set(np.unique(data.label)) == {0, 1}
    # One disc per image: pixel count close to pi r^2 for r in [5, 16.7].
    areas = data.label.reshape(10, -1).sum(1)
    assert areas.min() >= np.pi * 4.5**2 and areas.max() <= np.pi * 17.5**2
    assert len(set(areas.tolist())) > 5  # various radii
    fg, bg = data.feature[data.label == 1], data.feature[data.label == 0]
    # Means +-1/2, unit variance: 5-sigma bands for the sample sizes at hand.
    assert abs(fg.mean() - 0.5) < 5 / np.sqrt(fg.size)
    assert abs(bg.mean() + 0.5) < 5 / np.sqrt(bg.size)
    assert abs(fg.std() - 1) < 0.05 and abs(bg.std() - 1) < 0.05
    # The grey image encodes the feature.
    np.testing.assert_array_equal(data.image[..., 0], synthetic.feature_to_image(data.feature)[..., 0])


def test_get_dataset_synthetic_elements():
    ds = jd.get_dataset("circles", "train", num_train=3)
    els = list(ds.as_numpy_iterator())
    assert len(els) == 3
    ref = jd.circles(num_images=3)
    for i, e in enumerate(els):
        assert e["image"].dtype == np.uint8 and e["label"].dtype == np.uint8
        np.testing.assert_array_equal(e["feature"], ref.feature[i])
        np.testing.assert_array_equal(e["label"], ref.label[i])
    info = jd.dataset_info("shapes")
    assert info.num_classes == 8 and info.class_names[0] == "background" and info.ignore_index == 255
    with pytest.raises(ValueError, match="Unknown dataset"):
        jd.dataset_info("coco")


def test_split_statistics_synthetic_matches_numpy():
    opts = dict(image_size=32, num_train=7)
    st = jd.split_statistics("shapes", "train", **opts)
    d = synthetic.generate("shapes", "train", **opts)
    np.testing.assert_array_equal(st.class_pixel_counts, np.bincount(d["label"].ravel(), minlength=8))
    assert st.class_pixel_counts.dtype == np.int64
    pres = np.stack([(d["label"] == k).any(axis=(1, 2)) for k in range(8)], 1)
    np.testing.assert_array_equal(st.image_class_presence, pres)
    assert st.mean_instance_sizes is None and st.void_pixel_count == 0
    assert (st.max_height, st.max_width) == (32, 32)
    np.testing.assert_allclose(st.class_frequencies.sum(), 1.0)
