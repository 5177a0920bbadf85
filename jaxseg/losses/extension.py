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
  bit pattern of a non-negative float32 orders like its value), bit 31 holds ``δ`` and the low 31
  bits the pixel index. The sorted errors and ``δ`` are read back from the keys, so the forward
  pass needs no gather; XLA's CPU backend sorts a single integer operand far faster than an
  argsort with a payload (measured: benchmarks/RESULTS.md); its GPU backend lowers such sorts to
  a radix sort (not measured here: no GPU was available).
* Only pixels that can matter are sorted: void pixels, and pixels outside the ground truth with
  an error below every ground-truth error, have a zero increment. The others are compacted to the
  front and the smallest of a few static bucket sizes that holds them is sorted.
* A custom VJP: the gradient of the extension with respect to ``m`` is ``g`` put back in pixel
  order, computed once in the forward pass (one scatter of unique indices); the backward pass is a
  multiplication, with no second sort and no scatter-add through a gather.
* Rows are processed by a ``lax.while_loop`` over the active rows only, with ``lax.cond`` between
  the sort and a shortcut: a row whose value is not wanted (a class absent under
  ``classes="present"``) costs nothing, and a row with no ground truth costs ``max(m)`` without a
  sort (``g = (1, 0, ..., 0)``). Under ``vmap`` a cond would compute both branches.
  Rows are built on the fly from a compact input by a row function (``extension_over_rows``), so
  that e.g. Lovász-Softmax never materialises per-class masks.
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


def _bucket_sizes(num_pixels):
  """Static sort sizes for one row, ascending: P, P/4, P/16, ... until one is at most 2048."""
  sizes = [num_pixels]
  while sizes[-1] > 2048:
    sizes.append(-(-sizes[-1] // 4))
  return sizes[::-1]


def _sort_relevant(errors, ground_truth, valid):
  """Sorted keys of the pixels that matter, compacted to the front of one row.

  Keys are int64: the high word orders the errors decreasingly (the bit pattern of a
  non-negative float32 orders like its value), bit 31 holds δ, the low 31 bits the pixel index.
  Only *relevant* pixels get a key: void pixels, and pixels outside the ground truth whose error
  is below the smallest error of a ground-truth pixel, have ``g = 0`` exactly (every ground-truth
  pixel precedes them, so ``I_k = 0``; without ground truth only the largest errors matter).
  The relevant keys are compacted to the front (a prefix sum and a scatter), and only the
  smallest static bucket that holds them is sorted, chosen with ``lax.switch``.

  Returns ``(bucket_index, compacted_keys)``; ``compacted_keys`` is int64 ``[P]`` padded with the
  largest int64 (which decodes as irrelevant, with an out-of-range index).
  """
  (num_pixels,) = errors.shape
  if num_pixels >= 2**_INDEX_BITS - 1:
    raise ValueError(f"a Lovász row holds at most 2**31 - 2 pixels, got {num_pixels}")
  bits = lax.bitcast_convert_type(errors, jnp.int32)
  bits = jnp.where(errors > 0, bits, 0)  # -0.0 and negatives count as 0
  positive = ground_truth & valid
  threshold = jnp.where(jnp.any(positive),
                        jnp.min(jnp.where(positive, bits, jnp.iinfo(jnp.int32).max)),
                        jnp.max(jnp.where(valid, bits, 0)))
  relevant = valid & (ground_truth | (bits >= threshold))
  position = jnp.cumsum(relevant.astype(jnp.int32)) - 1
  num_relevant = position[-1] + 1
  key = ((-bits).astype(jnp.int64) << 32) | (
      ground_truth.astype(jnp.int64) << _INDEX_BITS) | jnp.arange(num_pixels, dtype=jnp.int64)
  compacted = jnp.full((num_pixels,), jnp.iinfo(jnp.int64).max, jnp.int64).at[
      jnp.where(relevant, position, num_pixels)].set(key, mode="drop", unique_indices=True)
  sizes = _bucket_sizes(num_pixels)
  bucket = sum((num_relevant > size).astype(jnp.int32) for size in sizes[:-1])
  return bucket, compacted, sizes


def _decode(sorted_keys):
  """Sorted keys -> errors (float32), δ (int32), relevant (bool), pixel index (int32)."""
  high = (sorted_keys >> 32).astype(jnp.int32)
  delta = ((sorted_keys >> _INDEX_BITS) & 1).astype(jnp.int32)
  index = (sorted_keys & (2**_INDEX_BITS - 1)).astype(jnp.int32)
  relevant = high <= 0
  errors = lax.bitcast_convert_type(jnp.where(relevant, -high, 0), jnp.float32)
  return errors, delta, relevant, index


def _exclusive_cumsum(x):
  """``Σ_{j<k} x_j``: exact by subtraction for integers, by a shift for floats."""
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
    # Shifted suffix sums for I and shifted prefix sums for U: no subtraction anywhere.
    suffix = jnp.flip(jnp.cumsum(jnp.flip(pos_w)))
    inter = jnp.concatenate([suffix[1:], jnp.zeros((1,), jnp.float32)])
    union_before = jnp.sum(pos_w) + _exclusive_cumsum(neg_w)
    union = union_before + neg_w
  safe_union = jnp.where(union > 0, union, 1.0)
  safe_before = jnp.where(union_before > 0, union_before, 1.0)
  g_positive = w / safe_union
  g_negative = jnp.where(union_before > 0, inter * (w / safe_union) / safe_before,
                         jnp.where(union > 0, 1.0, 0.0))
  g = jnp.where(positive, g_positive, jnp.where(negative, g_negative, 0.0))
  return jnp.where(union > 0, g, 0.0)


def _row_extension(errors, ground_truth, valid, weights, *, with_grad):
  """Value (and gradient in pixel order) of one row through the bucketed sort."""
  num_pixels = errors.shape[0]
  with jax.enable_x64(True):
    bucket, compacted, sizes = _sort_relevant(errors, ground_truth, valid)

    def branch(size):
      def run(compacted, weights):
        sorted_errors, delta, relevant, index = _decode(lax.sort(compacted[:size]))
        sorted_weights = (None if weights is None else
                          weights.at[index].get(mode="fill", fill_value=0))
        g = jaccard_increments(delta, relevant, sorted_weights)
        value = jnp.dot(sorted_errors, g, precision=lax.Precision.HIGHEST)
        if not with_grad:
          return value
        grad = jnp.zeros((num_pixels,), jnp.float32).at[index].set(
            g, mode="drop", unique_indices=True)
        return value, grad
      return run

    result = lax.switch(bucket, [branch(size) for size in sizes], compacted, weights)
  # The integer keys cannot hold a NaN (or an infinity's arithmetic): let a non-finite valid error
  # make the value non-finite, so that a diverged run shows in its loss.
  poison = jnp.sum(jnp.where(valid, errors, 0.0)) * 0.0
  if with_grad:
    return result[0] + poison, result[1]
  return result + poison


def _row_sorted(errors, ground_truth, valid, weights):
  return _row_extension(errors, ground_truth, valid, weights, with_grad=True)


def _row_value_sorted(errors, ground_truth, valid, weights):
  return _row_extension(errors, ground_truth, valid, weights, with_grad=False)


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


def _active_rows_loop(row_fn, x, aux, mode, *, with_grad):
  """Evaluates the rows whose mode is not ``SKIP``, one at a time, in a ``lax.while_loop``.

  The loop runs exactly as many iterations as there are active rows (skipped rows cost nothing
  but their zero output); each iteration reads its row with a dynamic slice and writes its value
  and gradient row in place.
  """
  active = mode != SKIP
  order = jnp.argsort(~active, stable=True).astype(jnp.int32)  # active rows first (R is small)
  num_active = jnp.sum(active.astype(jnp.int32))
  # Zeros computed from the input, so that they vary over a shard_map axis like the results.
  grads = jnp.where(False, x, 0.0).astype(jnp.float32) if with_grad else None
  values = jnp.where(False, x[:, 0], 0.0).astype(jnp.float32)

  def body(state):
    i, values, grads = state
    r = order[i]
    errors, ground_truth, valid, weights, derivative = row_fn(x, aux, r)
    if with_grad:
      value, grad = lax.cond(mode[r] == SORT, _row_sorted, _row_max_error,
                             errors, ground_truth, valid, weights)
      if derivative is not None:
        grad = grad * derivative
      grads = lax.dynamic_update_slice(grads, grad[None].astype(jnp.float32), (r, 0))
    else:
      value = lax.cond(mode[r] == SORT, _row_value_sorted, lambda *a: _row_max_error(*a)[0],
                       errors, ground_truth, valid, weights)
    return i + 1, values.at[r].set(value), grads

  _, values, grads = lax.while_loop(lambda state: state[0] < num_active, body,
                                    (jnp.int32(0), values, grads))
  return values, grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def extension_over_rows(row_fn, x, aux, mode):
  """Lovász extensions of the rows of ``x`` ``[R, P]`` as described by ``row_fn`` and ``mode``.

  ``row_fn(x, aux, r) -> (errors, ground_truth, valid, weights, derivative)`` builds row ``r``'s
  inputs (``[P]`` each; ``weights`` and ``derivative`` may be None), where ``derivative`` is
  ``d errors / d x[r]`` elementwise (None for the identity). ``mode[r]`` is ``SKIP`` (value 0, no
  work), ``MAX_ERROR`` (no ground truth: ``max(m)`` without a sort) or ``SORT``.

  Returns ``[R]`` float32 values, differentiable with respect to ``x`` (the gradient of each row
  is its increments in pixel order times ``derivative``, computed in the forward pass).
  """
  values, _ = _active_rows_loop(row_fn, x, aux, mode, with_grad=False)
  return values


def _extension_over_rows_fwd(row_fn, x, aux, mode):
  values, grads = _active_rows_loop(row_fn, x, aux, mode, with_grad=True)
  return values, grads


def _extension_over_rows_bwd(row_fn, grads, cotangent):
  del row_fn
  return cotangent[:, None] * grads, None, None


extension_over_rows.defvjp(_extension_over_rows_fwd, _extension_over_rows_bwd)


def _plain_row(x, aux, r):
  ground_truth, valid, weights = aux
  return x[r], ground_truth[r], valid[r], None if weights is None else weights[r], None


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
  return extension_over_rows(_plain_row, errors,
                             (ground_truth.astype(bool), valid.astype(bool), weights),
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
