"""Baseline segmentation losses, those the Lovász-Softmax (Berman et al., CVPR 2018, Sec. 4),
NeuroIoU (Nagendar et al., BMVC 2018, Sec. 4) and margin-calibration (Yu et al., IJCV 2022)
experiments compare against: cross-entropy, focal, soft Dice, Tversky, soft Jaccard (IoU-Appx),
per-pixel hinge, and the binary cross-entropy / hinge of a one-logit head.

Every loss is a pure, jittable function ``loss(logits, labels, *, ignore_index=255, ...) -> scalar``
with channels-last logits ``[B, H, W, C]`` (``[B, H, W]`` or ``[B, H, W, 1]`` for the binary
losses) and integer labels ``[B, H, W]``.

Conventions shared by all losses of this module:

* **Ignored pixels take no part in anything.** A pixel is *valid* when its label is in
  ``[0, C)`` (``{0, 1}`` for the binary losses) and differs from ``ignore_index``; every other pixel
  (void, or a label out of range) is masked out of every sum (masked with ``jnp.where``, never
  filtered, so shapes stay static and there is no Python branching on values). Use
  :func:`jaxseg.metrics.check_labels` on the host to detect out-of-range labels.
* **A void pixel's logits are set to 0 before anything is computed from them**, so that a NaN
  or infinity there reaches neither the value nor the gradient; at a valid pixel it makes the
  loss non-finite.
* **No valid pixel gives 0 with a zero gradient**, never NaN (and likewise an empty batch, a
  region loss with no selected class, and a weighted cross-entropy whose valid pixels all have
  weight 0).
* **Precision.** The computation runs in ``promote_types(logits.dtype, float32)`` and every loss
  returns a scalar of exactly that dtype: float32 for float16, bfloat16 and float32 logits, float64
  for float64 logits (which exist only under JAX's global 64-bit mode, ``jax_enable_x64``); with
  that mode on, float32 logits still give a float32 loss and integer counts stay int32. The
  gradient has the logits' dtype.
  Logits of any magnitude (``|F| = 1e4``) give finite values and gradients: log-probabilities come
  from ``log_softmax``/``softplus``, never from ``log(softmax)``.
* **Reduction.** The pixel losses (cross-entropy, focal, hinge, binary ones) are means over the
  valid pixels of the whole batch. The region losses (Dice, Tversky, soft Jaccard) sum their soft
  counts over the whole batch by default (``per_image=False``), or per image (``per_image=True``:
  the loss is the mean over the images of the batch of the per-image loss, an image without valid
  pixel contributing 0, as in the Lovász-Softmax authors' reference code).
* Shapes, ranks and dtypes are checked at trace time (``jaxseg._validation``): a wrong dtype
  raises ``TypeError``, a wrong rank or shape or a bad static argument ``ValueError``, naming the
  loss, the argument and what was expected. The binary losses take ``[B, H, W]`` or
  ``[B, H, W, 1]`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg._validation import check_logits_labels, empty_loss, is_empty, zero_void
from jaxseg._validation import compute_dtype as _compute_dtype
from jaxseg._validation import valid_labels as _valid_labels

__all__ = [
    "cross_entropy",
    "enet_class_weights",
    "focal_loss",
    "soft_dice_loss",
    "tversky_loss",
    "soft_jaccard_loss",
    "hinge_loss",
    "binary_hinge_loss",
    "binary_cross_entropy",
]

Classes = Union[str, Sequence[int]]


# ----------------------------------------------------------------------------------------------
# Input checks and shared helpers
# ----------------------------------------------------------------------------------------------


def _as_array(x: Any) -> Any:
    return x if isinstance(x, (jax.Array, np.ndarray)) else jnp.asarray(x)


def _scores_and_labels(logits: Any, labels: Any, num_classes: int,
                       ignore_index: int) -> tuple[Any, Any, Any]:
    """(logits in the compute dtype with 0 at every void pixel, valid mask, labels with 0 at
    every void pixel): a NaN or infinite logit at a void pixel then reaches neither the value
    nor the gradient (``jaxseg._validation.zero_void``)."""
    valid, y = _valid_labels(labels, num_classes, ignore_index)
    return zero_void(logits.astype(_compute_dtype(logits.dtype)), valid), valid, y


def _safe_div(num: Any, den: Any, if_zero: float) -> Any:
    """``num / den`` where ``den != 0``, else ``if_zero``; finite zero gradient in that case."""
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), if_zero)


def _check_nonnegative(name: str, what: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}: {what} must be a finite number >= 0, got {value}")
    return value


def _per_class_vector(name: str, what: str, values: Any, num_classes: int, dtype: Any) -> Any:
    values = _as_array(values)
    if values.ndim != 1 or values.shape[0] != num_classes:
        raise ValueError(
            f"{name}: {what} must be a vector of length C = {num_classes} (one entry per class), "
            f"got shape {tuple(values.shape)}")
    if not isinstance(values, jax.core.Tracer):
        host = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(host)) or np.any(host < 0):
            raise ValueError(f"{name}: {what} must be finite and >= 0, got {host.tolist()}")
    return jnp.asarray(values, dtype=dtype)


def _mean_over_valid(name_values: Any, valid: Any) -> Any:
    total = jnp.sum(jnp.where(valid, name_values, 0))
    count = jnp.sum(valid, dtype=jnp.int32).astype(name_values.dtype)
    return _safe_div(total, count, 0.0)


# ----------------------------------------------------------------------------------------------
# Pixel losses
# ----------------------------------------------------------------------------------------------


def cross_entropy(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    class_weights: Any = None,
    label_smoothing: float = 0.0,
) -> jax.Array:
    r"""Softmax cross-entropy with void pixels ignored and optional class weights (Berman et al.,
    CVPR 2018, Eq. 1; weighted as in ENet's weighted cross-entropy, ibid. Sec. 4.4).

    With ``log f = log_softmax(F)``, smoothing ``ε`` and class weights ``w`` (all 1 by default),
    over the set ``V`` of valid pixels of the **whole batch**::

        loss = sum_{i in V} [ (1 - ε) w_{y_i} (-log f_i(y_i)) + (ε / C) sum_c w_c (-log f_i(c)) ]
               -------------------------------------------------------------------------------
                                         sum_{i in V} w_{y_i}

    which is PyTorch's ``F.cross_entropy(..., weight=w, ignore_index=..., label_smoothing=ε)``
    with ``reduction="mean"``: without weights, the mean over valid pixels. Void labels are
    replaced before the gather, so they never reach an integer-label CE (optax's gives NaN for
    label 255). No valid pixel (or only pixels of weight 0) gives 0 with a zero gradient.

    Args:
      logits: ``[B, H, W, C]`` float (channels last).
      labels: ``[B, H, W]`` int, class ids in ``[0, C)`` or ``ignore_index``.
      ignore_index: label of void pixels.
      class_weights: optional ``[C]`` non-negative weights, e.g. :func:`enet_class_weights`.
      label_smoothing: ``ε`` in ``[0, 1]``.

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "cross_entropy"
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index)
    eps = _check_nonnegative(name, "label_smoothing", label_smoothing)
    if eps > 1:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    num_classes = logits.shape[-1]
    x, valid, y = _scores_and_labels(logits, labels, num_classes, ignore_index)
    dtype = x.dtype
    log_probs = jax.nn.log_softmax(x, axis=-1)
    nll = -jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    if class_weights is None:
        weight_y = jnp.ones_like(nll)
        smooth = -jnp.mean(log_probs, axis=-1)
    else:
        w = _per_class_vector(name, "class_weights", class_weights, num_classes, dtype)
        weight_y = w[y]
        smooth = -jnp.sum(log_probs * w, axis=-1) / num_classes
    per_pixel = (1.0 - eps) * weight_y * nll
    if eps > 0:
        per_pixel = per_pixel + eps * smooth
    numerator = jnp.sum(jnp.where(valid, per_pixel, 0))
    denominator = jnp.sum(jnp.where(valid, weight_y, 0))
    return _safe_div(numerator, denominator, 0.0)


def enet_class_weights(class_frequencies: Any, c: float = 1.02) -> np.ndarray:
    """ENet's class weights ``w_c = 1 / ln(c + p_c)`` (Paszke et al. 2016; the weighted
    cross-entropy that the Cityscapes ENet of Berman et al., CVPR 2018, Sec. 4.4, starts from).

    ``p_c`` is the frequency of class ``c``: the input (pixel counts or frequencies) is normalised
    to sum to 1. With ``c = 1.02`` the weights lie in ``[1 / ln(2.02), 1 / ln(1.02)] ≈ [1.42,
    50.5]``: rare classes weigh up to 50 times more. A host-side helper (float64 NumPy in,
    float32 NumPy out) meant to be run once on dataset statistics.

    Raises:
      ValueError: frequencies not a non-empty 1-D array of finite non-negative numbers with a
        positive total, or ``c <= 1`` (``ln(c + p)`` could be <= 0).
    """
    freq = np.asarray(class_frequencies, dtype=np.float64)
    if freq.ndim != 1 or freq.size == 0:
        raise ValueError(
            f"enet_class_weights: class_frequencies must be a non-empty 1-D array, got shape "
            f"{freq.shape}")
    if not np.all(np.isfinite(freq)) or np.any(freq < 0):
        raise ValueError(
            f"enet_class_weights: class_frequencies must be finite and >= 0, got {freq.tolist()}")
    total = freq.sum()
    if total <= 0:
        raise ValueError("enet_class_weights: class_frequencies sum to 0")
    c = float(c)
    if not np.isfinite(c) or c <= 1.0:
        raise ValueError(f"enet_class_weights: c must be a finite number > 1, got {c}")
    return (1.0 / np.log(c + freq / total)).astype(np.float32)


def focal_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    gamma: float = 2.0,
    alpha: Any = None,
) -> jax.Array:
    r"""Multi-class focal loss (Lin et al., ICCV 2017, eq. 5), mean over valid pixels.

    With ``p_t = softmax(F)_y`` the probability of the ground-truth class::

        FL_i = -α_{y_i} (1 - p_t)^γ log p_t,      loss = (1 / |V|) sum_{i in V} FL_i

    over the valid pixels ``V`` of the **whole batch**. ``γ = 0`` and no ``α`` is the
    cross-entropy. ``1 - p_t`` is computed as ``-expm1(log p_t)`` (no cancellation near
    ``p_t = 1``), and ``(1 - p_t)^γ`` has a zero (not NaN) gradient where ``p_t`` rounds to 1.

    Args:
      logits: ``[B, H, W, C]`` float.
      labels: ``[B, H, W]`` int.
      ignore_index: label of void pixels.
      gamma: focusing parameter ``γ >= 0`` (2 in the paper).
      alpha: ``None`` (all 1), a scalar, or a ``[C]`` vector of per-class weights ``α_c >= 0``.
        Unlike :func:`cross_entropy`'s ``class_weights``, the mean stays over pixels (the paper
        normalises by the number of samples, not by the sum of weights).

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "focal_loss"
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index)
    gamma = _check_nonnegative(name, "gamma", gamma)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    num_classes = logits.shape[-1]
    x, valid, y = _scores_and_labels(logits, labels, num_classes, ignore_index)
    dtype = x.dtype
    log_probs = jax.nn.log_softmax(x, axis=-1)
    log_pt = jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    one_minus_pt = -jnp.expm1(log_pt)
    positive = one_minus_pt > 0
    safe_base = jnp.where(positive, one_minus_pt, 1.0)
    modulating = jnp.where(positive, safe_base**gamma, 0.0**gamma)
    per_pixel = -modulating * log_pt
    if alpha is not None:
        if np.ndim(alpha) == 0 and not isinstance(alpha, jax.core.Tracer):
            per_pixel = per_pixel * _check_nonnegative(name, "alpha", alpha)
        else:
            a = _per_class_vector(name, "alpha", alpha, num_classes, dtype)
            per_pixel = per_pixel * a[y]
    return _mean_over_valid(per_pixel, valid)


def hinge_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    margin: float = 1.0,
) -> jax.Array:
    r"""Per-pixel multi-class one-vs-rest hinge loss on the logits (Nagendar et al., BMVC 2018,
    Sec. 3.3).

    With ``s_c = +1`` for the ground-truth class and ``-1`` for every other class::

        h_i = sum_c max(0, margin - s_c F_i(c)),      loss = (1 / |V|) sum_{i in V} h_i

    a sum of C binary hinge losses per pixel, averaged over the valid pixels ``V`` of the
    **whole batch**. This is the per-pixel hinge that NeuroIoU's hinge variant sums (Nagendar
    et al., BMVC 2018, Sec. 3.3, which does not write it out for several classes: one-vs-rest on
    the logits is a jaxseg convention).

    Args:
      logits: ``[B, H, W, C]`` float.
      labels: ``[B, H, W]`` int.
      ignore_index: label of void pixels.
      margin: the hinge's margin (1 in the papers).

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "hinge_loss"
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index)
    margin = _check_nonnegative(name, "margin", margin)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    num_classes = logits.shape[-1]
    x, valid, y = _scores_and_labels(logits, labels, num_classes, ignore_index)
    signs = 2.0 * jax.nn.one_hot(y, num_classes, dtype=x.dtype) - 1.0
    per_pixel = jnp.sum(jax.nn.relu(margin - signs * x), axis=-1)
    return _mean_over_valid(per_pixel, valid)


def binary_hinge_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    margin: float = 1.0,
) -> jax.Array:
    r"""Binary hinge loss of a one-logit head (the "hinge" baseline of Berman et al., CVPR 2018,
    Sec. 4.2, Table 1).

    With ``s = 2y - 1`` in ``{-1, +1}``::

        loss = (1 / |V|) sum_{i in V} max(0, margin - s_i F_i)

    averaged over the valid pixels ``V`` of the **whole batch**; labels other than 0, 1 (void or
    out of range) are ignored.

    Args:
      logits: ``[B, H, W]`` (or ``[B, H, W, 1]``) float, the foreground score.
      labels: ``[B, H, W]`` int in ``{0, 1, ignore_index}``.
      ignore_index: label of void pixels.
      margin: the hinge's margin.

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "binary_hinge_loss"
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index, binary=True)
    margin = _check_nonnegative(name, "margin", margin)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    x, valid, y = _scores_and_labels(logits, labels, 2, ignore_index)
    signs = 2.0 * y.astype(x.dtype) - 1.0
    per_pixel = jax.nn.relu(margin - signs * x)
    return _mean_over_valid(per_pixel, valid)


def binary_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    pos_weight: float | None = None,
) -> jax.Array:
    r"""Sigmoid cross-entropy of a one-logit binary head, void pixels ignored (the binary
    "cross-entropy" baseline of Berman et al., CVPR 2018, Sec. 4.2, Table 1).

    With ``σ`` the sigmoid and ``w+`` the optional positive weight (1 by default)::

        ℓ_i = -[ w+ y_i log σ(F_i) + (1 - y_i) log(1 - σ(F_i)) ]
            =    w+ y_i softplus(-F_i) + (1 - y_i) softplus(F_i)

    averaged over the valid pixels ``V`` of the **whole batch** (as PyTorch's
    ``binary_cross_entropy_with_logits(pos_weight=...)`` over the valid pixels). The softplus form
    is exact for any ``|F|``.

    Args:
      logits: ``[B, H, W]`` (or ``[B, H, W, 1]``) float.
      labels: ``[B, H, W]`` int in ``{0, 1, ignore_index}``; other values are ignored.
      ignore_index: label of void pixels.
      pos_weight: optional weight ``w+ >= 0`` of the foreground terms.

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "binary_cross_entropy"
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index, binary=True)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    f, valid, y = _scores_and_labels(logits, labels, 2, ignore_index)
    yf = y.astype(f.dtype)
    positive_term = jax.nn.softplus(-f)
    if pos_weight is not None:
        positive_term = _check_nonnegative(name, "pos_weight", pos_weight) * positive_term
    per_pixel = yf * positive_term + (1.0 - yf) * jax.nn.softplus(f)
    return _mean_over_valid(per_pixel, valid)


# ----------------------------------------------------------------------------------------------
# Region losses (soft confusion counts)
# ----------------------------------------------------------------------------------------------


def _region_inputs(
    logits: Any, labels: Any, ignore_index: int, from_logits: bool, per_image: bool
) -> tuple[Any, Any, Any, Any]:
    """Soft counts ``(tp, fp, fn, gt_count)``, each ``[C]`` (or ``[B, C]`` per image).

    ``tp_c = sum p_c y_c``, ``fp_c = sum p_c (1 - y_c)``, ``fn_c = sum (1 - p_c) y_c`` over valid
    pixels, with ``p`` the softmax probabilities and ``y`` the one-hot labels.
    """
    num_classes = logits.shape[-1]
    x, valid, y = _scores_and_labels(logits, labels, num_classes, ignore_index)
    dtype = x.dtype
    probs = jax.nn.softmax(x, axis=-1) if from_logits else x
    mask = valid[..., None]
    onehot = jnp.where(mask, jax.nn.one_hot(y, num_classes, dtype=dtype), 0)
    p = jnp.where(mask, probs, 0)
    axes = (1, 2) if per_image else (0, 1, 2)
    tp = jnp.sum(p * onehot, axis=axes)
    fp = jnp.sum(p * (1.0 - onehot), axis=axes)
    fn = jnp.sum((1.0 - p) * onehot, axis=axes)
    gt_count = jnp.sum(onehot, axis=axes)
    return tp, fp, fn, gt_count


def _class_weights_for_selection(
    name: str, classes: Classes, gt_count: Any, class_weights: Any, dtype: Any
) -> Any:
    """Per-class weights of the mean over classes: the selection times ``class_weights``."""
    num_classes = gt_count.shape[-1]
    if isinstance(classes, str):
        if classes == "present":
            selected = gt_count > 0
        elif classes == "all":
            selected = jnp.ones(gt_count.shape, dtype=bool)
        else:
            raise ValueError(
                f"{name}: classes must be 'present', 'all' or a sequence of class ids, got "
                f"{classes!r}")
    else:
        ids = np.asarray(classes)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"{name}: classes must be 'present', 'all' or a non-empty sequence of integer "
                f"class ids, got {classes!r}")
        if np.any(ids < 0) or np.any(ids >= num_classes):
            raise ValueError(
                f"{name}: class ids {ids.tolist()} out of range [0, {num_classes})")
        chosen = np.zeros(num_classes, dtype=bool)
        chosen[ids] = True
        selected = jnp.broadcast_to(jnp.asarray(chosen), gt_count.shape)
    weights = selected.astype(dtype)
    if class_weights is not None:
        weights = weights * _per_class_vector(name, "class_weights", class_weights, num_classes,
                                              dtype)
    return weights


def _reduce_classes_and_images(per_class_loss: Any, weights: Any, per_image: bool) -> Any:
    """Weighted mean over the classes (0 when no weight), then mean over images if per image."""
    total = jnp.sum(weights * per_class_loss, axis=-1)
    loss = _safe_div(total, jnp.sum(weights, axis=-1), 0.0)
    return jnp.mean(loss) if per_image else loss


def _region_loss(
    name: str,
    logits: Any,
    labels: Any,
    index_fn: Any,
    *,
    ignore_index: int,
    per_image: bool,
    classes: Classes,
    class_weights: Any,
    from_logits: bool,
) -> jax.Array:
    """Shared body of the region losses: ``sum_K w_c (1 - index_c) / sum_K w_c``.

    ``index_fn(tp, fp, fn)`` maps the soft counts of :func:`_region_inputs` to the per-class
    similarity index (Dice, Tversky or Jaccard, 0/0 := 1); the class selection, weights and
    per-image mean are those described in :func:`soft_dice_loss`.
    """
    logits, labels, ignore_index = check_logits_labels(name, logits, labels,
                                                       ignore_index=ignore_index)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    tp, fp, fn, gt_count = _region_inputs(logits, labels, ignore_index, from_logits, per_image)
    index = index_fn(tp, fp, fn)
    weights = _class_weights_for_selection(name, classes, gt_count, class_weights, tp.dtype)
    return _reduce_classes_and_images(1.0 - index, weights, per_image)


def soft_dice_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    per_image: bool = False,
    classes: Classes = "present",
    smooth: float = 1.0,
    class_weights: Any = None,
    from_logits: bool = True,
) -> jax.Array:
    r"""Soft Dice loss (Milletari et al. 2016, "V-Net"), mean over classes.

    With ``p = softmax(F)`` and one-hot labels ``y``, summed over the valid pixels (of the whole
    batch when ``per_image=False``, of each image otherwise)::

        tp_c = sum p_c y_c,   fp_c = sum p_c (1 - y_c),   fn_c = sum (1 - p_c) y_c
        Dice_c = (2 tp_c + s) / (2 tp_c + fp_c + fn_c + s)        (= (2 sum p y + s) / (sum p + sum y + s))
        loss = sum_{c in K} w_c (1 - Dice_c) / sum_{c in K} w_c

    ``K`` is the set of selected classes: ``"present"`` (at least one valid ground-truth pixel in
    the batch, or in the image when per image), ``"all"``, or a sequence of class ids; ``w`` the
    optional ``class_weights`` (1 by default). A class with ``2 tp + fp + fn + s = 0`` (absent from
    ground truth and prediction, ``s = 0``) has Dice 1 (0/0 := 1, loss 0). Per image, the loss is
    the mean over all images of the batch of the per-image loss (0 for an image with no selected
    class). No selected class gives 0 with a zero gradient.

    Args:
      logits: ``[B, H, W, C]`` float (probabilities when ``from_logits=False``).
      labels: ``[B, H, W]`` int.
      ignore_index: label of void pixels.
      per_image: per-image counts and mean over images (True) or counts over the batch (False).
      classes: "present", "all" or a sequence of class ids.
      smooth: additive smoothing ``s >= 0`` of numerator and denominator.
      class_weights: optional ``[C]`` non-negative weights of the mean over classes.
      from_logits: apply the softmax (True) or take ``logits`` as probabilities (False).

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "soft_dice_loss"
    smooth = _check_nonnegative(name, "smooth", smooth)
    return _region_loss(
        name, logits, labels,
        lambda tp, fp, fn: _safe_div(2.0 * tp + smooth, 2.0 * tp + fp + fn + smooth, 1.0),
        ignore_index=ignore_index, per_image=per_image, classes=classes,
        class_weights=class_weights, from_logits=from_logits)


def tversky_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    alpha: float = 0.5,
    beta: float = 0.5,
    per_image: bool = False,
    classes: Classes = "present",
    smooth: float = 1.0,
    class_weights: Any = None,
    from_logits: bool = True,
) -> jax.Array:
    r"""Tversky loss (Salehi, Erdogmus, Gholipour 2017), mean over classes.

    With the soft counts of :func:`soft_dice_loss` (valid pixels of the batch, or of each image
    when ``per_image=True``)::

        T_c = (tp_c + s) / (tp_c + α fp_c + β fn_c + s)
        loss = sum_{c in K} w_c (1 - T_c) / sum_{c in K} w_c

    ``α`` weighs false positives and ``β`` false negatives; ``α = β = 0.5`` is the Dice
    coefficient (with smoothing ``2s``), ``α = β = 1`` the soft Jaccard. Class selection,
    weights, the 0/0 := 1 convention and the per-image mean are those of :func:`soft_dice_loss`.

    Args:
      logits: ``[B, H, W, C]`` float (probabilities when ``from_logits=False``).
      labels: ``[B, H, W]`` int.
      ignore_index: label of void pixels.
      alpha: weight ``α >= 0`` of the false positives.
      beta: weight ``β >= 0`` of the false negatives.
      per_image: per-image counts and mean over images (True) or counts over the batch (False).
      classes: "present", "all" or a sequence of class ids.
      smooth: additive smoothing ``s >= 0``.
      class_weights: optional ``[C]`` non-negative weights of the mean over classes.
      from_logits: apply the softmax (True) or take ``logits`` as probabilities (False).

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "tversky_loss"
    alpha = _check_nonnegative(name, "alpha", alpha)
    beta = _check_nonnegative(name, "beta", beta)
    smooth = _check_nonnegative(name, "smooth", smooth)
    return _region_loss(
        name, logits, labels,
        lambda tp, fp, fn: _safe_div(tp + smooth, tp + alpha * fp + beta * fn + smooth, 1.0),
        ignore_index=ignore_index, per_image=per_image, classes=classes,
        class_weights=class_weights, from_logits=from_logits)


def soft_jaccard_loss(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = 255,
    per_image: bool = False,
    classes: Classes = "present",
    smooth: float = 0.0,
    class_weights: Any = None,
    from_logits: bool = True,
) -> jax.Array:
    r"""Soft Jaccard loss, the "IoU-Appx" of Rahman & Wang (ISVC 2016; the baseline of Nagendar et
    al., BMVC 2018, Sec. 2 and Table 1).

    With ``p = softmax(F)`` and one-hot labels ``y`` over the valid pixels (of the whole batch
    when ``per_image=False``, of each image otherwise)::

        IoU_c = (sum p_c y_c + s) / (sum (p_c + y_c - p_c y_c) + s)
              = (tp_c + s) / (tp_c + fp_c + fn_c + s)
        loss  = sum_{c in K} w_c (1 - IoU_c) / sum_{c in K} w_c

    Rahman & Wang define it for one foreground class without smoothing (``s = 0``, the
    default); the multi-class loss is the mean over the selected classes, with the class
    selection, weights, 0/0 := 1 convention and per-image mean of :func:`soft_dice_loss`.

    Args:
      logits: ``[B, H, W, C]`` float (probabilities when ``from_logits=False``).
      labels: ``[B, H, W]`` int.
      ignore_index: label of void pixels.
      per_image: per-image counts and mean over images (True) or counts over the batch (False).
      classes: "present", "all" or a sequence of class ids.
      smooth: additive smoothing ``s >= 0``.
      class_weights: optional ``[C]`` non-negative weights of the mean over classes.
      from_logits: apply the softmax (True) or take ``logits`` as probabilities (False).

    Returns:
      Scalar float32 (float64 for float64 logits).
    """
    name = "soft_jaccard_loss"
    smooth = _check_nonnegative(name, "smooth", smooth)
    return _region_loss(
        name, logits, labels,
        lambda tp, fp, fn: _safe_div(tp + smooth, tp + fp + fn + smooth, 1.0),
        ignore_index=ignore_index, per_image=per_image, classes=classes,
        class_weights=class_weights, from_logits=from_logits)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def _register() -> None:
    from jaxseg.losses.registry import register_loss  # pylint: disable=import-outside-toplevel

    register_loss("cross_entropy", cross_entropy)
    register_loss("focal", focal_loss)
    register_loss("soft_dice", soft_dice_loss)
    register_loss("tversky", tversky_loss)
    register_loss("soft_jaccard", soft_jaccard_loss)
    register_loss("hinge", hinge_loss)
    register_loss("binary_hinge", binary_hinge_loss)
    register_loss("binary_cross_entropy", binary_cross_entropy)


_register()
