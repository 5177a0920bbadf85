"""Hypothesis fuzzing of every registered loss (``available_losses()``), on fixed shapes.

Each loss is compiled once (one program computes the value and gradient for float32 and for
bfloat16 logits); Hypothesis varies the values only: label layouts (random, all void, a single
valid pixel, one class only, absent classes, void written as out-of-range values) and logits
from 0 to ``|F| = 1e4``, with ties. On any such input the value and the gradient are finite, in
both dtypes, and a batch without a valid pixel gives exactly 0 with a zero gradient.

A NaN (or infinity) logit at a valid pixel makes the loss non-finite (a diverged run shows in its
loss); at a void pixel it changes neither the value nor the gradient (the gradient there is 0).

Deterministic (``derandomize=True``, no example database) and bounded: 25 examples per loss,
the whole file in about 22 s on a 2-core CPU, compilation included (most of it).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from test_bad_input import BINARY, LOSSES, VOID, B, C, H, W, loss_fn

SCALES = (0.0, 1e-3, 1.0, 30.0, 1e4)
LAYOUTS = ("random", "all void", "one valid pixel", "one class", "absent classes",
           "out-of-range void", "no void")


@functools.lru_cache(maxsize=None)
def program(name):
  """``(value, grad)`` for the float32 logits and for the same logits in bfloat16, jitted."""
  value_and_grad = jax.value_and_grad(loss_fn(name))

  def both(logits, labels):
    return value_and_grad(logits, labels), value_and_grad(logits.astype(jnp.bfloat16), labels)

  return jax.jit(both)


def make_batch(name, seed, scale, layout, ties):
  rng = np.random.default_rng(seed)
  classes = 2 if name in BINARY else C
  shape = (B, H, W) if name in BINARY else (B, H, W, C)
  logits = rng.normal(size=shape)
  if ties:
    logits = np.round(logits)
  logits = (scale * logits).astype(np.float32)
  labels = rng.integers(0, classes, size=(B, H, W))
  void = rng.random((B, H, W)) < 0.3
  if layout == "all void":
    void[:] = True
  elif layout == "one valid pixel":
    void[:] = True
    void[tuple(rng.integers(0, (B, H, W)))] = False
  elif layout == "one class":
    labels[:] = rng.integers(0, classes)
  elif layout == "absent classes":
    labels = np.minimum(labels, 1) if classes > 2 else np.zeros_like(labels)
  elif layout == "no void":
    void[:] = False
  labels[void] = VOID
  if layout == "out-of-range void":
    labels[void] = rng.choice([classes, -1, 1000, VOID], size=int(void.sum()))
  return logits, labels.astype(np.int32)


@pytest.mark.parametrize("name", LOSSES)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from(SCALES),
       layout=st.sampled_from(LAYOUTS), ties=st.booleans())
def test_finite_value_and_gradient_on_valid_input(name, seed, scale, layout, ties):
  logits, labels = make_batch(name, seed, scale, layout, ties)
  for (value, grad), dtype in zip(program(name)(logits, labels), (jnp.float32, jnp.bfloat16)):
    assert value.dtype == jnp.float32 and grad.dtype == dtype
    assert np.isfinite(float(value)), (name, layout, scale, dtype)
    assert np.all(np.isfinite(np.asarray(grad, np.float32))), (name, layout, scale, dtype)
    if layout == "all void":
      assert float(value) == 0.0 and not np.any(np.asarray(grad, np.float32))


def _poisoned(name, pixel, bad):
  logits, labels = make_batch(name, 7, 1.0, "random", False)
  labels[0, 0, 0], labels[0, 0, 1] = 1, VOID  # a valid pixel and a void one
  poisoned = logits.copy()
  poisoned[(0, 0, pixel) + ((1,) if poisoned.ndim == 4 else ())] = bad
  return logits, poisoned, labels


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", LOSSES)
def test_non_finite_logit_at_a_void_pixel_changes_nothing(name, bad):
  logits, poisoned, labels = _poisoned(name, 1, bad)
  (want, want_grad), _ = program(name)(logits, labels)
  for value, grad in program(name)(poisoned, labels):
    grad = np.asarray(grad, np.float32)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)), name
    assert not np.any(grad[0, 0, 1]), name  # no gradient reaches the void pixel
  (value, grad) = program(name)(poisoned, labels)[0]
  np.testing.assert_allclose(float(value), float(want), rtol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", LOSSES)
def test_nan_logit_at_a_valid_pixel_shows_in_the_loss(name):
  _, poisoned, labels = _poisoned(name, 0, np.nan)
  for value, _ in program(name)(poisoned, labels):
    assert not np.isfinite(float(value)), name


@pytest.mark.parametrize("name", LOSSES)
def test_one_pixel_batch(name):
  """A [1, 1, 1] batch (its own shape, compiled once per loss): finite, 0 when void."""
  fn = jax.jit(jax.value_and_grad(loss_fn(name)))
  shape = (1, 1, 1) if name in BINARY else (1, 1, 1, C)
  for label in (0, 1, VOID):
    for scale in (1.0, 1e4):
      logits = np.full(shape, scale, np.float32)
      value, grad = fn(logits, np.full((1, 1, 1), label, np.int32))
      assert np.isfinite(float(value)) and np.all(np.isfinite(grad)), (name, label, scale)
      if label == VOID:
        assert float(value) == 0.0 and not np.any(grad)


def test_sharded_lovasz_non_finite_logit_at_a_void_pixel():
  from jaxseg.losses import lovasz_softmax_all_to_all  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((1,), ("data",))
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda x, y: lovasz_softmax_all_to_all(x, y, mesh=mesh)))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  fn = lambda x, y: value_and_grad(*jax.device_put((x, y), sharded))  # noqa: E731
  logits, poisoned, labels = _poisoned("lovasz_softmax", 1, np.nan)
  want, want_grad = fn(logits, labels)
  value, grad = fn(poisoned, labels)
  np.testing.assert_allclose(float(value), float(want), rtol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-9)
  _, poisoned, labels = _poisoned("lovasz_softmax", 0, np.nan)
  assert not np.isfinite(float(fn(poisoned, labels)[0]))
