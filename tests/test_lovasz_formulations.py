"""Every sort formulation of the Lovász losses against float64 references, and global x64 mode.

The formulations (``jaxseg.losses.extension``): ``packed64`` (CPU's), ``pairs`` (GPU's and TPU's)
and ``batched``, all run here on the CPU; ``auto`` picks one when the function is lowered. Each
must give the float64 reference's values everywhere and its gradients where the errors have no
ties (at ties any order is a valid subgradient). Global ``jax_enable_x64`` (the ``x64`` fixture)
must change nothing for 16- and 32-bit inputs, and make float64 inputs compute in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lovasz_reference as ref
from jaxseg.losses import (lovasz_extension, lovasz_hinge, lovasz_sigmoid, lovasz_softmax,
                           pixiou_loss)
from jaxseg.losses import extension
from x64_mode import global_x64

FORMULATIONS = ("packed64", "pairs", "batched", "auto")


@functools.lru_cache(maxsize=None)
def _extension_value_and_grad(sort, weighted):
  if weighted:
    fn = lambda e, g, v, w: lovasz_extension(e, g, valid=v, weights=w, sort=sort)  # noqa: E731
  else:
    fn = lambda e, g, v: lovasz_extension(e, g, valid=v, sort=sort)  # noqa: E731
  return jax.jit(jax.value_and_grad(lambda *a: fn(*a).sum()))


def _reference_rows(errors, gt, valid, weights=None):
  """Float64 values and gradients of each row from the definition (stable decreasing order)."""
  values, grads = [], []
  for r in range(errors.shape[0]):
    keep = valid[r]
    e = errors[r].astype(np.float64)
    order = np.flatnonzero(keep)[np.argsort(-e[keep], kind="stable")]
    d = gt[r][order]
    w = np.ones(len(order)) if weights is None else weights[r][order].astype(np.float64)
    inter = w[d].sum() - np.cumsum(w * d)
    union = w[d].sum() + np.cumsum(w * ~d)
    jac = np.where(union > 0, 1.0 - inter / np.where(union > 0, union, 1.0), 0.0)
    g = np.diff(np.concatenate([[0.0], jac]))
    values.append(float(np.dot(e[order], g)) if len(order) else 0.0)
    full = np.zeros(errors.shape[1])
    full[order] = g
    grads.append(full)
  return np.array(values), np.array(grads)


def _rows_with_relevant(num_pixels, counts, seed):
  """Tie-free rows of ``num_pixels`` in which exactly ``counts[r]`` pixels can matter: the
  ``counts[r]`` largest errors, the smallest of which is ground truth (with up to 39 more)."""
  rng = np.random.default_rng(seed)
  levels = ((np.arange(num_pixels) + 1) / (num_pixels + 1)).astype(np.float32)  # distinct
  errors, gts = [], []
  for num_relevant in counts:
    gt = np.zeros(num_pixels, bool)
    top = np.arange(num_pixels - num_relevant, num_pixels)
    gt[top[0]] = True
    gt[rng.choice(top, size=min(num_relevant, 40), replace=False)] = True
    perm = rng.permutation(num_pixels)
    errors.append(levels[perm])
    gts.append(gt[perm])
  return np.array(errors), np.array(gts)


# Rows of 262144 pixels sort their relevant pixels in buckets of 4096, 32768 or 262144.
_ROW = 262144
_BUCKETS = extension._bucket_sizes(_ROW)


def test_bucket_sizes_used_below():
  assert _BUCKETS == [4096, 32768, _ROW]


@pytest.mark.parametrize("sort", FORMULATIONS)
def test_every_formulation_matches_float64_on_both_sides_of_every_bucket(sort):
  counts = [1]
  for size in _BUCKETS[:-1]:
    counts += [size - 1, size, size + 1]
  counts += [_ROW]
  errors, gt = _rows_with_relevant(_ROW, counts, seed=len(sort))
  valid = np.ones_like(gt)
  value, grad = _extension_value_and_grad(sort, False)(errors, gt, valid)
  want_values, want_grads = _reference_rows(errors, gt, valid)
  np.testing.assert_allclose(value, want_values.sum(), rtol=1e-6)
  np.testing.assert_allclose(grad, want_grads, rtol=1e-5, atol=1e-10)
  per_row = jax.jit(lambda e: lovasz_extension(e, gt, sort=sort))(errors)
  np.testing.assert_allclose(per_row, want_values, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sort", FORMULATIONS)
def test_every_formulation_on_edge_rows(sort):
  """All void, one valid pixel, no ground truth, all ground truth, zero errors, weights."""
  rng = np.random.default_rng(3)
  p = 9
  errors = rng.uniform(0.05, 1.0, (7, p)).astype(np.float32)
  gt = rng.random((7, p)) < 0.4
  valid = np.ones((7, p), bool)
  valid[0] = False                       # all void
  valid[1] = False
  valid[1, 4] = True                     # one valid pixel
  gt[2] = False                          # no ground truth: max error
  gt[3] = True                           # all ground truth
  errors[4] = 0.0                        # perfect prediction
  errors[5, 2] = -0.0                    # negative zero counts as zero
  gt[6] = False
  valid[6, :5] = False                   # no ground truth among few valid pixels
  for weights in (None, rng.uniform(0.2, 3.0, (7, p)).astype(np.float32)):
    args = (errors, gt, valid) + (() if weights is None else (weights,))
    _, grad = _extension_value_and_grad(sort, weights is not None)(*args)
    values = jax.jit(lambda *a: lovasz_extension(  # noqa: E731
        a[0], a[1], valid=a[2], weights=None if len(a) < 4 else a[3], sort=sort))(*args)
    want_values, want_grads = _reference_rows(errors, gt, valid, weights)
    np.testing.assert_allclose(values, want_values, rtol=1e-6, atol=1e-7)
    tie_free = [0, 1, 2, 3, 5, 6]  # row 4 is all ties: any order is a valid subgradient
    np.testing.assert_allclose(np.asarray(grad)[tie_free], want_grads[tie_free], rtol=1e-5,
                               atol=1e-7)
    assert values[0] == 0.0 and np.all(np.asarray(grad[0]) == 0.0)


@pytest.mark.parametrize("sort", FORMULATIONS)
def test_every_formulation_propagates_nan(sort):
  errors = np.array([[0.2, np.nan, 0.5], [0.2, 0.4, 0.5]], np.float32)
  gt = np.array([[True, False, False], [False, False, False]])
  valid = np.array([[True, True, True], [True, False, True]])
  values = np.asarray(lovasz_extension(errors, gt, valid=valid, sort=sort))
  assert np.isnan(values[0]) and values[1] == np.float32(0.5)
  errors[1, 1] = np.nan  # on a void pixel: takes no part
  assert np.isfinite(np.asarray(lovasz_extension(errors, gt, valid=valid, sort=sort))[1])


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(11)
  logits = (rng.normal(size=(3, 7, 8, 5)) * 2).astype(np.float32)
  labels = ref.voc_like_labels(rng, 3, 7, 8, 5)
  labels[labels == 4] = 0   # class 4 absent
  labels[2] = 255           # one image all void
  labels[1, 3, 3] = 3       # class 3 once
  return logits, labels


def _softmax_reference_grad(logits, labels, classes, per_image):
  return ref.numerical_gradient(
      lambda x: ref.lovasz_softmax(x, labels, classes=classes, per_image=per_image), logits,
      eps=1e-6)


@pytest.mark.parametrize("sort", FORMULATIONS)
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", (0, 3, 4)])
def test_lovasz_softmax_every_formulation_matches_float64(batch, sort, per_image, classes):
  logits, labels = batch
  fn = jax.jit(jax.value_and_grad(
      lambda x: lovasz_softmax(x, labels, classes=classes, per_image=per_image, sort=sort)))
  value, grad = fn(logits)
  np.testing.assert_allclose(
      value, ref.lovasz_softmax(logits, labels, classes=classes, per_image=per_image),
      rtol=1e-6, atol=1e-7)
  if per_image and classes == "present":  # finite differences: the slow part, once per sort
    np.testing.assert_allclose(grad, _softmax_reference_grad(logits, labels, classes, per_image),
                               atol=1e-6)


@pytest.mark.parametrize("sort", FORMULATIONS)
def test_lovasz_softmax_every_formulation_bfloat16_one_pixel_and_huge_logits(batch, sort):
  logits, labels = batch
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  value = lovasz_softmax(bf16, labels, sort=sort)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, ref.lovasz_softmax(np.asarray(bf16, np.float32), labels),
                             rtol=1e-6)
  one = np.full_like(labels, 255)
  one[0, 2, 3] = 1
  value, grad = jax.value_and_grad(lambda x: lovasz_softmax(x, one, sort=sort))(logits)
  np.testing.assert_allclose(value, ref.lovasz_softmax(logits, one), rtol=1e-6)
  assert np.count_nonzero(np.asarray(grad)) == logits.shape[-1]
  value, grad = jax.value_and_grad(lambda x: lovasz_softmax(x, labels, sort=sort))(logits * 1e4)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, ref.lovasz_softmax(logits * 1e4, labels), rtol=1e-6)


@pytest.mark.parametrize("sort", FORMULATIONS)
def test_binary_losses_and_pixiou_every_formulation(batch, sort):
  logits, labels = batch
  binary = np.where(labels == 255, 255, (labels == 1).astype(np.int32))
  for per_image in (True, False):
    np.testing.assert_allclose(
        lovasz_hinge(logits[..., 0], binary, per_image=per_image, sort=sort),
        ref.lovasz_hinge(logits[..., 0], binary, per_image=per_image), rtol=1e-6, atol=1e-7)
  probs = jax.nn.sigmoid(logits[..., 1])
  np.testing.assert_allclose(lovasz_sigmoid(probs, binary, sort=sort),
                             lovasz_sigmoid(probs, binary, sort="packed64"), rtol=1e-6)
  np.testing.assert_allclose(pixiou_loss(logits, labels, sort=sort),
                             pixiou_loss(logits, labels, sort="packed64"), rtol=1e-6)


def test_sort_argument_is_checked():
  x, y = jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32)
  with pytest.raises(ValueError, match="sort must be one of"):
    lovasz_softmax(x, y, sort="radix")
  with pytest.raises(ValueError, match="sort must be one of"):
    lovasz_hinge(x[..., 0], y, sort="fast")
  with pytest.raises(ValueError, match="sort must be one of"):
    lovasz_extension(x, x > 0, sort=None)


# ---------------------------------------------------------------------------- global x64 mode

_LOSSES = {
    "lovasz_softmax": lambda x, y, sort: lovasz_softmax(x, y, sort=sort),
    "lovasz_softmax_per_image_all": lambda x, y, sort: lovasz_softmax(
        x, y, per_image=True, classes="all", sort=sort),
    "lovasz_hinge": lambda x, y, sort: lovasz_hinge(
        x[..., 0], jnp.where(y == 255, 255, (y == 1).astype(jnp.int32)), sort=sort),
    "lovasz_sigmoid": lambda x, y, sort: lovasz_sigmoid(
        x[..., 0], jnp.where(y == 255, 255, (y == 1).astype(jnp.int32)), from_logits=True,
        sort=sort),
    "pixiou": lambda x, y, sort: pixiou_loss(x, y, sort=sort),
}


@pytest.mark.parametrize("name", list(_LOSSES))
def test_x64_mode_values_and_gradients_for_every_dtype(batch, name, x64):
  """Under global x64: values in promote_types(dtype, float32), gradients in the input's
  dtype, and for 16- and 32-bit inputs the values of x64-off mode."""
  del x64
  logits, labels = batch
  loss = _LOSSES[name]
  with jax.enable_x64(False):
    want = {dt: float(loss(jnp.asarray(logits, dt), labels, "auto"))
            for dt in (jnp.float16, jnp.bfloat16, jnp.float32)}
  # Every formulation with float32 inputs, every dtype with the formulation "auto" picks.
  combinations = [(jnp.float32, sort) for sort in FORMULATIONS] + [
      (dtype, "auto") for dtype in (jnp.float16, jnp.bfloat16, jnp.float64)]
  for dtype, sort in combinations:
    x = jnp.asarray(logits, dtype)
    value, grad = jax.jit(jax.value_and_grad(lambda a: loss(a, labels, sort)))(x)
    assert value.dtype == jnp.promote_types(dtype, jnp.float32), (sort, dtype, value.dtype)
    assert grad.dtype == dtype, (sort, dtype, grad.dtype)
    assert np.all(np.isfinite(np.asarray(grad, np.float64)))
    if dtype != jnp.float64:
      np.testing.assert_allclose(value, want[dtype], rtol=1e-6, err_msg=f"{sort} {dtype}")


def test_x64_float64_inputs_compute_in_float64(batch, x64):
  """float64 logits agree with the float64 reference to 1e-12 (float32 could not)."""
  del x64
  logits, labels = batch
  logits = logits.astype(np.float64) + np.random.default_rng(0).normal(size=logits.shape) * 1e-3
  for sort in ("auto", "pairs", "batched"):
    for per_image in (False, True):
      value = lovasz_softmax(jnp.asarray(logits), labels, per_image=per_image, sort=sort)
      assert value.dtype == jnp.float64
      np.testing.assert_allclose(value, ref.lovasz_softmax(logits, labels, per_image=per_image),
                                 rtol=1e-12)
    binary = np.where(labels == 255, 255, (labels == 1).astype(np.int32))
    np.testing.assert_allclose(lovasz_hinge(jnp.asarray(logits[..., 0]), binary, sort=sort),
                               ref.lovasz_hinge(logits[..., 0], binary), rtol=1e-12)
  with pytest.raises(ValueError, match="packed64"):
    lovasz_softmax(jnp.asarray(logits), labels, sort="packed64")


@pytest.mark.parametrize("x64_mode", [False, True])
def test_cpu_export_runs_with_global_x64_on_and_off(batch, x64_mode):
  """The CPU's packed formulation scopes its own 64-bit mode: an exported function runs and
  matches the jitted one whether the program has x64 on or not."""
  logits, labels = batch
  with global_x64(x64_mode):
    fn = jax.jit(jax.value_and_grad(lambda x, y: lovasz_softmax(x, y, per_image=True)))
    exported = jax.export.export(fn, platforms=["cpu"])(
        jax.ShapeDtypeStruct(logits.shape, jnp.float32),
        jax.ShapeDtypeStruct(labels.shape, jnp.int32))
    value, grad = exported.call(logits, labels)
    want_value, want_grad = fn(logits, labels)
    np.testing.assert_allclose(value, want_value, rtol=1e-7)
    np.testing.assert_allclose(grad, want_grad, atol=1e-8)
    np.testing.assert_allclose(value, ref.lovasz_softmax(logits, labels, per_image=True),
                               rtol=1e-6)
