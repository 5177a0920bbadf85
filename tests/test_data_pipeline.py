"""Training / evaluation pipelines: determinism, restart, host shards, augmentation, equibatch."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import jaxseg.data as jd
from jaxseg.data import augment, synthetic

OPTS = {"image_size": 32, "num_train": 9, "num_validation": 5, "seed": 0}


MEAN, STD = (127.5, 127.5, 127.5), (64.0, 64.0, 64.0)


def _cfg(**kw):
    """Keyword arguments of the ``shapes`` training iterator."""
    return dict(dict(name="shapes", split="train", options=dict(OPTS), crop_size=(16, 16),
                     scale_range=(0.5, 1.5), flip=True, mean=MEAN, std=STD), **kw)


def _eval_cfg(**kw):
    """Keyword arguments of the ``shapes`` evaluation iterator."""
    return dict(dict(name="shapes", split="validation", options=dict(OPTS), mean=MEAN, std=STD), **kw)


def _batches(cfg, n, **kw):
    it = jd.create_train_iterator(**cfg, **kw)
    return [next(it) for _ in range(n)]


def test_train_batches_shapes_dtypes_values():
    (b,) = _batches(_cfg(), 1, global_batch_size=4, seed=0, process_index=0, process_count=1)
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.float32
    assert b["label"].shape == (4, 16, 16) and b["label"].dtype == np.int32
    assert set(np.unique(b["label"])) <= set(range(8)) | {255}


def test_train_deterministic_and_seed_dependent():
    cfg = _cfg()
    a = _batches(cfg, 3, global_batch_size=4, seed=5, process_index=0, process_count=1)
    b = _batches(cfg, 3, global_batch_size=4, seed=5, process_index=0, process_count=1)
    c = _batches(cfg, 3, global_batch_size=4, seed=6, process_index=0, process_count=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_restart_at_step_reproduces_uninterrupted_run():
    cfg = _cfg()
    full = _batches(cfg, 6, global_batch_size=4, seed=1, process_index=0, process_count=1)
    resumed = _batches(cfg, 2, global_batch_size=4, seed=1, start_step=4, process_index=0, process_count=1)
    for x, y in zip(full[4:], resumed):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_hosts_read_disjoint_slices_of_the_same_global_batch():
    cfg = _cfg(scale_range=(1.0, 1.0), flip=False, crop_size=(32, 32))
    one = _batches(cfg, 3, global_batch_size=4, seed=2, process_index=0, process_count=1)
    h0 = _batches(cfg, 3, global_batch_size=4, seed=2, process_index=0, process_count=2)
    h1 = _batches(cfg, 3, global_batch_size=4, seed=2, process_index=1, process_count=2)
    data = synthetic.generate("shapes", "train", **OPTS)
    mean, std = np.asarray(MEAN), np.asarray(STD)
    seen = []
    for g, a, b in zip(one, h0, h1):
        assert a["image"].shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([a["label"], b["label"]]), g["label"])
        np.testing.assert_array_equal(np.concatenate([a["image"], b["image"]]), g["image"])
        # With scale 1, a full crop and no flip, each sample is one whole example: identify it.
        for img in g["image"]:
            raw = np.rint(img * std + mean)
            matches = [i for i in range(len(data["image"])) if np.array_equal(raw, data["image"][i])]
            assert len(matches) == 1
            seen.append(matches[0])
    # First epoch of 9 examples is a permutation: the first 9 samples are all different.
    assert sorted(seen[:9]) == list(range(9))
    with pytest.raises(ValueError, match="multiple of process_count"):
        jd.create_train_iterator(**cfg, global_batch_size=3, seed=0, process_index=0, process_count=2)


def test_epoch_schedule_is_a_permutation_per_epoch():
    s = jd.EpochSchedule(7, seed=3)
    for epoch in range(3):
        assert sorted(s(epoch * 7 + i)[0] for i in range(7)) == list(range(7))
    assert [s(i)[0] for i in range(7)] != [s(7 + i)[0] for i in range(7)]
    assert jd.EpochSchedule(7, seed=3)(12) == s(12)


def _np_reference_crop(image, label, y0, x0, ch, cw, flip, mean, std):
    """Float64 NumPy reference of pad (mean / 255) + crop + flip + normalise at scale 1."""
    h, w = label.shape
    hp, wp = max(h, ch), max(w, cw)
    img = np.broadcast_to(np.asarray(mean, np.float64), (hp, wp, 3)).copy()
    lab = np.full((hp, wp), 255, np.int64)
    img[:h, :w] = image
    lab[:h, :w] = label
    img, lab = img[y0 : y0 + ch, x0 : x0 + cw], lab[y0 : y0 + ch, x0 : x0 + cw]
    if flip:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return (img - mean) / std, lab


def test_augment_scale_one_matches_numpy_reference():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(11, 13, 3), dtype=np.uint8)
    label = rng.integers(0, 5, size=(11, 13)).astype(np.uint8)
    mean, std = np.array([10.0, 20.0, 30.0]), np.array([2.0, 3.0, 4.0])
    for g, (ch, cw) in itertools.product(range(6), [(8, 8), (16, 9)]):
        img, lab = augment.train_augment(
            tf.constant(image), tf.constant(label), augment.sample_key(0, g),
            crop_size=(ch, cw), scale_range=(1.0, 1.0), flip=True, mean=mean, std=std,
        )
        img, lab = img.numpy(), lab.numpy()
        # Find the offset/flip that the pipeline chose and compare with the reference exactly.
        found = False
        for y0, x0, fl in itertools.product(range(max(11, ch) - ch + 1), range(max(13, cw) - cw + 1), (False, True)):
            ri, rl = _np_reference_crop(image, label, y0, x0, ch, cw, fl, mean, std)
            if np.array_equal(rl, lab) and np.allclose(ri, img, atol=1e-5):
                found = True
                break
        assert found, f"sample {g}: augmented crop is not a pad/crop/flip of the input"
        if ch > 11:  # rows below the image are padding: label 255, image = mean (0 normalised)
            assert (lab[11:] == 255).all() and np.allclose(img[11:], 0.0)


def test_augment_labels_nearest_and_aligned_with_image():
    # Image colour encodes the label (10 * class): after any scale/crop/flip the two stay aligned
    # wherever the label is locally constant, and labels only take input values (nearest).
    rng = np.random.default_rng(1)
    label = np.kron(rng.integers(0, 6, size=(5, 6)), np.ones((6, 6), np.int64)).astype(np.uint8)  # 30 x 36
    image = np.repeat((label * 10)[..., None], 3, -1).astype(np.uint8)
    for g in range(8):
        img, lab = augment.train_augment(
            tf.constant(image), tf.constant(label), augment.sample_key(7, g),
            crop_size=(20, 20), scale_range=(0.5, 2.0), flip=True,
        )
        img, lab = img.numpy(), lab.numpy()
        assert set(np.unique(lab)) <= set(np.unique(label)) | {255}
        valid = lab != 255
        inner = valid.copy()
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            inner &= np.roll(np.roll(lab, dy, 0), dx, 1) == lab
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
        if inner.any():
            np.testing.assert_allclose(img[inner][:, 0], 10.0 * lab[inner], atol=1.0)


def test_equibatch_cycles_classes_and_crops_contain_them():
    cfg = _cfg(equibatch=True, crop_size=(8, 8), scale_range=(0.5, 1.5))
    seed, B, steps = 4, 4, 6
    batches = _batches(cfg, steps, global_batch_size=B, seed=seed, process_index=0, process_count=1)
    schedule = jd.pipeline.make_schedule(name="shapes", split="train", options=OPTS, equibatch=True,
                                         seed=seed)
    stats = jd.split_statistics("shapes", "train", **OPTS)
    present = np.flatnonzero(stats.image_class_presence.any(0))
    K = present.size
    assert K <= 8
    targets = []
    for k, b in enumerate(batches):
        for j in range(B):
            g = k * B + j
            index, c = schedule(g)
            assert stats.image_class_presence[index, c]  # image drawn among those with the class
            assert (b["label"][j] == c).any(), f"crop of sample {g} lacks its target class {c}"
            targets.append(c)
    # Every window of K consecutive patches covers every present class (so at least once every |C|).
    for start in range(len(targets) - K + 1):
        assert set(targets[start : start + K]) == set(present.tolist())


def test_eval_iterator_pads_masks_and_shards():
    cfg = _eval_cfg(pad_size=(40, 36))
    full = list(jd.create_eval_iterator(**cfg, global_batch_size=4, process_index=0, process_count=1))
    h0 = list(jd.create_eval_iterator(**cfg, global_batch_size=4, process_index=0, process_count=2))
    h1 = list(jd.create_eval_iterator(**cfg, global_batch_size=4, process_index=1, process_count=2))
    assert len(full) == len(h0) == len(h1) == 2  # ceil(5 / 4)
    data = synthetic.generate("shapes", "validation", **OPTS)
    mask = np.concatenate([b["example_mask"] for b in full])
    np.testing.assert_array_equal(mask, np.arange(8) < 5)
    labels = np.concatenate([b["label"] for b in full])
    assert labels.shape == (8, 40, 36) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[:5, :32, :32], data["label"])
    assert (labels[:, 32:] == 255).all() and (labels[:, :, 32:] == 255).all() and (labels[5:] == 255).all()
    imgs = np.concatenate([b["image"] for b in full])
    np.testing.assert_allclose(imgs[:5, :32, :32] * 64.0 + 127.5, data["image"], atol=1e-3)
    assert np.all(imgs[:, 32:] == 0) and np.all(imgs[5:] == 0)
    np.testing.assert_array_equal(np.concatenate([b["size"] for b in full])[:5], np.full((5, 2), 32))
    for f, a, b in zip(full, h0, h1):
        np.testing.assert_array_equal(np.concatenate([a["label"], b["label"]]), f["label"])
        np.testing.assert_array_equal(np.concatenate([a["example_mask"], b["example_mask"]]), f["example_mask"])
    # pad_size None: the split's largest image.
    (b0, _) = list(jd.create_eval_iterator(**_eval_cfg(), global_batch_size=4, process_index=0,
                                           process_count=1))
    assert b0["image"].shape == (4, 32, 32, 3)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="larger than eval_pad_size"):
        list(jd.create_eval_iterator(**_eval_cfg(pad_size=(16, 16)), global_batch_size=4,
                                     process_index=0, process_count=1))


def test_binary_class_labels_come_from_the_pipeline():
    """binary_class = c: labels [y == c] with void kept, on the training and evaluation batches."""
    small = dict(scale_range=(0.3, 0.4))  # the scaled image is smaller than the crop: void padding
    (plain,) = _batches(_cfg(**small), 1, global_batch_size=4, seed=0, process_index=0, process_count=1)
    c = int(np.bincount(plain["label"][plain["label"] < 255], minlength=2)[1:].argmax()) + 1
    (binary,) = _batches(_cfg(binary_class=c, **small), 1, global_batch_size=4, seed=0, process_index=0,
                         process_count=1)
    np.testing.assert_array_equal(binary["image"], plain["image"])
    want = np.where(plain["label"] == 255, 255, plain["label"] == c).astype(np.int32)
    assert (plain["label"] == c).any() and (plain["label"] == 255).any()
    np.testing.assert_array_equal(binary["label"], want)
    kw = dict(global_batch_size=4, process_index=0, process_count=1)
    for a, b in zip(jd.create_eval_iterator(**_eval_cfg(), **kw),
                    jd.create_eval_iterator(**_eval_cfg(binary_class=c), **kw)):
        want = np.where(a["label"] == 255, 255, a["label"] == c).astype(np.int32)
        np.testing.assert_array_equal(b["label"], want)


def test_config_data_settings_name_the_data_layers_splits():
    """configs/common.py's data settings (plain data, no import of jaxseg) name splits the data
    layer has, and hold every argument the trainer passes on."""
    from configs import common

    assert sorted(common.DATASETS) == sorted(jd.NAMES)
    for name in jd.NAMES:
        cfg = common.data_config(name)
        info = jd.dataset_info(name)
        assert (cfg.train_split, cfg.eval_split) == (info.train_split, info.eval_split), name
        for key in ("name", "train_split", "eval_split", "data_dir", "manual_dir", "crop_size", "scale_range",
                    "flip", "mean", "std", "eval_pad_size", "equibatch", "options"):
            assert key in cfg, (name, key)
    assert tuple(common.data_config("voc2012_segmentation").crop_size) == (321, 321)
