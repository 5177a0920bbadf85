"""The input contract of every public loss and metric (``jaxseg/_validation.py``): one sweep of
bad inputs through every registered loss (``available_losses()``) and every metric.

* a wrong dtype raises ``TypeError``; a wrong rank or shape, or a bad static argument,
  ``ValueError``; at trace time (eagerly and under ``jit`` alike), with a message naming the
  argument;
* label values are never an error inside a loss or metric: anything outside ``[0, C)`` is void,
  exactly as ``ignore_index`` is;
* an empty batch (``B``, ``H`` or ``W`` = 0) is valid: every loss gives 0 with a zero gradient,
  every metric counts nothing (NaN scores);
* binary losses take ``[B, H, W]`` or ``[B, H, W, 1]`` logits, all of them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics as m
from jaxseg.losses import available_losses, build_loss, lovasz_softmax_all_to_all
from jaxseg.losses.neuroiou import init_surrogate

B, H, W, C = 2, 5, 6, 3
VOID = 255
BINARY = ("binary_cross_entropy", "binary_hinge", "lovasz_hinge", "lovasz_sigmoid")
# losses built by a builder of their own need its arguments
BUILD_KWARGS = {
    "margin_calibration": {"rho_0i": [0.3, 0.1, 0.2], "rho_i0": [0.01, 0.0, 0.02]},
    "neuroiou": {"surrogate": init_surrogate(jax.random.key(0), hidden=(8, 8))},
}
SCORES_ARG = {"lovasz_sigmoid": "probs"}  # the name of the scores argument, when not logits
PER_IMAGE = ("lovasz_hinge", "lovasz_sigmoid", "lovasz_softmax", "pixiou", "soft_dice",
             "soft_jaccard", "tversky")
LOSSES = available_losses()
# every loss, and the losses with a per-image mode in both modes
VARIANTS = [(n, {}) for n in LOSSES] + [(n, {"per_image": p}) for n in PER_IMAGE
                                         for p in (False, True)]


def _id(variant):
  name, kwargs = variant
  return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def loss_fn(name, **kwargs):
  return build_loss({"name": name, "kwargs": {**BUILD_KWARGS.get(name, {}), **kwargs}})


def inputs(name, shape=(B, H, W), seed=0, void_fraction=0.2):
  """Float32 logits (``[B, H, W]`` for a binary loss, ``[B, H, W, C]`` else) and int32 labels."""
  rng = np.random.default_rng(seed)
  classes = 2 if name in BINARY else C
  logits = rng.normal(size=shape if name in BINARY else shape + (C,)).astype(np.float32)
  labels = rng.integers(0, classes, size=shape).astype(np.int32)
  labels[rng.random(shape) < void_fraction] = VOID
  return logits, labels


def test_every_registered_loss_is_in_the_table():
  assert set(BINARY) <= set(LOSSES) and set(PER_IMAGE) <= set(LOSSES)
  for name in LOSSES:  # builds with the table's arguments
    loss_fn(name)


# ----------------------------------------------------------------------------------------------
# The sweep of bad inputs
# ----------------------------------------------------------------------------------------------


def _channels_first(logits, labels):
  return (np.moveaxis(logits, -1, 1) if logits.ndim == 4 else logits[:, None]), labels


# case: (transform of (logits, labels), exception, words the message must contain)
LOSS_SWEEP = {
    "float labels": (lambda x, y: (x, y.astype(np.float32)), TypeError, ["labels", "integer"]),
    "bool labels": (lambda x, y: (x, y == 1), TypeError, ["labels", "integer"]),
    "integer logits": (lambda x, y: (x.astype(np.int32), y), TypeError, ["logits", "floating"]),
    "no batch axis": (lambda x, y: (x[0], y[0]), ValueError, ["logits", "[B, H, W"]),
    "labels with a channel axis": (lambda x, y: (x, y[..., None]), ValueError,
                                   ["labels", "[B, H, W]"]),
    "mismatched shapes": (lambda x, y: (x, y[:, :-1]), ValueError, ["labels", "logits"]),
    "channels-first logits": (_channels_first, ValueError, ["logits", "channels-first"]),
}


@pytest.mark.parametrize("case", list(LOSS_SWEEP))
@pytest.mark.parametrize("name", LOSSES)
def test_loss_rejects_bad_input(name, case):
  transform, error, words = LOSS_SWEEP[case]
  words = [SCORES_ARG.get(name, w) if w == "logits" else w for w in words]
  fn = loss_fn(name)
  logits, labels = transform(*inputs(name))
  for call in (fn, jax.jit(fn)):
    with pytest.raises(error) as info:
      call(logits, labels)
    for word in words:
      assert word in str(info.value), (name, case, str(info.value))


@pytest.mark.parametrize("ignore_index", [2.5, "255", None, True])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_rejects_a_bad_ignore_index(name, ignore_index):
  with pytest.raises(ValueError, match="ignore_index"):
    loss_fn(name, ignore_index=ignore_index)(*inputs(name))


@pytest.mark.parametrize("name", sorted(set(LOSSES) - set(BINARY)))
def test_multiclass_loss_rejects_logits_without_classes(name):
  logits, labels = inputs(name)
  with pytest.raises(ValueError, match="logits"):
    loss_fn(name)(logits[..., :0], labels)


@pytest.mark.parametrize("name", BINARY)
def test_binary_loss_rejects_two_channels(name):
  logits, labels = inputs(name)
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    loss_fn(name)(np.stack([logits, logits], -1), labels)


def test_sharded_lovasz_follows_the_contract():
  mesh = jax.make_mesh((1,), ("data",))
  logits, labels = inputs("lovasz_softmax")
  fn = lambda x, y, **kw: lovasz_softmax_all_to_all(x, y, mesh=mesh, **kw)  # noqa: E731
  for case, (transform, error, words) in LOSS_SWEEP.items():
    with pytest.raises(error) as info:
      fn(*transform(logits, labels))
    for word in words:
      assert word in str(info.value), (case, str(info.value))
  with pytest.raises(ValueError, match="ignore_index"):
    fn(logits, labels, ignore_index=2.5)
  value, grad = jax.value_and_grad(fn)(jnp.zeros((0, H, W, C)), jnp.zeros((0, H, W), jnp.int32))
  assert float(value) == 0.0 and grad.shape == (0, H, W, C)


# ----------------------------------------------------------------------------------------------
# Valid edge cases: empty batches, label values, the binary trailing channel
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, H, W), (B, 0, W), (B, H, 0)], ids=["B=0", "H=0", "W=0"])
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_empty_batch_gives_zero_with_zero_gradient(variant, shape):
  name, kwargs = variant
  logits, labels = inputs(name, shape)
  value, grad = jax.jit(jax.value_and_grad(loss_fn(name, **kwargs)))(logits, labels)
  assert value.shape == () and value.dtype == jnp.float32 and float(value) == 0.0
  assert grad.shape == logits.shape and grad.dtype == logits.dtype


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_labels_out_of_range_are_void(variant):
  """Void under jit: a label outside [0, C) counts exactly as ignore_index does."""
  name, kwargs = variant
  logits, labels = inputs(name, seed=1)
  classes = 2 if name in BINARY else C
  void = labels == VOID
  assert void.sum() >= 4
  strange = labels.copy()
  strange[void] = np.resize([classes, -1, 1000, classes + 1], int(void.sum()))
  fn = jax.jit(jax.value_and_grad(loss_fn(name, **kwargs)))
  want_value, want_grad = fn(logits, labels)
  got_value, got_grad = fn(logits, strange)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-6)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-9)
  if name not in BINARY:  # the labels the binary losses void at C = 2 are the others' classes
    want_value = fn(logits, np.full_like(labels, VOID))[0]
    assert float(fn(logits, np.full_like(labels, -3))[0]) == float(want_value) == 0.0


@pytest.mark.parametrize("name", BINARY)
def test_binary_losses_take_a_trailing_channel_of_one(name):
  logits, labels = inputs(name, seed=2)
  fn = jax.value_and_grad(loss_fn(name))
  value, grad = fn(logits, labels)
  value1, grad1 = fn(logits[..., None], labels)
  np.testing.assert_allclose(value1, value, rtol=1e-7)
  assert grad1.shape == (B, H, W, 1)
  np.testing.assert_allclose(grad1[..., 0], grad, rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

INSTANCES = np.zeros((B, H, W), np.int32)
METRICS = {
    "confusion_matrix": lambda p, y, c=C, **kw: m.confusion_matrix(p, y, c, **kw),
    "per_image_iou": lambda p, y, c=C, **kw: m.per_image_iou(p, y, c, **kw),
    "per_image_mean_iou": lambda p, y, c=C, **kw: m.per_image_mean_iou(p, y, c, **kw),
    "batch_mean_iou": lambda p, y, c=C, **kw: m.batch_mean_iou(p, y, c, **kw),
    "batch_statistics": lambda p, y, c=C, **kw: m.batch_statistics(p, y, c, **kw),
    "instance_counts": lambda p, y, c=C, **kw: m.instance_counts(
        p, y, INSTANCES[:len(y)] if np.ndim(y) == 3 else np.zeros(np.shape(y), np.int32), c,
        max_instance_id=1010, **kw),
    "MetricAccumulator.statistics": lambda p, y, c=C, **kw: m.MetricAccumulator(
        c, **{k: v for k, v in kw.items() if k == "ignore_index"}).statistics(
            p, y, **{k: v for k, v in kw.items() if k != "ignore_index"}),
    "MetricAccumulator.update": lambda p, y, c=C, **kw: m.MetricAccumulator(
        c, **{k: v for k, v in kw.items() if k == "ignore_index"}).update(
            p, y, **{k: v for k, v in kw.items() if k != "ignore_index"}),
}


def metric_inputs(shape=(B, H, W), seed=0):
  rng = np.random.default_rng(seed)
  predictions = rng.integers(0, C, size=shape).astype(np.int32)
  labels = rng.integers(0, C, size=shape).astype(np.int32)
  labels[rng.random(shape) < 0.2] = VOID
  return predictions, labels


def _logits_as_predictions(p, y):
  return np.random.default_rng(0).normal(size=p.shape + (C,)).astype(np.float32), y


# case: (transform of (predictions, labels), extra keyword arguments, exception, words)
METRIC_SWEEP = {
    "float labels": (lambda p, y: (p, y.astype(np.float32)), {}, TypeError,
                     ["labels", "integer"]),
    "logits as predictions": (_logits_as_predictions, {}, TypeError, ["predictions", "integer"]),
    "channels-first logits as predictions": (
        lambda p, y: (np.moveaxis(_logits_as_predictions(p, y)[0], -1, 1), y), {}, TypeError,
        ["predictions", "integer"]),
    "predictions with a channel axis": (lambda p, y: (p[..., None], y), {}, ValueError,
                                        ["predictions", "labels"]),
    "mismatched shapes": (lambda p, y: (p, y[:, :-1]), {}, ValueError, ["labels"]),
    "float mask": (lambda p, y: (p, y), {"mask": np.ones(B, np.float32)}, TypeError, ["mask"]),
    "mask of another shape": (lambda p, y: (p, y), {"mask": np.ones(B + 1, bool)}, ValueError,
                              ["mask"]),
    "bad ignore_index": (lambda p, y: (p, y), {"ignore_index": 2.5}, ValueError,
                         ["ignore_index"]),
    "bad num_classes": (lambda p, y: (p, y), {"c": 0}, ValueError, ["num_classes"]),
    "float num_classes": (lambda p, y: (p, y), {"c": 3.0}, ValueError, ["num_classes"]),
}


@pytest.mark.parametrize("case", list(METRIC_SWEEP))
@pytest.mark.parametrize("name", list(METRICS))
def test_metric_rejects_bad_input(name, case):
  transform, kwargs, error, words = METRIC_SWEEP[case]
  with pytest.raises(error) as info:
    METRICS[name](*transform(*metric_inputs()), **kwargs)
  for word in words:
    assert word in str(info.value), (name, case, str(info.value))


@pytest.mark.parametrize("name", [n for n in METRICS if n not in ("confusion_matrix",
                                                                   "batch_mean_iou")])
def test_per_image_metrics_need_an_image_axis(name):
  with pytest.raises(ValueError, match="image axis"):
    METRICS[name](np.int32(1), np.int32(1))


@pytest.mark.parametrize("shape", [(0, H, W), (B, 0, W)], ids=["B=0", "H=0"])
def test_metrics_of_an_empty_batch_count_nothing(shape):
  p, y = metric_inputs(shape)
  np.testing.assert_array_equal(m.confusion_matrix(p, y, C), np.zeros((C, C)))
  assert m.per_image_iou(p, y, C).shape == (shape[0], C)
  assert m.per_image_mean_iou(p, y, C).shape == (shape[0],)
  assert np.isnan(float(m.batch_mean_iou(p, y, C)))
  stats = m.batch_statistics(p, y, C)
  assert int(stats["image_count"]) == 0 and float(stats["image_iou_sum"]) == 0.0
  acc = m.MetricAccumulator(C)
  acc.update(p, y)
  res = acc.result()
  assert np.isnan(res["miou"]) and np.isnan(res["pixel_accuracy"]) and np.isnan(res["image_miou"])
  assert res["num_images"] == 0 and res["num_pixels"] == 0
  assert acc.summary()["miou"] is None


def test_metrics_count_labels_out_of_range_nowhere():
  p, y = metric_inputs(seed=3)
  strange = y.copy()
  void = y == VOID
  strange[void] = np.resize([C, -1, 1000], int(void.sum()))
  for name in ("confusion_matrix", "per_image_iou", "batch_statistics", "instance_counts"):
    want, got = METRICS[name](p, y), METRICS[name](p, strange)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  np.testing.assert_array_equal(m.check_labels(strange, C), [-1, C, 1000])


CONFUSION_FUNCTIONS = [m.iou_from_confusion, m.mean_iou, m.pixel_accuracy, m.class_accuracy,
                       m.mean_class_accuracy, m.frequency_weighted_iou, m.majority_class_miou,
                       lambda cm: m.merge_confusion(cm, [0] * cm.shape[-1]),
                       lambda cm: m.instance_iou(np.zeros(cm.shape[-1]), np.zeros(cm.shape[-1]),
                                                 cm, np.ones(cm.shape[-1], bool))]


@pytest.mark.parametrize("fn", CONFUSION_FUNCTIONS)
def test_functions_of_a_confusion_matrix(fn):
  with pytest.raises(ValueError, match="square"):
    fn(np.zeros((3, 4), np.int64))
  with pytest.raises(TypeError, match="cm"):
    fn(np.zeros((3, 3), bool))
  empty = np.asarray(fn(np.zeros((3, 3), np.int64)), np.float64)
  assert np.isnan(empty).all() or not empty.any()  # undefined (NaN), or merged zero counts
