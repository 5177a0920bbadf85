"""The input contract of jaxseg's losses and metrics, in one place (imports only JAX and NumPy, so
that ``jaxseg.losses`` and ``jaxseg.metrics`` both use it without importing each other).

Every public loss and metric checks its arguments when it is called or traced (shapes, dtypes
and Python arguments are static, so the checks cost nothing inside ``jit``) and raises:

* ``TypeError`` for an array of the wrong dtype: logits that are not floating point, labels,
  predictions or instance ids that are not integers (float or bool labels included), a mask that
  is not boolean;
* ``ValueError`` for a wrong rank or shape (labels that do not match the logits, logits without a
  batch axis, channels-first logits ``[B, C, H, W]``) and for a bad static argument
  (``ignore_index`` or ``num_classes`` that is not an integer, an unknown option);

with a message that starts with the function's name, names the argument and says what was
expected and what was given.

Shapes (losses): multi-class logits are ``[B, H, W, C]`` (channels last, ``C >= 1``), binary
logits ``[B, H, W]`` or ``[B, H, W, 1]`` (the trailing channel of a one-logit head is accepted by
every binary loss and dropped), labels ``[B, H, W]``.

Label values are never checked inside a loss or metric (under ``jit`` they are not known): a
pixel is *valid* when its label is in ``[0, C)`` (``{0, 1}`` for the binary losses) and differs
from ``ignore_index``; every other value is void, in every loss and metric
(:func:`valid_labels`). Out-of-range labels are rejected on the host where data is read
(``jaxseg.data``, ``jaxseg.metrics.check_labels``).

Empty batches (``B``, ``H`` or ``W`` = 0: no pixel, known from the static shape) are valid input:
every loss gives 0 with a zero gradient, as for a batch with no valid pixel; the metrics count
nothing (their scores are NaN, "undefined", by the metrics' 0/0 rule).

Non-finite logits: a NaN (or infinity) at a valid pixel makes the loss non-finite, so that a
diverged run shows; at a void pixel it changes neither the loss nor its gradient: every loss sets
the scores of void pixels to 0 (:func:`zero_void`) before computing anything from them (a
``where`` after the computation hides the value but not the gradient: ``0 * NaN``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_KINDS = {
    "floating": ((jnp.floating,), "a floating-point array"),
    "integer": ((jnp.integer,), "an integer array"),
    "bool": ((jnp.bool_,), "a boolean array"),
    "real": ((jnp.integer, jnp.floating), "an integer or floating-point array"),
}


def compute_dtype(dtype: Any) -> Any:
  """``promote_types(dtype, float32)``, canonical: float64 only under ``jax_enable_x64`` (NumPy
  float64 logits without it compute in float32, as JAX would store them)."""
  return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def require_dtype(name: str, arg: str, x: Any, kind: str, hint: str = "") -> None:
  """``TypeError`` unless ``x.dtype`` is of ``kind``: ``"floating"``, ``"integer"`` (bool is not
  an integer), ``"bool"`` or ``"real"`` (integer or floating point)."""
  families, what = _KINDS[kind]
  if not any(jnp.issubdtype(x.dtype, family) for family in families):
    raise TypeError(f"{name}: {arg} must be {what}{hint}, got dtype {x.dtype} "
                    f"(shape {tuple(x.shape)})")


def static_int(name: str, arg: str, value: Any, *, minimum: int | None = None) -> int:
  """A Python int from a static integer argument; ``ValueError`` for anything else (a float, a
  bool, an array, a value below ``minimum``)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
          or (minimum is not None and value < minimum):
    bound = "" if minimum is None else f" >= {minimum}"
    raise ValueError(f"{name}: {arg} must be a Python int{bound}, got {value!r}")
  return int(value)


def _channels_first_hint(logits_shape: tuple, labels_shape: tuple) -> str:
  if len(logits_shape) == 4 and tuple(logits_shape[2:]) == tuple(labels_shape[1:3]) \
          and logits_shape[0] == labels_shape[0]:
    return ("; these look like channels-first logits [B, C, H, W]: move the class axis last "
            "with jnp.moveaxis(logits, 1, -1)")
  return ""


def check_logits_labels(name: str, logits: Any, labels: Any, *, ignore_index: Any = 255,
                        binary: bool = False, min_classes: int = 1,
                        logits_arg: str = "logits") -> tuple[Any, Any, int]:
  """Checks a loss's ``(logits, labels, ignore_index)`` (module docstring) and returns them:
  logits ``[B, H, W, C]`` (``[B, H, W]`` for ``binary``, a trailing channel of size 1 dropped)
  and labels ``[B, H, W]`` as JAX arrays, ``ignore_index`` as an int. ``logits_arg`` names the
  scores in messages (``probs`` for a loss that takes probabilities)."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  require_dtype(name, logits_arg, logits, "floating")
  require_dtype(name, "labels", labels, "integer",
                " (class ids, ignore_index for void; cast with labels.astype(jnp.int32))")
  ignore_index = static_int(name, "ignore_index", ignore_index)
  given = tuple(logits.shape)
  hint = _channels_first_hint(given, labels.shape)
  if binary:
    if logits.ndim == 4 and given[-1] == 1:
      logits = logits[..., 0]
    if logits.ndim != 3:
      raise ValueError(f"{name}: {logits_arg} of a binary loss must be [B, H, W] or "
                       f"[B, H, W, 1], got shape {given}{hint}")
  elif logits.ndim != 4:
    raise ValueError(f"{name}: {logits_arg} must have rank 4 [B, H, W, C] (channels last), got "
                     f"shape {given}")
  elif given[-1] < min_classes:
    raise ValueError(f"{name}: {logits_arg} must have at least {min_classes} class channel(s) "
                     f"on their last axis, got shape {given}")
  if labels.ndim != 3:
    raise ValueError(f"{name}: labels must have rank 3 [B, H, W], got shape "
                     f"{tuple(labels.shape)}")
  spatial = tuple(logits.shape[:3])
  if tuple(labels.shape) != spatial:
    raise ValueError(f"{name}: labels shape {tuple(labels.shape)} does not match the "
                     f"{logits_arg}' [B, H, W] = {spatial} ({logits_arg} shape {given}){hint}")
  return logits, labels, ignore_index


def valid_labels(labels: Any, num_classes: int, ignore_index: int) -> tuple[Any, Any]:
  """The one label rule of every loss and metric: ``(valid, safe)``, where ``valid`` marks the
  labels in ``[0, C)`` other than ``ignore_index`` and ``safe`` is the int32 labels with every
  other pixel set to 0 (safe to gather or one-hot with)."""
  labels = jnp.asarray(labels).astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
  return valid, jnp.where(valid, labels, 0)


def zero_void(x: Any, valid: Any) -> Any:
  """``x`` with 0 at the void pixels (``valid`` ``[B, H, W]``, broadcast over ``x``'s trailing
  axes), before anything is computed from it: a NaN or infinity there then reaches neither the
  value nor, through a ``where``, the gradient (the gradient at a void pixel is exactly 0)."""
  valid = jnp.reshape(valid, valid.shape + (1,) * (x.ndim - valid.ndim))
  return jnp.where(valid, x, jnp.zeros((), x.dtype))


def is_empty(labels: Any) -> bool:
  """Whether a batch has no pixel at all (static)."""
  return labels.size == 0


def empty_loss(logits: Any) -> Any:
  """The loss of an empty batch: 0 in the loss's dtype (its gradient is 0)."""
  return jnp.zeros((), compute_dtype(logits.dtype))
