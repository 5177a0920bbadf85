"""Defects found in review: the training accuracy of one-logit (binary) models, the re-jitted
finiteness check of every checkpoint save, and dead public names."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import sharding
from jaxseg.training import checkpoint, steps
from jaxseg.training.state import TrainState


def _one_step_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Metrics of one train step of a model whose logits are ``logits`` (fed in as the image)."""
  def apply_fn(variables, images, train=False, rngs=None, mutable=False):
    return images * variables["params"]["scale"]

  params = {"scale": jnp.ones((), jnp.float32)}
  tx = optax.sgd(0.1)
  state = TrainState.create(apply_fn=apply_fn, params=params, batch_stats={}, tx=tx,
                            rng=jax.random.PRNGKey(0))
  mesh = sharding.create_mesh(jax.devices()[:1])

  def loss_fn(lg, lb):  # any loss: the metric must not depend on it
    return jnp.mean(jnp.square(lg))

  step = steps.make_train_step(mesh, loss_fn=loss_fn, donate=False)
  batch = sharding.global_batch({"image": logits.astype(np.float32),
                                 "label": labels.astype(np.int32)}, mesh)
  _, metrics = step(jax.device_put(state, sharding.replicated(mesh)), batch)
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


class _CompileCounter(logging.Handler):
  def __init__(self):
    super().__init__(level=logging.DEBUG)
    self.messages = []

  def emit(self, record):
    msg = record.getMessage()
    if msg.startswith("Compiling"):
      self.messages.append(msg)


def _count_compiles(fn):
  logger = logging.getLogger("jax._src.interpreters.pxla")
  handler = _CompileCounter()
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.WARNING)
  try:
    with jax.log_compiles(True):
      result = fn()
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  return result, handler.messages


def _tree(seed, bad=False):
  rng = np.random.default_rng(seed)
  tree = {"params": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                     "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
          "step": jnp.asarray(seed, jnp.int32),
          "opt_state": (jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),)}
  if bad:
    tree["params"]["b"] = tree["params"]["b"].at[1].set(jnp.nan)
  return tree


def test_tree_is_finite_compiles_once_per_tree_structure():
  first, second, nan_tree = _tree(1), _tree(2), _tree(3, bad=True)
  jax.block_until_ready((first, second, nan_tree))
  assert checkpoint.tree_is_finite(first)  # may compile (first use of this structure)
  ok, compiles = _count_compiles(lambda: checkpoint.tree_is_finite(second))
  assert ok
  assert compiles == [], f"a second check of the same tree structure compiled: {compiles}"
  bad, compiles = _count_compiles(lambda: checkpoint.tree_is_finite(nan_tree))
  assert not bad
  assert compiles == []
  # A tree of another structure is checked too (and compiles its own program).
  other = {"a": jnp.ones((4,), jnp.float32), "b": jnp.full((2,), jnp.inf, jnp.float32)}
  assert not checkpoint.tree_is_finite(other)
  assert checkpoint.tree_is_finite({"step": jnp.zeros((), jnp.int32)})  # no float leaf


def test_dead_public_names_are_gone():
  import inspect

  import jaxseg.data
  from jaxseg import evaluate
  from jaxseg.data import pipeline

  assert not hasattr(evaluate, "make_predict_fn")
  assert not hasattr(checkpoint.Checkpointer, "wait")
  assert "extra" not in inspect.signature(checkpoint.Checkpointer.save).parameters
  for name in ("train_dataset", "eval_dataset"):
    assert not hasattr(jaxseg.data, name)
    assert name not in jaxseg.data.__all__
    assert not hasattr(pipeline, name)
  # The iterators the trainer uses are still exported.
  assert callable(jaxseg.data.create_train_iterator)
  assert callable(jaxseg.data.create_eval_iterator)
