"""Jit-compiled evaluation over padded static batches, with optional multi-scale and flip.

Prediction (Lovász-Softmax paper, Sec. 4, following DeepLab-v2): for each scale ``s`` of
``scales`` (e.g. ``(1, 0.75, 0.5)``) the image is resized bilinearly to ``round(s H) x round(s W)``,
the logits are resized back to ``H x W`` and turned into probabilities; with ``flip`` the
horizontally flipped image is predicted too and its probabilities flipped back; the prediction
is the arg-max of the *mean of the probabilities*. The evaluation batches are padded to a static
shape by the data pipeline (void label 255 in the padding, ``example_mask`` False for the
filler examples of the last batch), so one compiled step serves the whole split.

The step returns the additive statistics of its batch (:func:`jaxseg.metrics.batch_statistics`:
the confusion matrix, per-image mIoU sums, and for Cityscapes the per-instance pixel counts of the
iIoU); :func:`evaluate` sums them in a :class:`jaxseg.metrics.MetricAccumulator`, which scores
them: per-class IoU ``TP / (TP + FP + FN)``, mIoU, pixel accuracy, the majority-class baseline,
and for Cityscapes what the official benchmark reports (Cordts et al., CVPR 2016, Sec. 3.2):
class IoU, class iIoU, category IoU and category iIoU.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxseg import metrics as metrics_lib
from jaxseg import sharding


def predict_probabilities(apply_fn: Callable[..., jax.Array], variables: Any, images: jax.Array,
                          *, scales: Sequence[float] = (1.0,), flip: bool = False,
                          return_logits: bool = False):
  """Mean over scales (and flips) of ``softmax(logits)`` at the input size ``[B, H, W, C]``.

  With ``return_logits`` also returns the logits of the first view (first scale, not flipped)
  resized to ``H x W``, for the evaluation loss.
  """
  if not scales:
    raise ValueError("eval scales must hold at least one scale, e.g. (1.0,).")
  batch, height, width, _ = images.shape
  total = None
  first_logits = None
  count = 0
  for s in scales:
    s = float(s)
    if s <= 0:
      raise ValueError(f"eval scales must be positive, got {tuple(scales)}.")
    size = (max(int(round(height * s)), 1), max(int(round(width * s)), 1))
    scaled = images if size == (height, width) else jax.image.resize(
        images, (batch,) + size + (images.shape[-1],), "bilinear", antialias=False)
    views = [(scaled, False)] + ([(scaled[:, :, ::-1], True)] if flip else [])
    for view, flipped in views:
      logits = apply_fn(variables, view, train=False).astype(jnp.float32)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != (height, width):
        logits = jax.image.resize(logits, (batch, height, width, logits.shape[-1]), "bilinear",
                                  antialias=False)
      if first_logits is None:
        first_logits = logits
      probs = _probabilities(logits)
      total = probs if total is None else total + probs
      count += 1
  mean = total / count
  return (mean, first_logits) if return_logits else mean


def _probabilities(logits: jax.Array) -> jax.Array:
  """Softmax over classes; a one-logit (binary) model gives ``[1 - sigmoid, sigmoid]``."""
  if logits.shape[-1] == 1:
    p = jax.nn.sigmoid(logits)
    return jnp.concatenate([1.0 - p, p], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def eval_step(apply_fn, variables, batch: dict, metrics: metrics_lib.MetricAccumulator, *,
              scales=(1.0,), flip: bool = False,
              loss_fn: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None) -> dict:
  """The statistics of one padded batch: ``metrics.statistics`` of the prediction.

  ``batch`` holds ``image`` ``[B, H, W, 3]``, ``label`` ``[B, H, W]`` and optionally
  ``example_mask`` ``[B]`` (False for the filler examples of a padded batch: counted nowhere)
  and ``instance`` ``[B, H, W]`` (instance ids, used when ``metrics`` scores instances, i.e.
  Cityscapes' iIoU). Returns :func:`jaxseg.metrics.batch_statistics` of the arg-max of
  :func:`predict_probabilities`, plus ``"loss"`` (``loss_fn`` on the first view's logits at full
  resolution, filler examples void) when ``loss_fn`` is given.
  """
  labels = batch["label"].astype(jnp.int32)
  mask = batch.get("example_mask")
  probs, logits = predict_probabilities(apply_fn, variables, batch["image"], scales=scales,
                                        flip=flip, return_logits=True)
  preds = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  instances = batch.get("instance") if metrics.scores_instances else None
  out = dict(metrics.statistics(preds, labels, mask=mask, instances=instances))
  if loss_fn is not None:
    if mask is not None:
      labels = jnp.where(mask[:, None, None], labels, metrics.ignore_index)
    out["loss"] = jnp.asarray(loss_fn(logits, labels), jnp.float32)
  return out


def make_eval_step(mesh: Mesh, apply_fn, metrics: metrics_lib.MetricAccumulator, *,
                   scales=(1.0,), flip=False, loss_fn=None):
  """``jax.jit`` of :func:`eval_step`: variables replicated, batch sharded on ``'data'``, the
  statistics replicated. ``metrics`` gives the classes, void label and instance settings (its
  fixed settings only: the step does not accumulate)."""
  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  scales = tuple(float(s) for s in scales)

  def step(variables, batch):
    return eval_step(apply_fn, variables, batch, metrics, scales=scales, flip=flip,
                     loss_fn=loss_fn)

  return jax.jit(step, in_shardings=(rep, dat), out_shardings=rep)


def evaluate(step_fn, variables, batches: Iterable[dict], mesh: Mesh,
             metrics: metrics_lib.MetricAccumulator, *,
             max_batches: Optional[int] = None) -> dict[str, Any]:
  """Runs the jitted ``step_fn`` over ``batches`` (host-local NumPy dicts) into ``metrics``.

  ``metrics`` is reset first and holds the evaluation afterwards (``metrics.result()`` for
  arrays, ``metrics.table()`` for the printed tables). Returns ``metrics.summary()`` (JSON-ready:
  ``miou``, ``pixel_accuracy``, ``majority_class_miou``, ``per_class_iou`` by name, and for
  Cityscapes ``iiou``, ``category_miou``, ``category_iiou``, ...) with ``"loss"``, the mean of the
  per-batch losses (None if not finite), when the step computes one. At most ``max_batches``
  batches when it is >= 0.
  """
  metrics.reset()
  keys = ("image", "label", "example_mask") + (("instance",) if metrics.scores_instances else ())
  losses = []
  for i, local in enumerate(batches):
    if max_batches is not None and max_batches >= 0 and i >= max_batches:
      break
    local = {k: v for k, v in local.items() if k in keys}
    out = jax.device_get(step_fn(variables, sharding.global_batch(local, mesh)))
    if "loss" in out:
      losses.append(float(out.pop("loss")))
    metrics.add(out)
  summary = metrics.summary()
  if losses:
    loss = float(np.mean(losses))
    summary["loss"] = loss if np.isfinite(loss) else None  # JSON has no NaN
  return summary


def save_summary(path: str, summary: dict, **extra: Any) -> None:
  """Writes ``summary`` (e.g. :meth:`jaxseg.metrics.MetricAccumulator.summary`) and ``extra`` as
  JSON; ValueError if a value is NaN or infinite (use None)."""
  with open(path, "w") as f:
    json.dump({**summary, **extra}, f, indent=2, allow_nan=False)
