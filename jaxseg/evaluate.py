"""Jit-compiled evaluation over padded static batches, with optional multi-scale and flip.

Prediction (Lovász-Softmax paper, Sec. 4, following DeepLab-v2): for each scale ``s`` of
``scales`` (e.g. ``(1, 0.75, 0.5)``) the image is resized bilinearly to ``round(s H) x round(s W)``,
the logits are resized back to ``H x W`` and turned into probabilities; with ``flip`` the
horizontally flipped image is predicted too and its probabilities flipped back; the prediction
is the arg-max of the *mean of the probabilities*. The evaluation batches are padded to a static
shape by the data pipeline (void label 255 in the padding, ``example_mask`` False for the
filler examples of the last batch), so one compiled step serves the whole split.

Scores come from the dataset confusion matrix of :mod:`jaxseg.metrics` (rows ground truth,
columns prediction): per-class IoU ``TP / (TP + FP + FN)``, their mean (mIoU) and pixel accuracy.
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


def eval_step(apply_fn, variables, batch: dict, *, num_classes: int, scales=(1.0,),
              flip: bool = False, ignore_index: int = 255,
              loss_fn: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None) -> dict:
  """One padded batch: ``{"confusion": int32 [C, C]}`` (filler examples ignored), plus
  ``"loss"`` (``loss_fn`` on the first view's logits at full resolution) when given."""
  labels = batch["label"].astype(jnp.int32)
  if "example_mask" in batch:
    labels = jnp.where(batch["example_mask"][:, None, None], labels, ignore_index)
  probs, logits = predict_probabilities(apply_fn, variables, batch["image"], scales=scales,
                                        flip=flip, return_logits=True)
  preds = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  out = {"confusion": metrics_lib.confusion_matrix(preds, labels, num_classes,
                                                   ignore_index=ignore_index)}
  if loss_fn is not None:
    out["loss"] = jnp.asarray(loss_fn(logits, labels), jnp.float32)
  return out


def make_eval_step(mesh: Mesh, apply_fn, *, num_classes: int, scales=(1.0,), flip=False,
                   ignore_index: int = 255, loss_fn=None):
  """``jax.jit`` of :func:`eval_step`: variables replicated, batch sharded on ``'data'``."""
  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  scales = tuple(float(s) for s in scales)

  def step(variables, batch):
    return eval_step(apply_fn, variables, batch, num_classes=num_classes, scales=scales,
                     flip=flip, ignore_index=ignore_index, loss_fn=loss_fn)

  return jax.jit(step, in_shardings=(rep, dat), out_shardings=rep)


def evaluate(step_fn, variables, batches: Iterable[dict], mesh: Mesh, *, num_classes: int,
             max_batches: Optional[int] = None,
             label_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None
             ) -> tuple[np.ndarray, Optional[float]]:
  """Runs the jitted ``step_fn`` over ``batches`` (host-local NumPy dicts).

  Returns the dataset confusion matrix ``int64 [C, C]`` and the mean of the per-batch losses
  (``None`` when the step computes none). ``label_fn`` maps the host labels first (binary tasks).
  """
  total = np.zeros((num_classes, num_classes), np.int64)
  losses = []
  for i, local in enumerate(batches):
    if max_batches is not None and max_batches >= 0 and i >= max_batches:
      break
    local = {k: v for k, v in local.items() if k in ("image", "label", "example_mask")}
    if label_fn is not None:
      local["label"] = label_fn(local["label"])
    out = step_fn(variables, sharding.global_batch(local, mesh))
    out = jax.device_get(out)
    total += np.asarray(out["confusion"], np.int64)
    if "loss" in out:
      losses.append(float(out["loss"]))
  return total, (float(np.mean(losses)) if losses else None)


def summarize(cm: np.ndarray, class_names: Optional[Sequence[str]] = None) -> dict:
  """Per-class IoU, mIoU, pixel accuracy and the majority-class baseline of a confusion matrix."""
  cm = np.asarray(cm, np.int64)
  num_classes = cm.shape[0]
  names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix.")
  iou = np.asarray(metrics_lib.iou_from_confusion(cm), np.float64)
  return {
      "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
      "miou": float(metrics_lib.mean_iou(cm)),
      "pixel_accuracy": float(metrics_lib.pixel_accuracy(cm)),
      "majority_class_miou": majority_class_miou(cm),
      "majority_class": names[int(np.argmax(cm.sum(axis=1)))],
      "num_pixels": int(cm.sum()),
  }


def majority_class_miou(cm: np.ndarray) -> float:
  """mIoU of predicting, everywhere, the class with the most ground-truth pixels in ``cm``.

  That class ``m`` scores ``IoU_m = n_m / n`` (all pixels predicted ``m``), every other class
  present scores 0; classes absent from the ground truth are left out of the mean (their IoU
  is 0/0), as in :func:`jaxseg.metrics.mean_iou`.
  """
  cm = np.asarray(cm, np.int64)
  gt = cm.sum(axis=1)
  total = gt.sum()
  if total == 0:
    return float("nan")
  majority = int(np.argmax(gt))
  baseline = np.zeros_like(cm)
  baseline[:, majority] = gt
  return float(metrics_lib.mean_iou(baseline))


def format_table(summary: dict, title: str = "Evaluation") -> str:
  """A plain-text table: one row per class (IoU in %), then mIoU and the baseline."""
  rows = [(name, "n/a" if v is None else f"{100 * v:6.2f}")
          for name, v in summary["per_class_iou"].items()]
  width = max([len("majority-class baseline mIoU")] + [len(n) for n, _ in rows])
  lines = [title, "-" * (width + 10), f"{'class':<{width}}  IoU (%)", "-" * (width + 10)]
  lines += [f"{n:<{width}}  {v:>7}" for n, v in rows]
  lines += ["-" * (width + 10),
            f"{'mIoU':<{width}}  {100 * summary['miou']:7.2f}",
            f"{'pixel accuracy':<{width}}  {100 * summary['pixel_accuracy']:7.2f}",
            f"{'majority-class baseline mIoU':<{width}}  "
            f"{100 * summary['majority_class_miou']:7.2f}  (always '{summary['majority_class']}')"]
  return "\n".join(lines)


def save_summary(path: str, summary: dict, cm: np.ndarray, **extra: Any) -> None:
  record = dict(summary)
  record["confusion_matrix"] = np.asarray(cm).tolist()
  record.update(extra)
  with open(path, "w") as f:
    json.dump(record, f, indent=2)
