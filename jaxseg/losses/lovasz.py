"""Lovász hinge, Lovász-Softmax and Lovász-Sigmoid losses.

Berman, Rannen Triki and Blaschko, "The Lovász-Softmax loss: a tractable surrogate for the
optimization of the intersection-over-union measure in neural networks", CVPR 2018.

Every loss here is the Lovász extension (``jaxseg.losses.extension``) of the Jaccard loss of one
class, evaluated on a vector of per-pixel errors and averaged over classes (and images). The
conventions are those of the authors' reference code, which users rely on:

* void pixels (``labels == ignore_index``, and any label outside ``[0, C)``: ``{0, 1}`` for the
  binary losses) take no part: neither as errors nor in any count, and their scores are set to 0
  first, so that a NaN there reaches neither the value nor the gradient (a NaN at a valid pixel
  makes the loss NaN);
* no valid pixel, or no selected class present, gives 0 with a zero gradient (never NaN), and so
  does an empty batch (``B``, ``H`` or ``W`` = 0);
* a selected class absent from the ground truth costs its largest error (``classes="all"`` or an
  explicit tuple); under ``classes="present"`` it is not selected;
* per image = the mean over all images of the per-image loss.

All functions are pure, jittable, with static shapes (void pixels are masked, never filtered).
They compute in ``promote_types(dtype, float32)`` of their scores and return a scalar of that
dtype (float32 for float16, bfloat16 and float32 inputs; float64 for float64 inputs, which exist
under ``jax_enable_x64``); gradients have the input's dtype. ``sort`` chooses how the errors are
sorted (``jaxseg.losses.extension``): ``"auto"`` picks the fastest formulation of the backend the
function is compiled for; every formulation gives the same values.

Inputs follow the losses' contract (``jaxseg._validation``): ``TypeError`` for a wrong dtype,
``ValueError`` for a wrong rank or shape or a bad static argument, at trace time. Lovász-Softmax
takes ``[B, H, W, C]`` logits; the Lovász hinge and Lovász-Sigmoid take ``[B, H, W]`` or
``[B, H, W, 1]`` scores (the trailing channel of a one-logit head), as the binary cross-entropy
does; labels are ``[B, H, W]``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxseg._validation import (check_logits_labels, empty_loss, is_empty, valid_labels,
                                zero_void)
from jaxseg.losses import extension
from jaxseg.losses.extension import lovasz_extension  # noqa: F401  (re-exported)
from jaxseg.losses.registry import register_loss


def _class_selection(classes, num_classes, present, class_ids):
  """Boolean ``[..., K]`` mask of the selected classes among ``class_ids`` ``[K]``.

  Ids at or above ``num_classes`` (padding) are never selected.
  """
  if isinstance(classes, str):
    if classes == "present":
      return present
    if classes == "all":
      return jnp.broadcast_to(class_ids < num_classes, present.shape)
    raise ValueError(f"classes must be 'present', 'all' or a sequence of class ids, "
                     f"got {classes!r}")
  ids = tuple(int(c) for c in classes)
  if not ids:
    raise ValueError("classes: an explicit class list must not be empty")
  bad = [c for c in ids if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f"classes: ids {bad} are outside [0, {num_classes})")
  return jnp.broadcast_to(jnp.isin(class_ids, jnp.asarray(ids)), present.shape)


def _weighted_mean(values, weights):
  """``Σ_c w_c L_c / Σ_c w_c`` over the last axis, 0 where no weight is positive."""
  total = jnp.sum(weights, axis=-1)
  safe = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, jnp.sum(weights * values, axis=-1) / safe, 0.0)


def lovasz_softmax(logits, labels, *, classes: str | Sequence[int] = "present",
                   per_image: bool = False, ignore_index: int = 255, from_logits: bool = True,
                   class_weights=None, sort: str = "auto"):
  """Lovász-Softmax loss (CVPR 2018, Sec. 2.2, Eqs. 11-13; gradient by Algorithm 1, Sec. 3).

  With ``f = softmax(logits)`` and per-pixel class errors ``m_i(c) = |[y_i = c] - f_i(c)|``::

      loss = Σ_{c ∈ S} w_c Δ̄_Jc(m(c)) / Σ_{c ∈ S} w_c

  where ``Δ̄_Jc`` is the Lovász extension of the Jaccard loss of class ``c`` and ``S`` the selected
  classes. Batch-level (default, as the reference): one sort per class over all pixels of the
  batch, ``S`` the classes present in the batch (the paper's proxy for the dataset mIoU, Sec. 3.1).
  Per image: the same for each image, then the mean over images.

  Args:
    logits: ``[B, H, W, C]`` scores (or probabilities with ``from_logits=False``); any float dtype.
    labels: ``[B, H, W]`` int class ids in ``[0, C)``, or ``ignore_index`` for void pixels. Any
      other value is void too, as in the other losses (``jaxseg.data`` rejects such labels).
    classes: ``"present"`` (classes with a ground-truth pixel, in the batch or the image),
      ``"all"`` (absent classes cost their largest error) or a sequence of class ids.
    per_image: average per-image losses instead of one batch-level loss.
    ignore_index: the void label.
    from_logits: apply a softmax over the last axis first.
    class_weights: optional ``[C]`` non-negative weights ``w_c`` of the class mean.
    sort: ``"auto"``, ``"packed64"``, ``"pairs"`` or ``"batched"`` (``jaxseg.losses.extension``).

  Returns:
    A scalar in ``promote_types(logits.dtype, float32)``.
  """
  logits, labels, ignore_index = check_logits_labels("lovasz_softmax", logits, labels,
                                                     ignore_index=ignore_index)
  dtype = extension.compute_dtype(logits.dtype)
  extension.check_sort(sort, dtype, "lovasz_softmax")
  num_classes = logits.shape[-1]
  if class_weights is not None:
    class_weights = jax.lax.stop_gradient(jnp.asarray(class_weights, dtype))
    if class_weights.shape != (num_classes,):
      raise ValueError(f"lovasz_softmax: class_weights must have shape ({num_classes},), "
                       f"got {class_weights.shape}")
  if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
    return empty_loss(logits)
  # 0 at void pixels: a NaN there reaches neither the value nor the gradient
  scores = zero_void(logits.astype(dtype), valid_labels(labels, num_classes, ignore_index)[0])
  probs = jax.nn.softmax(scores, axis=-1) if from_logits else scores
  batch = labels.shape[0]
  probs = probs.reshape(batch, -1, num_classes)
  labels = labels.reshape(batch, -1)
  if per_image:  # rows (image, class), each over the pixels of its image
    rows = jnp.swapaxes(probs, 1, 2).reshape(batch * num_classes, -1)
    row_labels = labels
  else:  # rows = classes, each over every pixel of the batch
    rows = probs.reshape(-1, num_classes).T
    row_labels = labels.reshape(1, -1)
  values, weights = lovasz_softmax_class_losses(
      rows, row_labels, jnp.arange(num_classes), num_classes=num_classes, classes=classes,
      ignore_index=ignore_index, class_weights=class_weights, sort=sort)
  return jnp.mean(_weighted_mean(values, weights))


def lovasz_softmax_class_losses(prob_rows, labels, class_ids, *, num_classes: int,
                                classes: str | Sequence[int] = "present",
                                ignore_index: int = 255, class_weights=None,
                                sort: str = "auto"):
  """Per-class Lovász-Softmax losses of class-major probability rows, and their mean weights.

  The building block of ``lovasz_softmax`` and of its sharded versions: row ``g K + k`` of
  ``prob_rows`` holds the probabilities of class ``class_ids[k]`` over the pixels of group ``g``
  (an image, or the whole batch), whose labels are ``labels[g]``.

  Args:
    prob_rows: ``[G K, P]`` float32 (or float64) probabilities.
    labels: ``[G, P]`` int labels.
    class_ids: ``[K]`` int class of each row within a group; ids ``>= num_classes`` are padding
      (never selected).
    num_classes: ``C``.
    classes, ignore_index, class_weights, sort: as in ``lovasz_softmax``.

  Returns:
    ``(values, weights)``, both ``[G, K]`` in ``prob_rows``' dtype: the Lovász extension of each selected class
    (0 where not selected, without any work), and ``w_c`` for selected classes of groups with a
    valid pixel (0 elsewhere), so that the loss of group ``g`` is
    ``Σ_k w_gk L_gk / Σ_k w_gk``.
  """
  class_ids = jnp.asarray(class_ids, jnp.int32)
  labels = labels.astype(jnp.int32)
  valid = valid_labels(labels, num_classes, ignore_index)[0]                 # [G, P]
  present = jnp.any((labels[:, :, None] == class_ids) & valid[:, :, None], axis=1)  # [G, K]
  selected = _class_selection(classes, num_classes, present, class_ids)
  has_valid = jnp.any(valid, axis=-1, keepdims=True)                          # [G, 1]
  mode = jnp.where(selected & has_valid,
                   jnp.where(present, extension.SORT, extension.MAX_ERROR), extension.SKIP)
  row_fn = functools.partial(_softmax_row, num_classes=num_classes, ignore_index=ignore_index)
  values = extension.extension_over_rows(row_fn, prob_rows, (labels, class_ids),
                                         mode.reshape(-1), sort).reshape(mode.shape)
  weights = (selected & has_valid).astype(prob_rows.dtype)
  if class_weights is not None:
    padded = jnp.concatenate([class_weights.astype(prob_rows.dtype),
                              jnp.zeros((1,), prob_rows.dtype)])
    weights = weights * padded[jnp.minimum(class_ids, num_classes)]
  return values, weights


def _softmax_row(prob_rows, aux, r, *, num_classes, ignore_index):
  """Row ``r`` = (group ``r // K``, class ``class_ids[r % K]``): errors ``|[y = c] - f(c)|``."""
  labels, class_ids = aux
  group_labels = labels[r // class_ids.shape[0]]
  foreground = group_labels == class_ids[r % class_ids.shape[0]]
  p = prob_rows[r]
  target = foreground.astype(p.dtype)
  valid = valid_labels(group_labels, num_classes, ignore_index)[0]
  return jnp.abs(target - p), foreground, valid, None, jnp.sign(p - target)


def _hinge_errors(margins, variant):
  if variant == "relu":
    return jax.nn.relu(margins)
  if variant == "elu+1":
    return jax.nn.elu(margins) + 1.0
  raise ValueError(f"hinge variant must be 'relu' or 'elu+1', got {variant!r}")


def _binary_lovasz(errors_fn, scores, labels, *, per_image, ignore_index, sort):
  """Foreground Jaccard through the extension for binary scores ``[B, ...]``.

  A row without foreground costs its largest error; one without valid pixels costs 0.
  """
  batch = labels.shape[0]
  labels = labels.reshape(batch, -1)
  valid = valid_labels(labels, 2, ignore_index)[0]
  # 0 at void pixels: a NaN there reaches neither the value nor the gradient
  scores = scores.reshape(batch, -1).astype(extension.compute_dtype(scores.dtype))
  scores = zero_void(scores, valid)
  errors = errors_fn(scores, labels)
  foreground = labels == 1
  if not per_image:
    errors, foreground, valid = (x.reshape(1, -1) for x in (errors, foreground, valid))
  present = jnp.any(foreground, axis=-1)
  has_valid = jnp.any(valid, axis=-1)
  mode = jnp.where(has_valid, jnp.where(present, extension.SORT, extension.MAX_ERROR),
                   extension.SKIP)
  values = extension.lovasz_extension_rows(errors, foreground, valid, mode, sort=sort)
  return jnp.mean(values)


def lovasz_hinge(logits, labels, *, per_image: bool = True, ignore_index: int = 255,
                 hinge: str = "relu", symmetric: bool = False, sort: str = "auto"):
  """Binary Lovász hinge loss of the foreground Jaccard index (CVPR 2018, Sec. 2.1, Eq. 10).

  With signs ``s_i = 2 y_i - 1`` and hinge errors ``e_i = 1 - F_i s_i``::

      loss = Δ̄_J1(relu(e))

  sorted by decreasing error; per image (the reference's default) it is the mean over images.
  An image without foreground costs its largest error (``g = (1, 0, ...)``); one without valid
  pixels costs 0.

  Two community variants (not in the paper) are options: ``hinge="elu+1"`` uses
  ``ELU(e) + 1`` instead of ``relu(e)`` (strictly positive, smooth), and ``symmetric=True`` gives
  ``(L(F, y) + L(-F, 1 - y)) / 2``, the Jaccard losses of foreground and background.

  Args:
    logits: ``[B, H, W]`` (or ``[B, H, W, 1]``) real-valued scores.
    labels: ``[B, H, W]`` int in ``{0, 1}`` or ``ignore_index``.
    per_image: mean over images of per-image losses (default) or one loss over the batch.
    ignore_index: the void label.
    hinge: ``"relu"`` (the paper) or ``"elu+1"``.
    symmetric: also the background's hinge, averaged.
    sort: as in ``lovasz_softmax``.

  Returns:
    A scalar in ``promote_types(logits.dtype, float32)``.
  """
  logits, labels, ignore_index = check_logits_labels("lovasz_hinge", logits, labels,
                                                     ignore_index=ignore_index, binary=True)
  extension.check_sort(sort, logits.dtype, "lovasz_hinge")
  if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
    return empty_loss(logits)

  def errors_fn(scores, lab):
    signs = 2.0 * (lab == 1).astype(scores.dtype) - 1.0
    return _hinge_errors(1.0 - scores * signs, hinge)

  loss = _binary_lovasz(errors_fn, logits, labels, per_image=per_image,
                        ignore_index=ignore_index, sort=sort)
  if symmetric:
    flipped = jnp.where(labels == ignore_index, labels, 1 - labels)
    loss = 0.5 * (loss + _binary_lovasz(errors_fn, -logits, flipped, per_image=per_image,
                                        ignore_index=ignore_index, sort=sort))
  return loss


def lovasz_sigmoid(probs, labels, *, per_image: bool = False, ignore_index: int = 255,
                   from_logits: bool = False, sort: str = "auto"):
  """Lovász-Sigmoid: Lovász-Softmax on the one-channel foreground probability, classes = [1].

  ``m_i = |[y_i = 1] - p_i|`` and ``loss = Δ̄_J1(m)`` (CVPR 2018, Sec. 2.2 with one channel); a
  batch (or image) without foreground costs its largest error, as an explicit class list does in
  Lovász-Softmax.

  Args:
    probs: ``[B, H, W]`` (or ``[B, H, W, 1]``) foreground probabilities (logits with
      ``from_logits=True``).
    labels: ``[B, H, W]`` int in ``{0, 1}`` or ``ignore_index``.
    per_image: mean over images of per-image losses, or one loss over the batch (default).
    ignore_index: the void label.
    from_logits: apply a sigmoid first.
    sort: as in ``lovasz_softmax``.

  Returns:
    A scalar in ``promote_types(probs.dtype, float32)``.
  """
  probs, labels, ignore_index = check_logits_labels("lovasz_sigmoid", probs, labels,
                                                    ignore_index=ignore_index, binary=True,
                                                    logits_arg="probs")
  extension.check_sort(sort, probs.dtype, "lovasz_sigmoid")
  if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
    return empty_loss(probs)

  def errors_fn(scores, lab):
    p = jax.nn.sigmoid(scores) if from_logits else scores
    return jnp.abs((lab == 1).astype(scores.dtype) - p)

  return _binary_lovasz(errors_fn, probs, labels, per_image=per_image,
                        ignore_index=ignore_index, sort=sort)


register_loss("lovasz_softmax", lovasz_softmax)
register_loss("lovasz_hinge", lovasz_hinge)
register_loss("lovasz_sigmoid", lovasz_sigmoid)
