"""The Lovász extension of the (weighted) Jaccard loss: the building block of every Lovász loss.

Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss", CVPR 2018, Sec. 2 (the Lovász
extension of a submodular set function) and Sec. 3, Algorithm 1.

For one row (one class, over a batch or one image) with non-negative errors ``m in R^P``, a
ground-truth indicator ``δ in {0, 1}^P`` and non-negative pixel weights ``w`` (all ones for the
plain Jaccard loss), the set function of the mispredicted pixels ``M`` (``G = {δ = 1}``)::

    Δ_w(M) = w(M) / (w(G) + w(M \\ G))          (0/0 = 0, so Δ_w(∅) = 0)

is submodular; its Lovász extension is computed from one sort of ``m`` in decreasing order ``π``::

    Δ̄_w(m) = Σ_k m_π(k) g_k,   g_k = Δ_w({π(1..k)}) - Δ_w({π(1..k-1)}).

The increments ``g`` are computed in the closed form of the Lovász extension of the Jaccard loss
(no difference of two nearly equal Jaccard values), with ``I_k`` and ``U_k`` the weight of ground
truth not yet passed and the union after position ``k``::

    δ_k = 1:  g_k = w_k / U_k
    δ_k = 0:  g_k = I_k w_k / (U_k U_{k-1})        (g_k = 1 where U_{k-1} = 0 < U_k)

Unweighted, ``I`` and ``U`` are exact int32 counts; weighted, ``I`` is a suffix sum and ``U_{k-1}``
a shifted prefix sum, so no increment is the difference of two nearly equal numbers. Algorithm 1
as published (``J[k] - J[k-1]`` in float32) loses most digits of the increments on long sorts.

Precision and dtypes: everything is computed in ``promote_types(errors.dtype, float32)`` (float32
for 16- and 32-bit errors, float64 for float64 errors under ``jax_enable_x64``), the pixel counts
in int32, and values and gradients come out in that dtype.

The sort, per backend
---------------------
Each row needs its errors in decreasing order together with each sorted pixel's ``δ`` and
position. Every formulation below sorts integer keys, never floats: the bit pattern of a
non-negative IEEE float orders like its value, so ``-bits(m)`` sorted ascending is ``m`` sorted
decreasingly (negative errors and ``-0.0`` count as 0). Three formulations exist; ``sort="auto"``
picks one per backend *when the function is lowered* (``jax.lax.platform_dependent``), so one
jitted or exported function runs everywhere and each backend's compiler only sees its own branch.

* ``"packed64"`` (CPU): one *single-operand* sort of int64 keys ``-bits(m) << 32 | δ << 31 |
  pixel``: XLA's CPU sort has a fast path only for a single operand with a plain integer
  comparison (measured here: 21 x 824k values, 1.0 s for packed keys against 4.8 s for an argsort
  with a payload). The sorted errors, ``δ`` and positions are read back from the keys, so the
  forward pass needs no gather. It needs 64-bit integers, traced under a scoped
  ``jax.enable_x64(True)`` that only this branch sees; with float64 errors the keys cannot be
  packed and ``"pairs"`` is used.
* ``"pairs"`` (GPU and TPU): the same loop with two 32-bit operands, the key ``-bits(m)`` (int32)
  and a payload ``pixel | δ << 31`` (int32), compared on the key only (``num_keys=1``). No 64-bit
  type appears in the program. TPUs have no native 64-bit integers (64-bit sorts are emulated or
  fail to compile), and XLA:GPU rewrites a sort into CUB's radix sort only for one or two operands
  with a plain comparator, and for 64-bit keys only on long single rows; a key/value pair of
  32-bit operands qualifies for a single row of more than about 2^14 elements. A row is sorted
  alone (a batch of 1) because the sort rewriter sends batched rows to CUB only when there are
  many of them; rows that are not needed are not sorted at all (below).
* ``"batched"``: no loop and no conditionals. All rows are sorted together by one batched
  ``lax.sort`` of ``[R, P]`` 32-bit key/payload pairs (kornia's vectorised formulation), the rows
  that are not wanted included; pixels that cannot matter still get a key (the largest), only
  their sorting order is fixed. It avoids every per-row host round-trip, at the price of sorting
  every row at full length; it is offered for GPUs with many short rows and for comparison.

Work saved by ``"packed64"`` and ``"pairs"`` (the per-row loop):

* Only the rows whose value is wanted are evaluated: a ``lax.while_loop`` runs over the active
  rows only, with ``lax.cond`` between the sort and a shortcut. A row whose class is not selected
  (absent under ``classes="present"``) costs nothing; a row with no ground truth costs ``max(m)``
  without a sort (``g = (1, 0, ..., 0)``). Under ``vmap`` a cond would compute both branches, so
  the loop is over the rows and never vmapped. On GPU the loop's predicate and each ``cond`` and
  ``switch`` index go to the host once per row (microseconds, against a sort of up to ``B H W``
  pixels); on TPU and CPU they stay on the device.
* Only pixels that can matter are sorted: void pixels, and pixels outside the ground truth with an
  error below every ground-truth error, have a zero increment. The others are compacted to the
  front (a prefix sum and a scatter) and the smallest of a few static bucket sizes that holds them
  is sorted, chosen with ``lax.switch``. Buckets shrink by 8, none below 4096 pixels: each
  bucket is one more branch to compile (about 0.1 s on a 2-core CPU), so a VOC batch has three
  (824k, 103k, 13k pixels) and a VOC image two. With ``C`` classes about ``1/C`` of a row is
  relevant (random logits: 5-7% at ``C = 19, 21``), which fits the ``P/8`` bucket; buckets at
  ``P/16`` (the alternative with the same compile time) sat right on that fraction, and half the
  rows of a Cityscapes batch fell through to the full sort (measured: 1.7x slower).
* Rows are built on the fly from a compact input by a row function (``extension_over_rows``), so
  that e.g. Lovász-Softmax never materialises per-class masks.

In every formulation a custom VJP returns the increments computed in the forward pass, put back in
pixel order (one scatter of unique indices): the backward pass is a multiplication, with no second
sort. Ties in ``m`` do not change the value (ordering within a tie is any, the value is the same);
at ties the gradient is one valid subgradient.
"""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# The dtype a Lovász loss computes and returns in: float32, or float64 for float64 inputs.
from jaxseg._validation import compute_dtype  # noqa: F401  (used here and by the Lovász losses)

# What to do with a row, see `lovasz_extension_rows`.
SKIP, MAX_ERROR, SORT = 0, 1, 2

# The sort formulations (see the module docstring); "auto" picks one per backend.
SORT_FORMULATIONS = ("auto", "packed64", "pairs", "batched")

_INDEX_BITS = 31
_INDEX_MASK = 2**_INDEX_BITS - 1
_BUCKET_FACTOR = 8
_SMALLEST_BUCKET = 4096


def check_sort(sort: str, dtype, name: str) -> None:
  """Raises ValueError unless ``sort`` is a formulation usable for errors of ``dtype``."""
  if sort not in SORT_FORMULATIONS:
    raise ValueError(f"{name}: sort must be one of {SORT_FORMULATIONS}, got {sort!r}")
  if sort == "packed64" and compute_dtype(dtype) == jnp.float64:
    raise ValueError(f"{name}: sort='packed64' packs float32 errors into int64 keys; float64 "
                     "inputs need sort='auto', 'pairs' or 'batched'")


def _bucket_sizes(num_pixels):
  """Static sort sizes for one row, ascending: P, P/8, P/64, ..., none below 4096 (but P)."""
  sizes = [num_pixels]
  while sizes[-1] // _BUCKET_FACTOR >= _SMALLEST_BUCKET:
    sizes.append(-(-sizes[-1] // _BUCKET_FACTOR))
  return sizes[::-1]


def _error_bits(errors):
  """Signed integers of the errors' width that order like the errors (negatives and -0 as 0)."""
  int_dtype = jnp.int64 if errors.dtype == jnp.float64 else jnp.int32
  bits = lax.bitcast_convert_type(errors, int_dtype)
  return jnp.where(errors > 0, bits, jnp.zeros((), int_dtype))


def _relevant_pixels(bits, ground_truth, valid):
  """Pixels whose increment can be non-zero.

  Void pixels, and pixels outside the ground truth whose error is below the smallest error of a
  ground-truth pixel, have ``g = 0`` exactly (every ground-truth pixel precedes them, so
  ``I_k = 0``); without ground truth only the largest errors matter.
  """
  positive = ground_truth & valid
  largest = jnp.iinfo(bits.dtype).max
  threshold = jnp.where(jnp.any(positive), jnp.min(jnp.where(positive, bits, largest)),
                        jnp.max(jnp.where(valid, bits, jnp.zeros((), bits.dtype))))
  return valid & (ground_truth | (bits >= threshold))


def _sort_operands(bits, ground_truth, relevant, formulation):
  """The sort operands of one row and their padding values (which sort last, decode irrelevant).

  ``packed64``: one int64 key ``-bits << 32 | δ << 31 | pixel`` (float32 errors only).
  ``pairs`` / ``batched``: a key ``-bits`` and an int32 payload ``pixel | δ << 31``; pixels that
  are not relevant get the padding key.
  """
  num_pixels = bits.shape[0]
  pixel = lax.iota(jnp.int32, num_pixels)
  if formulation == "packed64":
    key = (((-bits).astype(jnp.int64) << 32) | (ground_truth.astype(jnp.int64) << _INDEX_BITS)
           | pixel.astype(jnp.int64))
    return (key,), (jnp.iinfo(jnp.int64).max,)
  largest = jnp.iinfo(bits.dtype).max
  key = jnp.where(relevant, -bits, jnp.full((), largest, bits.dtype))
  payload = pixel | jnp.where(ground_truth, jnp.int32(-2**31), jnp.int32(0))
  return (key, payload), (largest, _INDEX_MASK)


def _decode(sorted_operands, formulation, dtype):
  """Sorted operands -> errors (``dtype``), δ (bool), relevant (bool), pixel index (int32)."""
  if formulation == "packed64":
    (key,) = sorted_operands
    neg_bits = (key >> 32).astype(jnp.int32)
    delta = ((key >> _INDEX_BITS) & 1) == 1
    index = (key & _INDEX_MASK).astype(jnp.int32)
  else:
    neg_bits, payload = sorted_operands
    delta = payload < 0
    index = payload & _INDEX_MASK
  relevant = neg_bits <= 0
  bits = jnp.where(relevant, -neg_bits, jnp.zeros((), neg_bits.dtype))
  return lax.bitcast_convert_type(bits, dtype), delta, relevant, index


def jaccard_increments(delta, valid, weights=None, *, dtype=jnp.float32):
  """The increments ``g`` of the Lovász extension for sorted ground truth (closed form above).

  Args:
    delta: ``[P]`` int/bool, ground truth in sorted order.
    valid: ``[P]`` bool, whether the sorted pixel takes part (void pixels have ``g = 0``). The
      pixels that take part must come first (the sorts put the others last).
    weights: ``[P]`` non-negative pixel weights in sorted order, or None for counts.
    dtype: float dtype of the result.

  Returns:
    ``[P]`` increments in ``dtype``, accurate to its rounding.
  """
  positive = (delta > 0) & valid
  negative = (delta <= 0) & valid
  if weights is None:
    pos_seen = jnp.cumsum(positive, dtype=jnp.int32)
    num_positive = pos_seen[-1]
    # On the valid prefix, the negatives seen so far are the rank minus the positives seen.
    neg_seen = lax.iota(jnp.int32, delta.shape[0]) + 1 - pos_seen
    inter = (num_positive - pos_seen).astype(dtype)
    union = (num_positive + neg_seen).astype(dtype)
    union_before = (num_positive + neg_seen - negative.astype(jnp.int32)).astype(dtype)
    w = jnp.ones((), dtype)
  else:
    w = jnp.where(valid, weights.astype(dtype), jnp.zeros((), dtype))
    pos_w = jnp.where(positive, w, jnp.zeros((), dtype))
    neg_w = jnp.where(negative, w, jnp.zeros((), dtype))
    # A shifted suffix sum for I and a shifted prefix sum for U: no subtraction anywhere.
    suffix = jnp.flip(jnp.cumsum(jnp.flip(pos_w)))
    inter = jnp.concatenate([suffix[1:], jnp.zeros((1,), dtype)])
    union_before = jnp.sum(pos_w) + jnp.concatenate([jnp.zeros((1,), dtype),
                                                     jnp.cumsum(neg_w)[:-1]])
    union = union_before + neg_w
  one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
  safe_union = jnp.where(union > 0, union, one)
  safe_before = jnp.where(union_before > 0, union_before, one)
  g_positive = w / safe_union
  g_negative = jnp.where(union_before > 0, inter * (w / safe_union) / safe_before,
                         jnp.where(union > 0, one, zero))
  g = jnp.where(positive, g_positive, jnp.where(negative, g_negative, zero))
  return jnp.where(union > 0, g, zero)


def _reduce_sorted(sorted_operands, weights, formulation, dtype, num_pixels, with_grad):
  """Value (and gradient in pixel order) of one row from its sorted operands."""
  sorted_errors, delta, relevant, index = _decode(sorted_operands, formulation, dtype)
  sorted_weights = (None if weights is None else
                    weights.at[index].get(mode="fill", fill_value=0))
  g = jaccard_increments(delta, relevant, sorted_weights, dtype=dtype)
  value = jnp.dot(sorted_errors, g, precision=lax.Precision.HIGHEST)
  if not with_grad:
    return value, None
  grad = jnp.zeros((num_pixels,), dtype).at[index].set(g, mode="drop", unique_indices=True)
  return value, grad


def _poison(errors, valid):
  """0, or NaN when a valid error is not finite: integer keys cannot carry a NaN, and a diverged
  run must show in its loss."""
  return jnp.sum(jnp.where(valid, errors, jnp.zeros((), errors.dtype))) * 0


def _row_sorted(errors, ground_truth, valid, weights, *, formulation, with_grad):
  """One row through a compacting, bucketed sort (``packed64`` or ``pairs``)."""
  (num_pixels,) = errors.shape
  if num_pixels >= _INDEX_MASK:
    raise ValueError(f"a Lovász row holds at most 2**31 - 2 pixels, got {num_pixels}")
  dtype = errors.dtype
  scope = jax.enable_x64(True) if formulation == "packed64" else contextlib.nullcontext()
  with scope:
    bits = _error_bits(errors)
    relevant = _relevant_pixels(bits, ground_truth, valid)
    operands, padding = _sort_operands(bits, ground_truth, relevant, formulation)
    position = jnp.cumsum(relevant, dtype=jnp.int32) - 1
    num_relevant = position[-1] + 1
    target = jnp.where(relevant, position, num_pixels)
    compacted = tuple(
        jnp.full((num_pixels,), pad, x.dtype).at[target].set(x, mode="drop",
                                                             unique_indices=True)
        for x, pad in zip(operands, padding))
    sizes = _bucket_sizes(num_pixels)
    bucket = sum((num_relevant > size).astype(jnp.int32) for size in sizes[:-1])

    def branch(size):
      def run(compacted, weights):
        sorted_operands = lax.sort(tuple(x[:size] for x in compacted), num_keys=1)
        return _reduce_sorted(sorted_operands, weights, formulation, dtype, num_pixels,
                              with_grad)
      return run

    value, grad = lax.switch(bucket, [branch(size) for size in sizes], compacted, weights)
  return value + _poison(errors, valid), grad


def _row_max_error(errors, ground_truth, valid, weights, *, with_grad):
  """A row with no ground truth: Δ_w(M) = 1 for any M of positive weight, extension = max m."""
  del ground_truth
  dtype = errors.dtype
  weighted = valid if weights is None else valid & (weights > 0)
  i = jnp.argmax(jnp.where(weighted, errors, -jnp.ones((), dtype))).astype(jnp.int32)
  any_valid = jnp.any(weighted)
  value = jnp.where(any_valid, errors[i], jnp.zeros((), dtype))
  if not with_grad:
    return value, None
  hit = (lax.iota(jnp.int32, errors.shape[0]) == i) & any_valid
  return value, hit.astype(dtype)


def _active_rows_loop(row_fn, x, aux, mode, *, formulation, with_grad):
  """Evaluates the rows whose mode is not ``SKIP``, one at a time, in a ``lax.while_loop``.

  The loop runs exactly as many iterations as there are active rows (skipped rows cost nothing
  but their zero output); each iteration reads its row with a dynamic slice and writes its value
  and gradient row in place.
  """
  num_rows = mode.shape[0]
  active = mode != SKIP
  num_active = jnp.sum(active, dtype=jnp.int32)
  # The active rows first, in order, without a sort: each row's rank among its kind.
  rank = jnp.where(active, jnp.cumsum(active, dtype=jnp.int32) - 1,
                   num_active + jnp.cumsum(~active, dtype=jnp.int32) - 1)
  order = jnp.zeros((num_rows,), jnp.int32).at[rank].set(lax.iota(jnp.int32, num_rows),
                                                         unique_indices=True)
  dtype = x.dtype
  # Zeros computed from the input, so that they vary over a shard_map axis like the results.
  grads = jnp.where(False, x, jnp.zeros((), dtype)) if with_grad else None
  values = jnp.where(False, x[:, 0], jnp.zeros((), dtype))
  sorted_row = functools.partial(_row_sorted, formulation=formulation, with_grad=with_grad)
  max_row = functools.partial(_row_max_error, with_grad=with_grad)

  def body(state):
    i, values, grads = state
    r = order[i]
    errors, ground_truth, valid, weights, derivative = row_fn(x, aux, r)
    value, grad = lax.cond(mode[r] == SORT, sorted_row, max_row,
                           errors.astype(dtype), ground_truth, valid, weights)
    if with_grad:
      if derivative is not None:
        grad = grad * derivative
      grads = lax.dynamic_update_slice(grads, grad[None].astype(dtype), (r, jnp.int32(0)))
    return i + 1, values.at[r].set(value), grads

  _, values, grads = lax.while_loop(lambda state: state[0] < num_active, body,
                                    (jnp.int32(0), values, grads))
  return values, grads


def _batched_rows(row_fn, x, aux, mode, *, with_grad):
  """Every row at once: one batched sort of ``[R, P]`` 32-bit key/payload pairs, no loop."""
  num_rows, num_pixels = x.shape
  if num_pixels >= _INDEX_MASK:
    raise ValueError(f"a Lovász row holds at most 2**31 - 2 pixels, got {num_pixels}")
  dtype = x.dtype
  errors, ground_truth, valid, weights, derivative = jax.vmap(
      lambda r: row_fn(x, aux, r))(lax.iota(jnp.int32, num_rows))
  errors = errors.astype(dtype)
  valid = valid & (mode != SKIP)[:, None]

  def row(errors, ground_truth, valid, weights):
    bits = _error_bits(errors)
    relevant = _relevant_pixels(bits, ground_truth, valid)
    operands, _ = _sort_operands(bits, ground_truth, relevant, "pairs")
    sorted_operands = lax.sort(operands, num_keys=1)
    value, grad = _reduce_sorted(sorted_operands, weights, "pairs", dtype, num_pixels, with_grad)
    return value + _poison(errors, valid), grad

  values, grads = jax.vmap(row)(errors, ground_truth, valid, weights)
  if with_grad and derivative is not None:
    grads = grads * derivative
  return values, grads


def _evaluate_rows(row_fn, x, aux, mode, sort, with_grad):
  """``(values, grads)`` of the rows with the formulation ``sort`` (see the module docstring)."""
  if sort == "batched":
    return _batched_rows(row_fn, x, aux, mode, with_grad=with_grad)
  loop = lambda formulation: functools.partial(  # noqa: E731
      _active_rows_loop, row_fn, formulation=formulation, with_grad=with_grad)
  if sort != "auto":
    return loop(sort)(x, aux, mode)
  if x.dtype == jnp.float64:  # 64-bit error bits leave no room for the pixel index
    return loop("pairs")(x, aux, mode)
  return lax.platform_dependent(x, aux, mode, cpu=loop("packed64"), default=loop("pairs"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def extension_over_rows(row_fn, x, aux, mode, sort="auto"):
  """Lovász extensions of the rows of ``x`` ``[R, P]`` as described by ``row_fn`` and ``mode``.

  ``row_fn(x, aux, r) -> (errors, ground_truth, valid, weights, derivative)`` builds row ``r``'s
  inputs (``[P]`` each; ``weights`` and ``derivative`` may be None), where ``derivative`` is
  ``d errors / d x[r]`` elementwise (None for the identity). ``mode[r]`` is ``SKIP`` (value 0, no
  work), ``MAX_ERROR`` (no ground truth: ``max(m)`` without a sort) or ``SORT``. ``sort`` is one
  of ``SORT_FORMULATIONS`` (static). ``x`` is float32 or float64; errors are computed in its dtype.

  Returns ``[R]`` values in ``x``'s dtype, differentiable with respect to ``x`` (the gradient of
  each row is its increments in pixel order times ``derivative``, computed in the forward pass).
  """
  values, _ = _evaluate_rows(row_fn, x, aux, mode, sort, with_grad=False)
  return values


def _extension_over_rows_fwd(row_fn, x, aux, mode, sort):
  return _evaluate_rows(row_fn, x, aux, mode, sort, with_grad=True)


def _extension_over_rows_bwd(row_fn, sort, grads, cotangent):
  del row_fn, sort
  return cotangent[:, None] * grads, None, None


extension_over_rows.defvjp(_extension_over_rows_fwd, _extension_over_rows_bwd)


def _plain_row(x, aux, r):
  ground_truth, valid, weights = aux
  return x[r], ground_truth[r], valid[r], None if weights is None else weights[r], None


def lovasz_extension_rows(errors, ground_truth, valid, mode, weights=None, *, sort="auto"):
  """Lovász extensions of ``R`` rows, each row computed, skipped or short-cut as ``mode`` says.

  Args:
    errors: ``[R, P]`` non-negative errors (any float dtype).
    ground_truth: ``[R, P]`` bool.
    valid: ``[R, P]`` bool; pixels that take no part (void) are False.
    mode: ``[R]`` int32, per row ``SKIP`` (value 0, no gradient, no work), ``MAX_ERROR`` (the row
      has no ground truth: value ``max(m)`` without a sort) or ``SORT`` (the full extension).
    weights: ``[R, P]`` non-negative pixel weights (constants), or None for plain counts.
    sort: the sort formulation, one of ``SORT_FORMULATIONS`` (module docstring).

  Returns:
    ``[R]`` values in ``promote_types(errors.dtype, float32)``; differentiable with respect to
    ``errors`` only.
  """
  dtype = compute_dtype(errors.dtype)
  check_sort(sort, dtype, "lovasz_extension")
  errors = errors.astype(dtype)
  if weights is not None:
    weights = lax.stop_gradient(weights.astype(dtype))
  return extension_over_rows(_plain_row, errors,
                             (ground_truth.astype(bool), valid.astype(bool), weights),
                             mode.astype(jnp.int32), sort)


def lovasz_extension(errors, ground_truth, *, valid=None, weights=None, sort="auto"):
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
    sort: ``"auto"`` (per backend), ``"packed64"``, ``"pairs"`` or ``"batched"`` (module
      docstring); every formulation gives the same values.

  Returns:
    ``[...]`` in ``promote_types(errors.dtype, float32)``. A row with no valid pixel gives 0 (zero
    gradient); a row with no ground truth gives ``max(m)`` over its valid pixels.
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
  flat = lambda x: None if x is None else x.reshape(-1, num_pixels)  # noqa: E731
  mode = jnp.full((math.prod(batch_shape),), SORT, jnp.int32)
  values = lovasz_extension_rows(flat(errors), flat(ground_truth), flat(valid), mode,
                                 flat(weights), sort=sort)
  return values.reshape(batch_shape)
