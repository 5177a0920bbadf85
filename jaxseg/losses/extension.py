"""The Lovász extension of the (weighted) Jaccard loss: the building block of every Lovász loss.

Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss", CVPR 2018, Sec. 3 and Algorithm 1.

For one row (one class, over a batch or one image) with non-negative errors ``m in R^P``, a
ground-truth indicator ``δ in {0, 1}^P`` and non-negative pixel weights ``w`` (all ones for the
plain Jaccard loss), the set function of the mispredicted pixels ``M`` (``G = {δ = 1}``)::

    Δ_w(M) = w(M) / (w(G) + w(M \\ G))          (0/0 = 0, so Δ_w(∅) = 0)

is submodular; its Lovász extension is computed from one sort of ``m`` in decreasing order ``π``::

    Δ̄_w(m) = Σ_k m_π(k) g_k,   g_k = Δ_w({π(1..k)}) - Δ_w({π(1..k-1)}).

The increments ``g`` are computed in the closed form of SPEC.md §1 ("Precision"), with ``I_k`` and
``U_k`` the weight of ground truth not yet passed and the union after position ``k``::

    δ_k = 1:  g_k = w_k / U_k
    δ_k = 0:  g_k = I_k w_k / (U_k U_{k-1})        (g_k = 1 where U_{k-1} = 0 < U_k)

Unweighted, ``I`` and ``U`` are exact int32 counts; weighted, ``I`` is a suffix sum and ``U_{k-1}``
a shifted prefix sum, so no increment is the difference of two nearly equal numbers. Algorithm 1
as published (``J[k] - J[k-1]`` in float32) loses most digits of the increments on long sorts.

Engineering (the reasons behind the shape of this module):

* One single-operand sort of packed int64 keys per row: the high word orders the errors (the
  bit pattern of a non-negative float32 orders like its value; void pixels sort last), bit 31 holds
  ``δ`` and the low 31 bits the pixel index. The sorted errors and ``δ`` are read back from the
  keys, so the forward pass needs no gather; XLA sorts a single integer operand far faster than
  an argsort with a payload (and on GPUs with a radix sort).
* A custom VJP: the gradient of the extension with respect to ``m`` is ``g`` put back in pixel
  order, computed once in the forward pass (one scatter of unique indices); the backward pass is a
  multiplication, with no second sort and no scatter-add through a gather.
* Rows are processed with ``lax.map`` + ``lax.switch`` so that a row can be skipped (its value is
  not wanted, e.g. a class absent under ``classes="present"``) or computed without a sort (a row
  with no ground truth: the extension is then ``max(m)``, since ``g = (1, 0, ..., 0)``).
  Under ``vmap`` a switch would compute every branch; the sequential map computes only one.
* Ties in ``m`` do not change the value (ordering within a tie is any, the value is the same).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# What to do with a row, see `lovasz_extension_rows`.
SKIP, MAX_ERROR, SORT = 0, 1, 2

_INDEX_BITS = 31


def _sort_rows_by_error(errors, ground_truth, valid):
  """Sorts one row by decreasing error with a single-operand int64 sort.

  Pixels that cannot affect the value or the gradient share one constant key that sorts last:
  void pixels, and pixels outside the ground truth whose error is below the smallest error of a
  ground-truth pixel (every ground-truth pixel precedes them, so ``I_k = 0`` and ``g_k = 0``;
  without ground truth, all but the largest errors).
  A constant key costs the sort much less than a distinct one, and its index is out of range so
  that the gradient scatter drops it.

  Returns the sorted errors (float32, 0 where not relevant), δ (int32), a relevance mask (bool)
  and the pixel index (int32, out of range where not relevant).
  """
  (num_pixels,) = errors.shape
  if num_pixels >= 2**_INDEX_BITS - 1:
    raise ValueError(f"a Lovász row holds at most 2**31 - 2 pixels, got {num_pixels}")
  bits = lax.bitcast_convert_type(errors, jnp.int32)
  # Non-negative float32 bit patterns order like the values; map -0.0 and negatives to 0.
  bits = jnp.where(errors > 0, bits, 0)
  positive = ground_truth & valid
  # Without ground truth only the largest error counts (g = (1, 0, ..., 0)).
  threshold = jnp.where(jnp.any(positive),
                        jnp.min(jnp.where(positive, bits, jnp.iinfo(jnp.int32).max)),
                        jnp.max(jnp.where(valid, bits, 0)))
  relevant = valid & (ground_truth | (bits >= threshold))
  with jax.enable_x64(True):
    key = ((-bits).astype(jnp.int64) << 32) | (
        ground_truth.astype(jnp.int64) << _INDEX_BITS) | jnp.arange(num_pixels, dtype=jnp.int64)
    key = lax.sort(jnp.where(relevant, key, jnp.iinfo(jnp.int64).max))
    high_sorted = (key >> 32).astype(jnp.int32)
    delta = ((key >> _INDEX_BITS) & 1).astype(jnp.int32)
    index = (key & (2**_INDEX_BITS - 1)).astype(jnp.int32)
  relevant_sorted = high_sorted <= 0
  errors_sorted = lax.bitcast_convert_type(jnp.where(relevant_sorted, -high_sorted, 0),
                                           jnp.float32)
  return errors_sorted, delta, relevant_sorted, index


def _exclusive_cumsum(x):
  return jnp.cumsum(x) - x if jnp.issubdtype(x.dtype, jnp.integer) else jnp.concatenate(
      [jnp.zeros((1,), x.dtype), jnp.cumsum(x)[:-1]])


def jaccard_increments(delta, valid, weights=None):
  """The increments ``g`` of the Lovász extension for sorted ground truth (SPEC.md §1, Precision).

  Args:
    delta: ``[P]`` int/bool, ground truth in sorted order.
    valid: ``[P]`` bool, whether the sorted pixel takes part (void pixels have ``g = 0``).
    weights: ``[P]`` non-negative float32 pixel weights in sorted order, or None for counts.

  Returns:
    ``[P]`` float32 increments, accurate to float32 rounding.
  """
  positive = (delta > 0) & valid
  negative = (delta == 0) & valid
  if weights is None:
    pos = positive.astype(jnp.int32)
    neg = negative.astype(jnp.int32)
    num_positive = jnp.sum(pos)
    inter = (num_positive - jnp.cumsum(pos)).astype(jnp.float32)  # exact int32 counts
    union_before = (num_positive + _exclusive_cumsum(neg)).astype(jnp.float32)
    union = union_before + neg.astype(jnp.float32)
    w = jnp.ones_like(union)
  else:
    w = jnp.where(valid, weights.astype(jnp.float32), 0.0)
    pos_w = jnp.where(positive, w, 0.0)
    neg_w = jnp.where(negative, w, 0.0)
    # Suffix sums for I (no cancellation), shifted prefix sums for U.
    inter = jnp.flip(jnp.cumsum(jnp.flip(pos_w))) - pos_w
    inter = jnp.maximum(inter, 0.0)
    union_before = jnp.sum(pos_w) + _exclusive_cumsum(neg_w)
    union = union_before + neg_w
  safe_union = jnp.where(union > 0, union, 1.0)
  safe_before = jnp.where(union_before > 0, union_before, 1.0)
  g_positive = w / safe_union
  g_negative = jnp.where(union_before > 0, inter * (w / safe_union) / safe_before,
                         jnp.where(union > 0, 1.0, 0.0))
  g = jnp.where(positive, g_positive, jnp.where(negative, g_negative, 0.0))
  return jnp.where(union > 0, g, 0.0)


def _row_sorted(errors, ground_truth, valid, weights):
  """Value and gradient (pixel order) of one row through the sort."""
  errors_sorted, delta, valid_sorted, index = _sort_rows_by_error(errors, ground_truth, valid)
  sorted_weights = None if weights is None else weights.at[index].get(mode="fill", fill_value=0)
  g = jaccard_increments(delta, valid_sorted, sorted_weights)
  value = jnp.dot(errors_sorted, g, precision=lax.Precision.HIGHEST)
  grad = jnp.zeros_like(g).at[index].set(g, unique_indices=True, mode="drop")
  return value, grad


def _row_value_sorted(errors, ground_truth, valid, weights):
  errors_sorted, delta, valid_sorted, index = _sort_rows_by_error(errors, ground_truth, valid)
  sorted_weights = None if weights is None else weights.at[index].get(mode="fill", fill_value=0)
  g = jaccard_increments(delta, valid_sorted, sorted_weights)
  return jnp.dot(errors_sorted, g, precision=lax.Precision.HIGHEST)


def _row_max_error(errors, ground_truth, valid, weights):
  """A row with no ground truth: Δ_w(M) = 1 for any M of positive weight, extension = max m."""
  del ground_truth
  weighted = valid if weights is None else valid & (weights > 0)
  masked = jnp.where(weighted, errors, -1.0)
  i = jnp.argmax(masked)
  any_valid = jnp.any(weighted)
  value = jnp.where(any_valid, errors[i], 0.0)
  grad = jnp.where((jnp.arange(errors.shape[0]) == i) & any_valid, 1.0, 0.0)
  return value, grad


def _row_skip(errors, ground_truth, valid, weights):
  del ground_truth, valid, weights
  # Zeros computed from the input, so that they vary over a shard_map axis like the others.
  zeros = jnp.where(False, errors, 0.0)
  return zeros[0], zeros


def _map_rows(row_fns, errors, ground_truth, valid, weights, mode):
  """Runs ``row_fns[mode[r]]`` on every row ``r`` sequentially (only the taken branch runs)."""
  if weights is None:
    fns = [functools.partial(lambda e, gt, v, fn: fn(e, gt, v, None), fn=fn) for fn in row_fns]
    return lax.map(lambda a: lax.switch(a[3], fns, *a[:3]), (errors, ground_truth, valid, mode))
  return lax.map(lambda a: lax.switch(a[4], row_fns, *a[:4]),
                 (errors, ground_truth, valid, weights, mode))


@jax.custom_vjp
def _rows(errors, ground_truth, valid, weights, mode):
  value_fns = [lambda *a: _row_skip(*a)[0], lambda *a: _row_max_error(*a)[0], _row_value_sorted]
  return _map_rows(value_fns, errors, ground_truth, valid, weights, mode)


def _rows_fwd(errors, ground_truth, valid, weights, mode):
  values, grads = _map_rows([_row_skip, _row_max_error, _row_sorted], errors, ground_truth,
                            valid, weights, mode)
  return values, grads


def _rows_bwd(grads, cotangent):
  return cotangent[:, None] * grads, None, None, None, None


_rows.defvjp(_rows_fwd, _rows_bwd)


def lovasz_extension_rows(errors, ground_truth, valid, mode, weights=None):
  """Lovász extensions of ``R`` rows, each row computed, skipped or short-cut as ``mode`` says.

  Args:
    errors: ``[R, P]`` non-negative errors (any float dtype; computed in float32).
    ground_truth: ``[R, P]`` bool.
    valid: ``[R, P]`` bool; pixels that take no part (void) are False.
    mode: ``[R]`` int32, per row ``SKIP`` (value 0, no gradient, no work), ``MAX_ERROR`` (the row
      has no ground truth: value ``max(m)`` without a sort) or ``SORT`` (the full extension).
    weights: ``[R, P]`` non-negative pixel weights (constants), or None for plain counts.

  Returns:
    ``[R]`` float32 values; differentiable with respect to ``errors`` only.
  """
  errors = errors.astype(jnp.float32)
  if weights is not None:
    weights = lax.stop_gradient(weights.astype(jnp.float32))
  return _rows(errors, ground_truth.astype(bool), valid.astype(bool), weights,
               mode.astype(jnp.int32))


def lovasz_extension(errors, ground_truth, *, valid=None, weights=None):
  """The Lovász extension of the (weighted) Jaccard loss of each row (CVPR 2018, Alg. 1).

  ``Δ̄_w(m) = Σ_k m_π(k) (Δ_w(π(1..k)) - Δ_w(π(1..k-1)))`` with ``π`` sorting ``m`` in decreasing
  order and ``Δ_w(M) = w(M) / (w(G) + w(M \\ G))`` (see the module docstring). On a 0/1 error
  vector it equals the discrete (weighted) Jaccard loss of the set of ones.

  Args:
    errors: ``[..., P]`` non-negative errors.
    ground_truth: ``[..., P]`` bool (or 0/1 ints), the ground-truth set ``G``.
    valid: optional ``[..., P]`` bool; False pixels take no part in anything.
    weights: optional ``[..., P]`` non-negative pixel weights, fixed (no gradient); None gives
      the plain Jaccard loss from exact integer counts.

  Returns:
    ``[...]`` float32. A row with no valid pixel gives 0 (zero gradient); a row with no ground
    truth gives ``max(m)`` over its valid pixels.
  """
  errors = jnp.asarray(errors)
  ground_truth = jnp.asarray(ground_truth)
  if not jnp.issubdtype(errors.dtype, jnp.floating):
    raise TypeError(f"lovasz_extension: errors must be floating point, got {errors.dtype}")
  if errors.ndim < 1:
    raise ValueError("lovasz_extension: errors must have at least one (pixel) axis")
  if ground_truth.shape != errors.shape:
    raise ValueError(f"lovasz_extension: ground_truth shape {ground_truth.shape} does not match "
                     f"errors shape {errors.shape}")
  valid = jnp.ones(errors.shape, bool) if valid is None else jnp.asarray(valid)
  if valid.shape != errors.shape:
    raise ValueError(f"lovasz_extension: valid shape {valid.shape} does not match errors shape "
                     f"{errors.shape}")
  if weights is not None:
    weights = jnp.asarray(weights)
    if weights.shape != errors.shape:
      raise ValueError(f"lovasz_extension: weights shape {weights.shape} does not match errors "
                       f"shape {errors.shape}")
  batch_shape, num_pixels = errors.shape[:-1], errors.shape[-1]
  flat = lambda x: None if x is None else x.reshape(-1, num_pixels)
  mode = jnp.full((math.prod(batch_shape),), SORT, jnp.int32)
  values = lovasz_extension_rows(flat(errors), flat(ground_truth), flat(valid), mode,
                                 flat(weights))
  return values.reshape(batch_shape)
