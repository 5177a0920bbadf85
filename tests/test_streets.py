"""The synthetic ``streets`` dataset: determinism, validity, class imbalance, thin structures,
co-occurring classes, generation time and its registration as a dataset."""

import time

import numpy as np
import pytest
from scipy import ndimage

import jaxseg.data as jd
from jaxseg.data import synthetic

NAMES = synthetic.STREETS_CLASS_NAMES
SKY, BUILDING, WINDOW, ROAD, CAR, POLE, SIGN, WIRE, CRACK = (NAMES.index(n) for n in NAMES)
THIN = (POLE, WIRE, CRACK)

# "At most 3 px wide" as a test: no digital disc of diameter 4 fits in the class mask. A band
# "w px wide" at any angle is the set of pixels whose centres lie within (w - 1) / 2 of its centre
# line (a vertical 3 px band: |x - x0| <= 1). The disc is the 4 x 4 block without its corners
# (pixel centres within 1.6 px of the block's centre), 3 px between extreme centres along the
# axes and 2 sqrt(2) ~ 2.8 px along the diagonals: it fits in a 4 px band that is vertical,
# horizontal or diagonal, but in no 3 px band at any angle (checked below), so eroding a class
# mask by it leaves nothing iff no part of the class is 4 px wide or more.
DISC4 = np.ones((4, 4), bool)
DISC4[[0, 0, 3, 3], [0, 3, 0, 3]] = False


def _train():
    return synthetic.generate("streets", "train")


def test_disc_test_is_meaningful():
    yy, xx = np.mgrid[0:32, 0:32]
    for width in (1, 2, 3):  # vertical bands up to 3 px pass
        assert not ndimage.binary_erosion((xx >= 10) & (xx < 10 + width), DISC4).any()
    assert ndimage.binary_erosion((xx >= 10) & (xx < 14), DISC4).any()  # 4 px vertical band
    for degrees in range(0, 180, 5):  # 3 px bands at any angle pass
        a = np.deg2rad(degrees)
        d = np.abs((yy - 15.3) * np.cos(a) - (xx - 16.1) * np.sin(a))  # distance to the line
        assert not ndimage.binary_erosion(d <= 1.0, DISC4).any(), degrees
    assert ndimage.binary_erosion(np.abs(xx - yy) / np.sqrt(2) <= 1.5, DISC4).any()  # 4 px, 45 deg


def test_deterministic_prefix_stable_and_distinct():
    a_img, a_lab = synthetic.streets_example(0, "train", 5)
    b_img, b_lab = synthetic.streets_example(0, "train", 5)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = synthetic.streets_example(0, "train", 6)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)
    d_img, _ = synthetic.streets_example(1, "train", 5)
    assert not np.array_equal(a_img, d_img)
    v_img, _ = synthetic.streets_example(0, "validation", 5)
    assert not np.array_equal(a_img, v_img)
    small = synthetic.generate("streets", "train", num_train=8)
    np.testing.assert_array_equal(small["image"], _train()["image"][:8])
    np.testing.assert_array_equal(small["image"][5], a_img)
    assert small["id"][0] == "streets_train_000000"


def test_shapes_dtypes_and_label_range():
    d = _train()
    assert d["image"].shape == (256, 64, 64, 3) and d["image"].dtype == np.uint8
    assert d["label"].shape == (256, 64, 64) and d["label"].dtype == np.uint8
    assert int(d["label"].max()) == len(NAMES) - 1 and int(d["label"].min()) == 0  # no 255
    v = synthetic.generate("streets", "validation")
    assert v["image"].shape == (64, 64, 64, 3)
    img, lab = synthetic.streets_example(0, "train", 0, image_size=96)
    assert img.shape == (96, 96, 3) and lab.shape == (96, 96) and lab.max() < len(NAMES)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate("streets", "train", image_size=16)


def test_noise_option_changes_pixels_not_scenes():
    quiet = synthetic.generate("streets", "train", num_train=4, noise=0.0)
    loud = synthetic.generate("streets", "train", num_train=4, noise=30.0)
    np.testing.assert_array_equal(quiet["label"], loud["label"])
    assert not np.array_equal(quiet["image"], loud["image"])


def test_class_imbalance_at_least_100x():
    counts = np.bincount(_train()["label"].ravel(), minlength=len(NAMES))
    assert counts.size == len(NAMES) and counts.min() > 0  # every class occurs
    assert counts.max() >= 100 * counts.min()
    assert counts[[SKY, ROAD]].min() > 5 * counts[[WINDOW, CAR, POLE, SIGN, WIRE, CRACK]].max()
    # The same numbers through the split statistics (what a study prints).
    freq = jd.split_statistics("streets", "train").class_frequencies
    np.testing.assert_allclose(freq, counts / counts.sum())


def test_thin_classes_are_at_most_3px_wide():
    labels = _train()["label"]
    for k in THIN:
        assert (labels == k).any(), NAMES[k]
        for i, lab in enumerate(labels):
            assert not ndimage.binary_erosion(lab == k, DISC4).any(), (NAMES[k], i)
    # Small objects: windows, signs and cars are connected components of typically under 2.5% of
    # the image, and none is over 15% (overlapping cars merge).
    for k in (WINDOW, SIGN, CAR):
        sizes = np.concatenate([np.bincount(ndimage.label(lab == k)[0].ravel())[1:] for lab in labels])
        assert np.median(sizes) < 0.025 * 64 * 64 and sizes.max() < 0.15 * 64 * 64, NAMES[k]


def test_classes_co_occur():
    labels = _train()["label"]
    near = np.ones((7, 7), bool)
    for i, lab in enumerate(labels):
        present = np.bincount(lab.ravel(), minlength=len(NAMES)) > 0
        # Windows only inside buildings: building pixels within 3 px of every window pixel.
        if present[WINDOW]:
            assert present[BUILDING]
            around = ndimage.binary_dilation(lab == BUILDING, near)
            assert around[lab == WINDOW].all(), i
        # Cars and cracks only on the road: cars below the horizon (the road's first row), cracks
        # from it down.
        horizon = np.flatnonzero((lab == ROAD).any(1))[0]
        if present[CAR]:
            assert present[ROAD] and np.flatnonzero((lab == CAR).any(1)).min() > horizon, i
        if present[CRACK]:
            assert present[ROAD] and np.flatnonzero((lab == CRACK).any(1)).min() >= horizon, i
        # Signs on top of poles: every sign touches a pole pixel, pole pixels below it.
        if present[SIGN]:
            assert present[POLE]
            comp, n = ndimage.label(lab == SIGN)
            pole = lab == POLE
            for j in range(1, n + 1):
                touch = ndimage.binary_dilation(comp == j, np.ones((3, 3), bool)) & pole
                assert touch.any(), (i, j)
                assert np.flatnonzero(pole.any(1)).max() > np.flatnonzero((comp == j).any(1)).max()


def test_generation_time():
    start = time.perf_counter()
    # A seed no other test uses, so the memoised arrays are not reused.
    synthetic.generate("streets", "train", seed=987)
    synthetic.generate("streets", "validation", seed=987)
    assert time.perf_counter() - start < 10.0


def test_registered_dataset():
    info = jd.dataset_info("streets")
    assert "streets" in jd.NAMES and info.synthetic
    assert info.num_classes == len(NAMES) and info.class_names == NAMES and info.ignore_index == 255
    assert info.splits == {"train": 256, "validation": 64, "test": 64}
    assert info.eval_split == "validation"
    els = list(jd.get_dataset("streets", "validation", num_validation=3).as_numpy_iterator())
    ref = synthetic.generate("streets", "validation", num_validation=3)
    assert len(els) == 3
    for i, e in enumerate(els):
        np.testing.assert_array_equal(e["image"], ref["image"][i])
        np.testing.assert_array_equal(e["label"], ref["label"][i])
    from configs import common

    c = common.data_config("streets")
    assert c.name == "streets" and tuple(c.crop_size) == (64, 64)
    assert dict(c.options) == {"image_size": 64, "num_train": 256, "num_validation": 64, "seed": 0}
