"""Defects found in review: the training accuracy of one-logit (binary) models, the re-jitted
finiteness check of every checkpoint save, and dead public names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.training import checkpoint, mesh as mesh_lib, steps
from jaxseg.training.state import TrainState


def _one_step_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Metrics of one train step of a model whose logits are ``logits`` (fed in as the image)."""
  def apply_fn(variables, images, train=False, rngs=None, mutable=False):
    return images * variables["params"]["scale"]

  params = {"scale": jnp.ones((), jnp.float32)}
  tx = optax.sgd(0.1)
  state = TrainState.create(apply_fn=apply_fn, params=params, batch_stats={}, tx=tx,
                            rng=jax.random.PRNGKey(0))
  mesh = mesh_lib.create_mesh(jax.devices()[:1])

  def loss_fn(lg, lb):  # any loss: the metric must not depend on it
    return jnp.mean(jnp.square(lg))

  step = steps.make_train_step(mesh, loss_fn=loss_fn, donate=False)
  batch = mesh_lib.global_batch({"image": logits.astype(np.float32),
                                 "label": labels.astype(np.int32)}, mesh)
  _, metrics = step(jax.device_put(state, mesh_lib.replicated(mesh)), batch)
  return jax.device_get(metrics)


def test_one_logit_accuracy_is_foreground_where_logit_positive():
  rng = np.random.default_rng(0)
  B, H, W = 2, 3, 4
  labels = rng.integers(0, 2, size=(B, H, W))
  labels[0, 0, :2] = 255  # void pixels are not counted
  logits = rng.normal(size=(B, H, W, 1))
  valid = labels != 255
  want = np.sum(((logits[..., 0] > 0) == labels) & valid) / np.sum(valid)
  background_share = np.sum((labels == 0) & valid) / np.sum(valid)
  assert abs(want - background_share) > 0.1  # the case tells the two apart
  got = float(_one_step_metrics(logits, labels)["accuracy"])
  assert got == pytest.approx(want, abs=1e-6)

  # A perfect binary prediction scores 1, a fully wrong one 0.
  perfect = np.where(labels == 1, 2.0, -2.0)[..., None]
  assert float(_one_step_metrics(perfect, labels)["accuracy"]) == pytest.approx(1.0)
  assert float(_one_step_metrics(-perfect, labels)["accuracy"]) == pytest.approx(0.0)


def test_multi_class_accuracy_is_still_the_argmax():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, size=(2, 3, 4))
  labels[1, 2, 3] = 255
  logits = rng.normal(size=(2, 3, 4, 3))
  valid = labels != 255
  want = np.sum((np.argmax(logits, -1) == labels) & valid) / np.sum(valid)
  got = float(_one_step_metrics(logits, labels)["accuracy"])
  assert got == pytest.approx(want, abs=1e-6)
