"""Tests of jaxseg.metrics against brute-force NumPy references."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics as m

IGNORE = 255


# ----------------------------------------------------------------------------------------------
# Brute-force references (loops over pixels, classes, images and instances)
# ----------------------------------------------------------------------------------------------


def ref_confusion(pred, label, c, mask=None):
    cm = np.zeros((c, c), np.int64)
    mask = np.ones(label.shape, bool) if mask is None else np.broadcast_to(
        mask.reshape(mask.shape + (1,) * (label.ndim - mask.ndim)), label.shape)
    for p, g, k in zip(pred.reshape(-1), label.reshape(-1), mask.reshape(-1)):
        if k and 0 <= g < c and 0 <= p < c:
            cm[g, p] += 1
    return cm


def ref_class_iou(pred, label, c):
    """IoU of every class from pixel sets; NaN where the union is empty."""
    counted = (label >= 0) & (label < c)
    out = np.full(c, np.nan)
    for k in range(c):
        gt = counted & (label == k)
        pr = counted & (pred == k)
        union = np.sum(gt | pr)
        if union:
            out[k] = np.sum(gt & pr) / union
    return out


def ref_nanmean(v):
    v = np.asarray(v, np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def ref_instance_counts(pred, label, inst, sizes, groups=None):
    """cityscapesScripts' loop: every instance id > 1000 of every image, weighted tp / fn."""
    c = sizes.shape[0]
    k = c if groups is None else max(groups) + 1
    itp, ifn = np.zeros(k), np.zeros(k)
    for b in range(label.shape[0]):
        for iid in np.unique(inst[b][inst[b] > 1000]):
            region = inst[b] == iid
            cls = int(np.unique(label[b][region])[0])
            if not 0 <= cls < c or sizes[cls] <= 0:
                continue
            size = region.sum()
            if groups is None:
                tp = np.sum(pred[b][region] == cls)
                target = cls
            else:
                target = groups[cls]
                tp = np.sum([0 <= p < c and groups[p] == target for p in pred[b][region]])
            weight = sizes[cls] / size
            itp[target] += tp * weight
            ifn[target] += (size - tp) * weight
    return itp, ifn


def ref_instance_iou(itp, ifn, cm, instance_classes):
    out = np.full(len(itp), np.nan)
    for k in range(len(itp)):
        if not instance_classes[k]:
            continue
        fp = sum(cm[g, k] for g in range(cm.shape[0]) if g != k)
        den = itp[k] + fp + ifn[k]
        if den:
            out[k] = itp[k] / den
    return out


def official_category_iou(cm, groups, k):
    """getIouScoreForCategory of cityscapesScripts, on a train-id confusion matrix."""
    out = np.full(k, np.nan)
    groups = np.asarray(groups)
    for cat in range(k):
        ids = np.flatnonzero(groups == cat)
        others = np.flatnonzero(groups != cat)
        tp = cm[np.ix_(ids, ids)].sum()
        fn = cm[ids, :].sum() - tp
        fp = cm[np.ix_(others, ids)].sum()
        if tp + fp + fn:
            out[cat] = tp / (tp + fp + fn)
    return out


def _random_batch(seed, shape=(3, 6, 7), c=5, void=0.15):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, c, size=shape)
    label[rng.random(shape) < void] = IGNORE
    pred = np.where(rng.random(shape) < 0.6, np.where(label == IGNORE, 0, label),
                    rng.integers(0, c, size=shape))
    return pred.astype(np.int32), label.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Confusion matrix and scores
# ----------------------------------------------------------------------------------------------


def test_confusion_matrix_matches_brute_force_and_jits():
    pred, label = _random_batch(0)
    label[0, 0, :3] = [7, -3, 5]  # out of range: counted nowhere
    pred[1, 0, :2] = [9, -1]  # out-of-range predictions: counted nowhere
    want = ref_confusion(pred, label, 5)
    got = m.confusion_matrix(pred, label, 5)
    assert got.dtype == jnp.int32 and got.shape == (5, 5)
    np.testing.assert_array_equal(np.asarray(got), want)
    jitted = jax.jit(m.confusion_matrix, static_argnums=2, static_argnames="ignore_index")
    np.testing.assert_array_equal(np.asarray(jitted(pred, label, 5)), want)
    # uint8 labels (as stored) give the same counts
    np.testing.assert_array_equal(
        np.asarray(m.confusion_matrix(pred, np.clip(label, 0, 255).astype(np.uint8), 5)),
        ref_confusion(pred, np.clip(label, 0, 255), 5))


def test_confusion_matrix_masks():
    pred, label = _random_batch(1)
    example_mask = np.array([True, False, True])
    np.testing.assert_array_equal(
        np.asarray(m.confusion_matrix(pred, label, 5, mask=example_mask)),
        ref_confusion(pred, label, 5, example_mask))
    pixel_mask = np.random.default_rng(2).random(label.shape) < 0.5
    np.testing.assert_array_equal(
        np.asarray(m.confusion_matrix(pred, label, 5, mask=pixel_mask)),
        ref_confusion(pred, label, 5, pixel_mask))
    other = np.where(label == IGNORE, -1, label)
    np.testing.assert_array_equal(np.asarray(m.confusion_matrix(pred, other, 5, ignore_index=-1)),
                                  ref_confusion(pred, label, 5))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_scores_from_confusion(backend):
    pred, label = _random_batch(3, c=6)
    pred[pred == 5] = 0
    label[label == 5] = 0  # class 5 absent everywhere: IoU NaN
    cm_np = ref_confusion(pred, label, 6)
    cm = cm_np if backend == "numpy" else jnp.asarray(cm_np, jnp.int32)
    tol = 1e-12 if backend == "numpy" else 1e-6
    iou = np.asarray(m.iou_from_confusion(cm))
    want = ref_class_iou(pred, label, 6)
    assert np.isnan(iou[5]) and np.isnan(want[5])
    np.testing.assert_allclose(iou, want, rtol=tol)
    np.testing.assert_allclose(float(m.mean_iou(cm)), ref_nanmean(want), rtol=tol)
    counted = (label >= 0) & (label < 6)
    np.testing.assert_allclose(float(m.pixel_accuracy(cm)),
                               np.mean(pred[counted] == label[counted]), rtol=tol)
    recall = [np.mean(pred[counted & (label == k)] == k) if np.any(counted & (label == k))
              else np.nan for k in range(6)]
    np.testing.assert_allclose(np.asarray(m.class_accuracy(cm)), recall, rtol=tol)
    np.testing.assert_allclose(float(m.mean_class_accuracy(cm)), ref_nanmean(recall), rtol=tol)
    freq = np.array([np.sum(counted & (label == k)) for k in range(6)]) / counted.sum()
    fw = sum(freq[k] * want[k] for k in range(6) if freq[k] > 0)
    np.testing.assert_allclose(float(m.frequency_weighted_iou(cm)), fw, rtol=tol)
    if backend == "jax":
        np.testing.assert_allclose(float(jax.jit(m.mean_iou)(cm)), ref_nanmean(want), rtol=tol)


def test_empty_confusion_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cm in (np.zeros((3, 3), np.int64), jnp.zeros((3, 3), jnp.int32)):
            assert np.all(np.isnan(np.asarray(m.iou_from_confusion(cm))))
            for fn in (m.mean_iou, m.pixel_accuracy, m.mean_class_accuracy,
                       m.frequency_weighted_iou):
                assert np.isnan(float(fn(cm)))


def test_int64_dataset_accumulation_does_not_overflow():
    cm = np.array([[3_000_000_000, 1_000_000_000], [0, 2_000_000_000]], np.int64)
    np.testing.assert_allclose(m.iou_from_confusion(cm), [0.75, 2 / 3], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Per-image and batch mIoU
# ----------------------------------------------------------------------------------------------


def test_per_image_iou_and_mean():
    pred, label = _random_batch(4)
    label[2] = IGNORE  # an image with no counted pixel: NaN, excluded from means
    got = np.asarray(jax.jit(m.per_image_iou, static_argnums=2)(pred, label, 5))
    want = np.stack([ref_class_iou(pred[b], np.where(label[b] == IGNORE, -1, label[b]), 5)
                     for b in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    per_image = np.asarray(m.per_image_mean_iou(pred, label, 5))
    np.testing.assert_allclose(per_image[:2], [ref_nanmean(w) for w in want[:2]], rtol=1e-6)
    assert np.isnan(per_image[2])
    masked = np.asarray(m.per_image_mean_iou(pred, label, 5, mask=np.array([True, False, True])))
    assert np.isnan(masked[1]) and masked[0] == per_image[0]


def test_batch_mean_iou_present_and_union():
    pred, label = _random_batch(5)
    label[label == 4] = 0  # class 4 only predicted: excluded under "present"
    iou = ref_class_iou(pred, np.where(label == IGNORE, -1, label), 5)
    assert not np.isnan(iou[4])
    np.testing.assert_allclose(float(m.batch_mean_iou(pred, label, 5)), ref_nanmean(iou[:4]),
                               rtol=1e-6)
    np.testing.assert_allclose(float(m.batch_mean_iou(pred, label, 5, classes="union")),
                               ref_nanmean(iou), rtol=1e-6)
    assert np.isnan(float(m.batch_mean_iou(pred, np.full_like(label, IGNORE), 5)))


# ----------------------------------------------------------------------------------------------
# Cityscapes: categories and iIoU
# ----------------------------------------------------------------------------------------------


def test_cityscapes_tables():
    assert len(m.CITYSCAPES_CLASS_NAMES) == 19 == len(m.CITYSCAPES_CATEGORY_OF_CLASS)
    names = dict(zip(m.CITYSCAPES_CLASS_NAMES, m.CITYSCAPES_CATEGORY_OF_CLASS))
    cats = m.CITYSCAPES_CATEGORY_NAMES
    assert cats[names["sidewalk"]] == "flat" and cats[names["fence"]] == "construction"
    assert cats[names["traffic sign"]] == "object" and cats[names["terrain"]] == "nature"
    assert cats[names["rider"]] == "human" and cats[names["bicycle"]] == "vehicle"
    instance = [n for n, s in zip(m.CITYSCAPES_CLASS_NAMES, m.CITYSCAPES_MEAN_INSTANCE_SIZE)
                if s > 0]
    assert instance == ["person", "rider", "car", "truck", "bus", "train", "motorcycle",
                        "bicycle"]


def test_cityscapes_category_iou_matches_official_formula():
    rng = np.random.default_rng(6)
    cm = rng.integers(0, 1000, size=(19, 19)).astype(np.int64)
    cm[10, :] = 0  # sky absent from ground truth ...
    cm[:, 10] = 0  # ... and prediction: NaN
    got = m.cityscapes_category_iou(cm)
    want = official_category_iou(cm, m.CITYSCAPES_CATEGORY_OF_CLASS, 7)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(got[4])
    np.testing.assert_allclose(np.asarray(m.cityscapes_category_iou(jnp.asarray(cm, jnp.int32))),
                               want, rtol=1e-6)


def _hand_example():
    """One 4 x 4 image, classes 0 (stuff) and 1 (instances, mean size 4).

    row 0: instance A (id 26000, 4 px), predicted 1 1 1 0
    row 1: instance B (id 26001, 2 px) predicted 0 0; crowd group (id 26 < 1000) predicted 1 0
    row 2: class 0 with an instance id (7000), predicted 1 1 0 0: class 0 has no mean size
    row 3: void, predicted 1 (ignored)
    """
    label = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [IGNORE] * 4])
    inst = np.array([[26000] * 4, [26001, 26001, 26, 26], [7000] * 4, [0] * 4])
    pred = np.array([[1, 1, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    return pred[None], label[None], inst[None]


def test_iiou_hand_example():
    pred, label, inst = _hand_example()
    sizes = np.array([0.0, 4.0])
    counts = m.instance_counts(pred, label, inst, 2)
    assert {k: (v.dtype, v.shape) for k, v in counts.items()} == {
        k: (jnp.int32, (1, 33999 - 1000)) for k in ("instance_class", "instance_size",
                                                    "instance_tp")}
    found = {1001 + j: (int(counts["instance_class"][0, j]), int(counts["instance_size"][0, j]),
                        int(counts["instance_tp"][0, j]))
             for j in np.flatnonzero(np.asarray(counts["instance_size"][0]))}
    # (class, size, predicted as its class); the crowd group and void are no instances
    assert found == {26000: (1, 4, 3), 26001: (1, 2, 0), 7000: (0, 4, 2)}
    assert int(np.sum(np.asarray(counts["instance_class"]) >= 0)) == 3
    # ids above the bound are not instances
    bounded = m.instance_counts(pred, label, inst, 2, max_instance_id=26000)
    assert bounded["instance_size"].shape == (1, 25000)
    assert int(bounded["instance_size"][0, -1]) == 4 and int(bounded["instance_size"].sum()) == 8
    # A: weight 4 / 4 = 1 per pixel; B: 4 / 2 = 2 per pixel; class 0 has no mean size: skipped
    itp, ifn = m.instance_weighted_sums(counts["instance_class"], counts["instance_size"],
                                        counts["instance_tp"], sizes)
    assert itp.dtype == ifn.dtype == np.float64
    np.testing.assert_array_equal(itp, [0.0, 3.0])  # 3 px of A x 1
    np.testing.assert_array_equal(ifn, [0.0, 5.0])  # 1 px of A x 1 + 2 px of B x 2
    cm = np.asarray(m.confusion_matrix(pred, label, 2))
    np.testing.assert_array_equal(cm, [[2, 2], [4, 4]])
    # class IoU: 4 / (4 + 2 + 4) = 0.4; iIoU: 3 / (3 + 2 + 5) = 0.3 (FP = 2 background pixels)
    np.testing.assert_allclose(m.iou_from_confusion(cm), [0.25, 0.4])
    np.testing.assert_allclose(m.instance_iou(itp, ifn, cm, [False, True]), [np.nan, 0.3])
    acc = m.MetricAccumulator(2, mean_instance_size=sizes)
    acc.update(pred, label, instances=inst)
    res = acc.result()
    np.testing.assert_allclose(res["iiou"], 0.3)
    np.testing.assert_allclose(res["miou"], 0.325)
    np.testing.assert_allclose(res["pixel_accuracy"], 0.5)


def test_instance_counts_mask_and_categories():
    pred, label, inst = _random_instances(3, b=3)
    example_mask = np.array([True, False, True])
    groups = m.CITYSCAPES_CATEGORY_OF_CLASS
    got = m.instance_counts(pred, label, inst, 19, mask=example_mask, categories=groups)
    whole = m.instance_counts(pred, label, inst, 19, categories=groups)
    for key, value in got.items():
        np.testing.assert_array_equal(np.asarray(value)[[0, 2]], np.asarray(whole[key])[[0, 2]])
        assert not np.any(np.asarray(value)[1] > 0), key  # the filler example counts nothing
    # a category hit is a hit of any class of the category, so at least the class hits
    assert np.all(np.asarray(whole["instance_category_tp"]) >= np.asarray(whole["instance_tp"]))
    assert np.any(np.asarray(whole["instance_category_tp"]) > np.asarray(whole["instance_tp"]))


def _random_instances(seed, b=2, h=12, w=14):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 11, size=(b, h, w))  # stuff classes
    inst = np.zeros((b, h, w), np.int64)
    pred = rng.integers(0, 19, size=(b, h, w))
    for i in range(b):
        for k in range(5):  # rectangles of instance classes (later ones overwrite)
            cls = int(rng.integers(11, 19))
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            y1, x1 = y0 + rng.integers(1, 5), x0 + rng.integers(1, 6)
            label[i, y0:y1, x0:x1] = cls
            inst[i, y0:y1, x0:x1] = (24 + cls - 11) * 1000 + k  # labelId-style encoding
            good = rng.random((min(y1, h) - y0, min(x1, w) - x0)) < 0.6
            pred[i, y0:y1, x0:x1] = np.where(good, cls, pred[i, y0:y1, x0:x1])
        label[i, rng.random((h, w)) < 0.05] = IGNORE
        inst[i][label[i] == IGNORE] = 0
    inst[1][inst[1] == inst[1].max()] = 26  # a crowd group: not an instance
    return pred, label, inst


def test_iiou_random_against_cityscapes_loop():
    pred, label, inst = _random_instances(7)
    sizes = m.CITYSCAPES_MEAN_INSTANCE_SIZE
    groups = m.CITYSCAPES_CATEGORY_OF_CLASS
    stats = jax.jit(m.batch_statistics, static_argnames=("num_classes", "categories"))(
        pred, label, num_classes=19, instances=inst, categories=groups)
    assert all(v.dtype == jnp.int32 for k, v in stats.items()
               if k not in ("image_iou_sum", "image_class_iou_sum"))
    counts = (stats["instance_class"], stats["instance_size"])
    got_tp, got_fn = m.instance_weighted_sums(*counts, stats["instance_tp"], sizes)
    want_tp, want_fn = ref_instance_counts(pred, label, inst, sizes)
    np.testing.assert_allclose(got_tp, want_tp, rtol=1e-12)
    np.testing.assert_allclose(got_fn, want_fn, rtol=1e-12)
    cat_tp, cat_fn = ref_instance_counts(pred, label, inst, sizes, groups=list(groups))
    got_cat = m.instance_weighted_sums(*counts, stats["instance_category_tp"], sizes,
                                       categories=groups, num_categories=7)
    np.testing.assert_allclose(got_cat[0], cat_tp, rtol=1e-12)
    np.testing.assert_allclose(got_cat[1], cat_fn, rtol=1e-12)

    acc = m.MetricAccumulator.cityscapes()
    acc.update(pred[:1], label[:1], instances=inst[:1])
    acc.add(m.batch_statistics(pred[1:], label[1:], 19, instances=inst[1:], categories=groups))
    res = acc.result()
    cm = ref_confusion(pred, label, 19)
    np.testing.assert_array_equal(res["confusion"], cm)
    want = ref_instance_iou(want_tp, want_fn, cm, sizes > 0)
    np.testing.assert_allclose(res["per_class_iiou"], want, rtol=1e-12)
    np.testing.assert_allclose(res["iiou"], ref_nanmean(want), rtol=1e-12)
    merged = np.stack([np.stack([cm[np.ix_(np.flatnonzero(np.array(groups) == r),
                                           np.flatnonzero(np.array(groups) == s))].sum()
                                 for s in range(7)]) for r in range(7)])
    want_cat = ref_instance_iou(cat_tp, cat_fn, merged, [False] * 5 + [True, True])
    np.testing.assert_allclose(res["per_category_iiou"], want_cat, rtol=1e-12)
    np.testing.assert_allclose(res["category_iiou"], ref_nanmean(want_cat), rtol=1e-12)
    np.testing.assert_allclose(res["per_category_iou"],
                               official_category_iou(cm, groups, 7), rtol=1e-12)
    # statistics without the categories cannot feed an accumulator with categories
    with pytest.raises(ValueError, match="instance_category_tp"):
        acc.add(m.batch_statistics(pred, label, 19, instances=inst))


# ----------------------------------------------------------------------------------------------
# Streaming, formatting, checks
# ----------------------------------------------------------------------------------------------


def test_accumulator_streams_like_one_shot():
    pred, label = _random_batch(8, shape=(6, 5, 5))
    acc = m.MetricAccumulator(5, class_names=[f"c{k}" for k in range(5)])
    for start in range(0, 6, 2):
        acc.update(pred[start:start + 2], label[start:start + 2])
    # a padded final batch: the filler example must change nothing
    acc.update(np.concatenate([pred[:1], pred[:1]]), np.concatenate([label[:1], label[:1]]),
               mask=np.array([False, False]))
    res = acc.result()
    cm = ref_confusion(pred, label, 5)
    np.testing.assert_array_equal(res["confusion"], cm)
    np.testing.assert_allclose(res["miou"], m.mean_iou(cm), rtol=1e-12)
    per_image = [ref_nanmean(ref_class_iou(pred[b], np.where(label[b] == IGNORE, -1, label[b]),
                                           5)) for b in range(6)]
    np.testing.assert_allclose(res["image_miou"], np.mean(per_image), rtol=1e-6)
    assert res["num_images"] == 6
    # each class's IoU averaged over the images where it is defined (in ground truth or prediction)
    per_class = np.array([ref_class_iou(pred[b], np.where(label[b] == IGNORE, -1, label[b]), 5)
                          for b in range(6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column stays NaN
        expected = np.nanmean(per_class, axis=0)
    np.testing.assert_allclose(res["per_class_image_iou"], expected, rtol=1e-6)
    assert set(acc.summary()["per_class_image_iou"]) == {f"c{k}" for k in range(5)}
    assert "c3" in acc.table()
    acc.reset()
    assert acc.result()["num_images"] == 0 and np.isnan(acc.result()["miou"])


def test_majority_class_miou():
    cm = np.array([[50, 10, 0],
                   [5, 25, 0],
                   [0, 0, 0]])  # class 2 absent from ground truth and predictions
    # always class 0 (60 px of 90): IoU 60/90 for class 0, 0 for class 1; class 2 left out
    assert m.majority_class_miou(cm) == pytest.approx((60 / 90) / 2, rel=1e-12)
    baseline = np.zeros_like(cm)
    baseline[:, 0] = cm.sum(axis=1)
    assert m.majority_class_miou(cm) == pytest.approx(m.mean_iou(baseline), rel=1e-12)
    assert float(m.majority_class_miou(jnp.asarray(cm, jnp.int32))) == pytest.approx(1 / 3)
    assert np.isnan(m.majority_class_miou(np.zeros((3, 3), np.int64)))


def test_summary_is_json_ready_with_names():
    pred, label, inst = _random_instances(5)
    pred[pred == 10] = 9
    label[label == 10] = 9  # sky absent everywhere: IoU undefined
    acc = m.MetricAccumulator.cityscapes()
    acc.update(pred, label, instances=inst, mask=np.array([True, True]))
    res, summary = acc.result(), acc.summary()
    text = json.dumps(summary, allow_nan=False)  # no NaN anywhere
    assert json.loads(text) == summary
    assert list(summary["per_class_iou"]) == list(m.CITYSCAPES_CLASS_NAMES)
    assert summary["per_class_iou"]["sky"] is None
    assert summary["per_class_iou"]["car"] == res["per_class_iou"][13]
    # iIoU for the classes and categories that have instances only
    assert list(summary["per_class_iiou"]) == [
        n for n, s in zip(m.CITYSCAPES_CLASS_NAMES, m.CITYSCAPES_MEAN_INSTANCE_SIZE) if s > 0]
    assert list(summary["per_category_iiou"]) == ["human", "vehicle"]
    assert list(summary["per_category_iou"]) == list(m.CITYSCAPES_CATEGORY_NAMES)
    for key in ("miou", "iiou", "category_miou", "category_iiou", "pixel_accuracy",
                "majority_class_miou"):
        assert summary[key] == res[key], key
    assert summary["num_pixels"] == int(res["confusion"].sum())
    assert summary["confusion_matrix"] == res["confusion"].tolist()
    assert summary["majority_class"] == m.CITYSCAPES_CLASS_NAMES[
        int(np.argmax(res["confusion"].sum(axis=1)))]
    table = acc.table("Cityscapes")
    assert table.startswith("Cityscapes") and "iIoU" in table and "vehicle" in table
    assert "majority-class baseline mIoU" in table and "pixel accuracy" in table
    empty = m.MetricAccumulator(3, class_names=["a", "b", "c"])
    assert empty.summary()["majority_class"] is None and empty.summary()["miou"] is None
    assert "n/a" in empty.table()


def test_format_iou_table():
    text = m.format_iou_table(np.array([0.5, np.nan, 0.25]), ["road", "sky", "person"],
                              instance_iou=np.array([np.nan, np.nan, 0.125]))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "IoU", "iIoU"]
    assert lines[2].split() == ["road", "50.00", "n/a"]
    assert lines[3].split() == ["sky", "n/a", "n/a"]
    assert lines[4].split() == ["person", "25.00", "12.50"]
    assert lines[-1].split() == ["mean", "37.50", "12.50"]
    with pytest.raises(ValueError, match="names"):
        m.format_iou_table([0.1, 0.2], ["a"])


def test_check_labels():
    labels = np.array([[0, 3, 255], [19, -1, 19]])
    np.testing.assert_array_equal(m.check_labels(labels, 19), [-1, 19])
    assert m.check_labels(np.array([0, 18, 255]), 19).size == 0
    with pytest.raises(ValueError, match=r"\[-1, 19\]"):
        m.check_labels(labels, 19, raise_error=True)


def test_input_errors():
    pred, label = _random_batch(9)
    with pytest.raises(TypeError, match="predictions must be an integer array"):
        m.confusion_matrix(pred.astype(np.float32), label, 5)
    with pytest.raises(ValueError, match="differs from labels shape"):
        m.confusion_matrix(pred[:, :2], label, 5)
    with pytest.raises(ValueError, match="prefix"):
        m.confusion_matrix(pred, label, 5, mask=np.ones((2,), bool))
    with pytest.raises(TypeError, match="boolean"):
        m.confusion_matrix(pred, label, 5, mask=np.ones((3,), np.int32))
    with pytest.raises(TypeError, match="labels must be an integer"):
        m.per_image_iou(pred, label.astype(np.float32), 5)
    with pytest.raises(ValueError, match="num_classes"):
        m.confusion_matrix(pred, label, 0)
    with pytest.raises(ValueError, match="square"):
        m.iou_from_confusion(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="19 x 19"):
        m.cityscapes_category_iou(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="no mean_instance_size"):
        m.MetricAccumulator(5).update(pred, label, instances=np.zeros_like(label))
    stats = m.batch_statistics(pred, label, 5, instances=np.zeros_like(label))
    with pytest.raises(ValueError, match="no mean_instance_size"):
        m.MetricAccumulator(5).add(stats)
    with pytest.raises(TypeError, match="instances must be an integer array"):
        m.instance_counts(pred, label, label.astype(np.float32), 5)
    with pytest.raises(ValueError, match="instances shape"):
        m.instance_counts(pred, label, label[:, :2], 5)
    with pytest.raises(ValueError, match="must exceed"):
        m.instance_counts(pred, label, label, 5, max_instance_id=1000)
    with pytest.raises(ValueError, match="categories"):
        m.instance_counts(pred, label, label, 5, categories=(0, 1))
    with pytest.raises(TypeError, match="integer counts"):
        m.instance_weighted_sums(label, label.astype(np.float32), label, np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        m.instance_weighted_sums(label, label[:1], label, np.ones(5))
