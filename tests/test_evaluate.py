"""Evaluation: multi-scale + flip prediction, padded batches into the metric accumulator."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from jaxseg import evaluate as ev
from jaxseg import metrics as m
from jaxseg import sharding

C = 3
W_MIX = np.random.default_rng(0).normal(size=(6, C)).astype(np.float32)


def apply_fn(variables, images, train=False):
  """Stand-in model, not flip-equivariant: each pixel sees itself and its right neighbour."""
  assert not train
  right = jnp.concatenate([images[:, :, 1:], images[:, :, -1:]], axis=2)
  return jnp.concatenate([images, right], -1) @ variables["w"]


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference(images, scales, flip):
  """float64 NumPy model; resizing by TensorFlow's bilinear (half-pixel centres) resize."""
  b, h, w, _ = images.shape

  def model(x):
    right = np.concatenate([x[:, :, 1:], x[:, :, -1:]], axis=2)
    return np.concatenate([x, right], -1) @ W_MIX.astype(np.float64)

  def resize(x, size):
    if size == x.shape[1:3]:
      return x
    return tf.image.resize(x, size, method="bilinear", antialias=False).numpy().astype(np.float64)

  total = 0
  n = 0
  for s in scales:
    size = (int(round(h * s)), int(round(w * s)))
    x = resize(images.astype(np.float64), size)
    views = [model(x)] + ([model(x[:, :, ::-1])[:, :, ::-1]] if flip else [])
    for logits in views:
      total = total + _softmax(resize(logits, (h, w)))
      n += 1
  return total / n


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((1.0,), True),
                                         ((1.0, 0.75, 0.5), True)])
def test_multi_scale_flip_probabilities(scales, flip):
  images = np.random.default_rng(1).normal(size=(2, 12, 16, 3)).astype(np.float32)
  got = ev.predict_probabilities(apply_fn, {"w": jnp.asarray(W_MIX)}, jnp.asarray(images),
                                 scales=scales, flip=flip)
  want = _reference(images, scales, flip)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
  if flip:  # flipping matters for this model (the test would notice a missing flip-back)
    plain = _reference(images, scales, False)
    assert np.max(np.abs(plain - want)) > 1e-3


def test_binary_one_logit_model_gives_two_class_probabilities():
  logits = jnp.asarray([[[[0.0], [2.0]]]])
  probs = ev.predict_probabilities(lambda v, x, train: x[..., :1], None, logits)
  s = 1 / (1 + np.exp(-2.0))
  np.testing.assert_allclose(np.asarray(probs)[0, 0], [[0.5, 0.5], [1 - s, s]], atol=1e-6)


def test_evaluate_padded_batches_against_numpy():
  rng = np.random.default_rng(2)
  mesh = sharding.create_mesh()
  variables = {"w": jnp.asarray(W_MIX)}
  acc = m.MetricAccumulator(C, class_names=["bg", "cat", "dog"])
  step = ev.make_eval_step(mesh, apply_fn, acc, scales=(1.0, 0.5), flip=True)
  batches, want = [], np.zeros((C, C), np.int64)
  for i in range(3):
    images = rng.normal(size=(4, 8, 10, 3)).astype(np.float32)
    labels = rng.integers(0, C, size=(4, 8, 10)).astype(np.int32)
    labels[:, :2] = 255                           # padding / void rows
    mask = np.array([True, True, True, i < 2])    # the last batch has a filler example
    batches.append({"image": images, "label": labels, "example_mask": mask,
                    "id": np.array(["x"] * 4)})
    pred = _reference(images, (1.0, 0.5), True).argmax(-1)
    for b in range(4):
      if mask[b]:
        ok = labels[b] != 255
        np.add.at(want, (labels[b][ok], pred[b][ok]), 1)
  summary = ev.evaluate(step, variables, batches, mesh, acc)
  assert "loss" not in summary
  np.testing.assert_array_equal(acc.result()["confusion"], want)
  assert summary["confusion_matrix"] == want.tolist()
  assert summary["num_images"] == 11
  # the summary is the accumulator's: named, JSON-ready, with the majority-class baseline
  assert summary == acc.summary()
  json.dumps(summary, allow_nan=False)
  iou = m.iou_from_confusion(want)
  assert summary["per_class_iou"] == {"bg": iou[0], "cat": iou[1], "dog": iou[2]}
  assert summary["miou"] == pytest.approx(np.mean(iou), rel=1e-12)
  assert summary["majority_class_miou"] == pytest.approx(m.majority_class_miou(want), rel=1e-12)
  assert "majority-class baseline" in acc.table()
  # evaluate() starts afresh and stops after max_batches
  summary_1 = ev.evaluate(step, variables, batches, mesh, acc, max_batches=1)
  assert 0 < summary_1["num_pixels"] < summary["num_pixels"]
  # With a loss: the mean of per-batch losses, filler examples void.
  step_l = ev.make_eval_step(mesh, apply_fn, acc,
                             loss_fn=lambda lg, lb: jnp.mean(jnp.where(lb != 255, 1.0, 0.0)))
  loss = ev.evaluate(step_l, variables, batches, mesh, acc)["loss"]
  fractions = [np.mean(np.where(b["example_mask"][:, None, None], b["label"] != 255, False))
               for b in batches]
  assert loss == pytest.approx(np.mean(fractions), rel=1e-6)
  step_nan = ev.make_eval_step(mesh, apply_fn, acc, loss_fn=lambda lg, lb: jnp.nan)
  assert ev.evaluate(step_nan, variables, batches, mesh, acc)["loss"] is None  # JSON: no NaN


def oracle_apply_fn(variables, images, train=False):
  """Stand-in model that predicts the class id stored in the image's first channel."""
  return 10.0 * jax.nn.one_hot(images[..., 0].astype(jnp.int32), 19)


def test_cityscapes_evaluation_reports_the_benchmark_scores():
  """With instance ids and a Cityscapes accumulator the step counts instances: the evaluation
  equals the accumulator fed with the host arrays, and reports class and category IoU and iIoU."""
  rng = np.random.default_rng(4)
  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator.cityscapes()
  step = ev.make_eval_step(mesh, oracle_apply_fn, acc)
  host = m.MetricAccumulator.cityscapes()
  batches = []
  for i in range(2):
    labels = rng.integers(0, 19, size=(2, 16, 24)).astype(np.int32)
    labels[:, :3] = 255
    k = rng.integers(0, 3, labels.shape)  # three instances per class, ids labelId * 1000 + k
    instances = np.where(labels >= 11, 24000 + 1000 * (labels - 11) + k, 0)
    instances = np.where(labels == 255, 0, instances).astype(np.int32)
    preds = np.where(rng.random(labels.shape) < 0.7, np.where(labels == 255, 0, labels),
                     rng.integers(0, 19, labels.shape)).astype(np.int32)
    images = np.repeat(preds[..., None], 3, axis=-1).astype(np.float32)
    mask = np.array([True, i == 0])
    batches.append({"image": images, "label": labels, "instance": instances,
                    "example_mask": mask})
    host.update(preds, labels, mask=mask, instances=instances)
  summary = ev.evaluate(step, {}, batches, mesh, acc)
  assert summary == host.summary()
  for key in ("miou", "iiou", "category_miou", "category_iiou"):
    assert 0 < summary[key] < 1, key
  assert set(summary["per_category_iiou"]) == {"human", "vehicle"}
  table = acc.table()
  assert "iIoU" in table and "category" in table


def test_eval_scales_must_be_valid():
  with pytest.raises(ValueError, match="scales"):
    ev.predict_probabilities(apply_fn, {"w": W_MIX}, jnp.zeros((1, 4, 4, 3)), scales=())
  with pytest.raises(ValueError, match="positive"):
    ev.predict_probabilities(apply_fn, {"w": W_MIX}, jnp.zeros((1, 4, 4, 3)), scales=(1.0, 0.0))
  assert not hasattr(ev, "summarize") and not hasattr(ev, "format_table")
