"""Evaluation: multi-scale + flip prediction, padded batches, confusion, tables, baseline."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from jaxseg import evaluate as ev
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
  step = ev.make_eval_step(mesh, apply_fn, num_classes=C, scales=(1.0, 0.5), flip=True)
  batches, want = [], np.zeros((C, C), np.int64)
  for i in range(3):
    images = rng.normal(size=(4, 8, 10, 3)).astype(np.float32)
    labels = rng.integers(0, C, size=(4, 8, 10)).astype(np.int32)
    labels[:, :2] = 255                           # padding / void rows
    mask = np.array([True, True, True, i < 2])    # the last batch has a filler example
    batches.append({"image": images, "label": labels, "example_mask": mask, "id": np.array(["x"] * 4)})
    pred = _reference(images, (1.0, 0.5), True).argmax(-1)
    for b in range(4):
      if mask[b]:
        ok = labels[b] != 255
        np.add.at(want, (labels[b][ok], pred[b][ok]), 1)
  cm, loss = ev.evaluate(step, variables, batches, mesh, num_classes=C)
  assert loss is None
  np.testing.assert_array_equal(cm, want)
  cm2, _ = ev.evaluate(step, variables, batches, mesh, num_classes=C, max_batches=1)
  assert cm2.sum() < cm.sum()
  # With a loss: the mean of per-batch losses.
  step_l = ev.make_eval_step(mesh, apply_fn, num_classes=C,
                             loss_fn=lambda lg, lb: jnp.mean(jnp.where(lb != 255, 1.0, 0.0)))
  _, loss = ev.evaluate(step_l, variables, batches, mesh, num_classes=C)
  fractions = [np.mean(np.where(b["example_mask"][:, None, None], b["label"] != 255, False))
               for b in batches]
  assert loss == pytest.approx(np.mean(fractions), rel=1e-6)


def test_summary_table_and_majority_baseline():
  cm = np.array([[50, 10, 0],
                 [5, 25, 0],
                 [0, 0, 0]])    # class 2 absent from ground truth and predictions
  s = ev.summarize(cm, ["bg", "cat", "dog"])
  assert s["per_class_iou"]["bg"] == pytest.approx(50 / 65)
  assert s["per_class_iou"]["cat"] == pytest.approx(25 / 40)
  assert s["per_class_iou"]["dog"] is None
  assert s["miou"] == pytest.approx((50 / 65 + 25 / 40) / 2)
  assert s["pixel_accuracy"] == pytest.approx(75 / 90)
  # Majority class bg (60 px of 90): IoU 60/90 for bg, 0 for cat; dog left out.
  assert s["majority_class_miou"] == pytest.approx((60 / 90) / 2)
  assert s["majority_class"] == "bg"
  table = ev.format_table(s, "T")
  assert "cat" in table and "n/a" in table and "majority-class baseline" in table
  with pytest.raises(ValueError, match="class names"):
    ev.summarize(cm, ["a"])
  with pytest.raises(ValueError, match="scales"):
    ev.predict_probabilities(apply_fn, {"w": W_MIX}, jnp.zeros((1, 4, 4, 3)), scales=())
