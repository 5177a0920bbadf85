"""Distribution-aware margin calibration (Yu et al., IJCV 2022).

The loss shifts the top-2 class margins of every pixel by per-class offsets computed once from the
label distribution of the training split, then applies a logistic (softplus) loss to the shifted
margins. The formulas below are those of the authors' public code: the text of the paper available
to this project lacks its equations, and its words agree with the code (per-class margin offsets
computed once from the label distribution, a hyper-parameter to tune them, a smooth calibrated
loss in place of the margin loss, fine-tuning from a cross-entropy model).
Where this module departs from that code, it says so below.

Notation (channels last): logits ``F`` ``[..., C]``, integer labels ``y`` ``[...]`` with
``ignore_index`` marking void pixels.

* Margin of a pixel for class ``c`` on the raw logits (top-2 over classes)::

      γ_c = F_c - max_{j != c} F_j

* Offsets, per class ``i``, from the pixel counts of the whole training split at native
  resolution (``n`` labelled pixels, ``n1`` of class ``i``, ``n0 = n - n1``, ``p = n1 / n``)::

      ρ_0i = τ * sqrt(n0) / n1
      ρ_i0 = ρ_0i * p * sqrt(n1) / (υ * n0 - p * sqrt(n0))

  ``ρ_0i`` guards against false positives of class ``i`` and is larger for rarer classes.
  ``ρ_i0`` is the authors' code's heuristic (it is not dimensionally consistent; it is kept as is
  and is about 0 in practice). Defaults ``τ = 10``, ``υ = 1``. Since ``ρ_0i`` scales like
  ``1/sqrt(n)``, ``τ`` is the hyper-parameter to tune on large datasets.

* Calibrated loss per valid pixel with label ``y``::

      ℓ = (1/C) [ C * softplus(-(γ_y - ρ_y0)) + sum_{c != y} softplus(γ_c + ρ_0c) ]

  averaged over the valid pixels. The offsets are constants (kept in float64 on the host and cast
  to the computation's dtype). Each term's target is fixed by class identity (the ground-truth
  class must have a positive shifted margin, every other class a negative one); the authors' code
  derives the target from the sign of the shifted margin instead, which flips it wherever
  ``ρ_y0 = 0``: this module follows the formula, not that quirk.

Precision: the loss computes in ``promote_types(logits.dtype, float32)`` and returns a scalar of
that dtype (float32 for float16, bfloat16 and float32 logits, also under JAX's global 64-bit mode;
float64 for float64 logits); its gradient has the logits' dtype.

Logits ``[B, H, W, C]``, labels ``[B, H, W]``; errors, label values, empty batches and NaN
logits follow the contract of every loss (``jaxseg/_validation.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg._validation import (check_logits_labels, compute_dtype, empty_loss, is_empty,
                                valid_labels, zero_void)

__all__ = [
    "margin_offsets",
    "count_class_pixels",
    "top2_margins",
    "margin_calibration_loss",
    "build_margin_calibration",
]


def margin_offsets(
    class_pixel_counts: Any, *, tau: float = 10.0, upsilon: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class margin offsets ``(ρ_0i, ρ_i0)`` (Yu et al., IJCV 2022, as in the authors' code;
    see the module docstring), in float64 NumPy.

    Args:
      class_pixel_counts: ``[C]`` non-negative pixel counts per class over the whole training
        split (ignored pixels excluded), at native resolution.
      tau: ``τ >= 0``, scale of ``ρ_0i``.
      upsilon: ``υ > 0`` of the ``ρ_i0`` heuristic.

    Returns:
      ``(rho_0i, rho_i0)``, two float64 arrays of shape ``[C]``. A class with no pixel
      (``n1 = 0``) gets both offsets 0 and a ``UserWarning`` (the formula would divide by 0);
      a class that owns every labelled pixel (``n0 = 0``) likewise gets 0 and a warning (both
      a jaxseg convention).

    Raises:
      ValueError: counts not a 1-D array of finite non-negative numbers with a positive total,
        ``tau < 0``, ``upsilon <= 0``, or a non-positive ``ρ_i0`` denominator
        ``υ n0 - p sqrt(n0)`` (only possible for ``υ < 1``).
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f"class_pixel_counts must be a non-empty 1-D array [C], got shape {counts.shape}"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"class_pixel_counts must be finite and >= 0, got {counts.tolist()}")
    n = counts.sum()
    if n <= 0:
        raise ValueError("class_pixel_counts sum to 0: no labelled pixel to calibrate from")
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0, got {tau}")
    if not np.isfinite(upsilon) or upsilon <= 0:
        raise ValueError(f"upsilon must be a finite number > 0, got {upsilon}")

    n1 = counts
    n0 = n - n1
    p = n1 / n
    rho_0i = np.zeros_like(counts)
    rho_i0 = np.zeros_like(counts)
    for i in range(counts.size):
        if n1[i] == 0:
            warnings.warn(
                f"margin calibration: class {i} has no labelled pixel in the training split; "
                "its offsets are set to 0 (the formula would divide by zero).",
                UserWarning,
                stacklevel=2,
            )
            continue
        if n0[i] == 0:
            warnings.warn(
                f"margin calibration: class {i} owns every labelled pixel (n0 = 0); "
                "its offsets are set to 0.",
                UserWarning,
                stacklevel=2,
            )
            continue
        rho_0i[i] = tau * np.sqrt(n0[i]) / n1[i]
        denominator = upsilon * n0[i] - p[i] * np.sqrt(n0[i])
        if denominator <= 0:
            raise ValueError(
                f"margin calibration: class {i}: denominator υ*n0 - p*sqrt(n0) = {denominator} "
                f"<= 0 (υ={upsilon}, n0={n0[i]}, p={p[i]}); use a larger upsilon"
            )
        rho_i0[i] = rho_0i[i] * p[i] * np.sqrt(n1[i]) / denominator
    return rho_0i, rho_i0


def count_class_pixels(
    labels: Iterable[Any], num_classes: int, *, ignore_index: int = 255
) -> np.ndarray:
    """Pixel count per class over an iterable of label maps, in int64 (no overflow).

    Each element is a label array of any shape, or a dict with a ``"label"`` entry (the
    unbatched examples of ``jaxseg.data.get_dataset(...).as_numpy_iterator()``). Pixels equal to
    ``ignore_index`` are skipped; any other value outside ``[0, num_classes)`` raises ValueError.
    Use it on the training split at native resolution (no crops, no rescaling).
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    total = np.zeros(num_classes, dtype=np.int64)
    for item in labels:
        label = item["label"] if isinstance(item, dict) else item
        label = np.asarray(label).reshape(-1).astype(np.int64)
        label = label[label != ignore_index]
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(
                f"label values must be in [0, {num_classes}) or ignore_index={ignore_index}; "
                f"found range [{label.min()}, {label.max()}]"
            )
        total += np.bincount(label, minlength=num_classes)
    return total


def top2_margins(logits: jax.Array) -> jax.Array:
    """``γ_c = F_c - max_{j != c} F_j`` for every class, shape of ``logits`` ``[..., C]``.

    Uses the top-2 values: for the (any) arg-max class the competitor is the second largest
    logit, for every other class it is the largest (ties give 0 margins as they should).
    """
    top2 = jax.lax.top_k(logits, 2)[0]
    first, second = top2[..., :1], top2[..., 1:2]
    competitor = jnp.where(logits >= first, second, first)
    return logits - competitor


def margin_calibration_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    rho_0i: Any,
    rho_i0: Any,
    ignore_index: int = 255,
) -> jax.Array:
    """Distribution-aware calibrated logistic margin loss (Yu et al., IJCV 2022), mean over valid
    pixels.

    ``ℓ = (1/C) [ C softplus(-(γ_y - ρ_y0)) + Σ_{c≠y} softplus(γ_c + ρ_0c) ]`` per valid pixel.

    Args:
      logits: ``[B, H, W, C]`` float logits, ``C >= 2``; computed in
        ``promote_types(logits.dtype, float32)`` (float32, or float64 for float64 logits).
      labels: ``[B, H, W]`` integer labels in ``[0, C)`` or ``ignore_index``; any other value
        is void too.
      rho_0i: ``[C]`` offsets ``ρ_0c`` (constants), see :func:`margin_offsets`.
      rho_i0: ``[C]`` offsets ``ρ_c0`` (constants).
      ignore_index: label value of void pixels; they take no part.

    Returns:
      Scalar of the computation's dtype (float32, float64 for float64 logits); 0 with zero
      gradient when no pixel is valid.
    """
    logits, labels, ignore_index = check_logits_labels(
        "margin_calibration_loss", logits, labels, ignore_index=ignore_index, min_classes=2)
    num_classes = logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    rho_0i = jnp.asarray(rho_0i, dtype)
    rho_i0 = jnp.asarray(rho_i0, dtype)
    if rho_0i.shape != (num_classes,) or rho_i0.shape != (num_classes,):
        raise ValueError(
            f"margin_calibration_loss: rho_0i and rho_i0 must have shape [C]=({num_classes},), "
            f"got rho_0i {rho_0i.shape}, rho_i0 {rho_i0.shape}"
        )
    rho_0i = jax.lax.stop_gradient(rho_0i)
    rho_i0 = jax.lax.stop_gradient(rho_i0)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)

    valid, safe_labels = valid_labels(labels, num_classes, ignore_index)
    # 0 at void pixels: a NaN there reaches neither the value nor the gradient
    logits = zero_void(logits.astype(dtype), valid)
    onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=dtype)
    gamma = top2_margins(logits)
    positive = num_classes * jax.nn.softplus(-(gamma - rho_i0))  # ground-truth class term
    negative = jax.nn.softplus(gamma + rho_0i)  # every other class
    per_pixel = jnp.sum(jnp.where(onehot > 0, positive, negative), axis=-1) / num_classes
    count = jnp.sum(valid, dtype=jnp.int32)
    total = jnp.sum(jnp.where(valid, per_pixel, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(dtype), 0.0).astype(dtype)


def build_margin_calibration(
    *,
    class_pixel_counts: Any = None,
    rho_0i: Any = None,
    rho_i0: Any = None,
    tau: float = 10.0,
    upsilon: float = 1.0,
    ignore_index: int = 255,
):
    """Registry builder: ``loss_fn(logits, labels)`` with offsets fixed at build time.

    Give exactly one source of offsets:

    * ``class_pixel_counts``: ``[C]`` per-class pixel counts of the whole training split at native
      resolution (offsets computed with ``tau``/``upsilon``); the trainer reads them from the
      data for a config entry that names a split (``statistics``, see
      :mod:`jaxseg.training.loss_setup`): the losses read no data;
    * ``rho_0i`` and ``rho_i0``: precomputed offsets ``[C]``.
    """
    if (class_pixel_counts is not None) == (rho_0i is not None or rho_i0 is not None):
        raise ValueError(
            "margin_calibration needs exactly one of class_pixel_counts (per-class pixel counts of "
            "the training split) or rho_0i and rho_i0"
        )
    if class_pixel_counts is not None:
        rho_0i, rho_i0 = margin_offsets(class_pixel_counts, tau=tau, upsilon=upsilon)
    elif rho_0i is None or rho_i0 is None:
        raise ValueError("margin_calibration: give both rho_0i and rho_i0")
    # float64 on the host: the loss casts them to its computation's dtype
    rho_0i = np.asarray(rho_0i, np.float64)
    rho_i0 = np.asarray(rho_i0, np.float64)

    def loss_fn(logits, labels):
        return margin_calibration_loss(
            logits, labels, rho_0i=rho_0i, rho_i0=rho_i0, ignore_index=ignore_index
        )

    return loss_fn


def _register() -> None:
    from jaxseg.losses.registry import register_loss

    register_loss("margin_calibration", build_margin_calibration)


_register()
