"""Jit-compiled evaluation over padded static batches, with optional multi-scale and flip.

Prediction (Lovász-Softmax paper, Sec. 4, following DeepLab-v2): for each scale ``s`` of
``scales`` (e.g. ``(1, 0.75, 0.5)``) the image is resized bilinearly to ``round(s H) x round(s W)``,
the logits are resized back to ``H x W`` and turned into probabilities; with ``flip`` the
horizontally flipped image is predicted too and its probabilities flipped back; the prediction
is the arg-max of the *mean of the probabilities*. The evaluation batches are padded to a static
shape by the data pipeline (void label 255 in the padding, ``example_mask`` False for the
filler examples of the last batch), so one compiled step serves the whole split.

*Sliding window* (``mode="slide"``, :func:`slide_logits`, after mmsegmentation's
``slide_inference``): at each scale (and flip) the model sees windows of ``window`` pixels laid
every ``stride`` pixels, the last window of each row and column aligned to the image's border;
the *logits* of overlapping windows are averaged (a count map), then turned into probabilities,
and the probabilities of the scales and flips are averaged as above. Images smaller than the
window are padded to it.

*Dense CRF* (:class:`CRFParams`, :func:`dense_crf`, ``evaluate(..., crf=...)``): the
fully-connected CRF of Krähenbühl and Koltun (NIPS 2011) as DeepLab (Chen et al., TPAMI 2018)
applies it after the network, run on the host by a process pool over the step's mean
probabilities while the device computes the next batches (the ``crf`` extra: ``pydensecrf2``).

The step returns the additive statistics of its batch (:func:`jaxseg.metrics.batch_statistics`:
the confusion matrix, per-image mIoU sums, and for Cityscapes the per-instance pixel counts of the
iIoU); :func:`evaluate` sums them in a :class:`jaxseg.metrics.MetricAccumulator`, which scores
them: per-class IoU ``TP / (TP + FP + FN)``, mIoU, pixel accuracy, the majority-class baseline,
and for Cityscapes what the official benchmark reports (Cordts et al., CVPR 2016, Sec. 3.2):
class IoU, class iIoU, category IoU and category iIoU.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxseg import _extras
from jaxseg import metrics as metrics_lib
from jaxseg import sharding

MODES = ("whole", "slide")


def predict_probabilities(apply_fn: Callable[..., jax.Array], variables: Any, images: jax.Array,
                          *, scales: Sequence[float] = (1.0,), flip: bool = False,
                          return_logits: bool = False, mode: str = "whole",
                          window: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341),
                          sizes: Optional[jax.Array] = None):
  """Mean over scales (and flips) of ``softmax(logits)`` at the input size ``[B, H, W, C]``.

  ``mode="whole"``: the model sees each (scaled, flipped) image whole. ``mode="slide"``: it sees
  windows of ``window`` = (h, w) pixels every ``stride`` pixels (:func:`slide_logits`): within a
  scale and flip the *logits* of overlapping windows are averaged, across scales and flips the
  *probabilities* (as in whole mode). ``sizes`` (int ``[B, 2]``, the images' heights and widths
  before the pipeline padded them at the bottom and right, the batch's ``"size"``) aligns the
  last window to each image's own border instead of the padded one; only used when sliding.
  With ``return_logits`` also returns the logits of the first view (first scale, not flipped)
  resized to ``H x W``, for the evaluation loss.
  """
  if not scales:
    raise ValueError("eval scales must hold at least one scale, e.g. (1.0,).")
  if mode not in MODES:
    raise ValueError(f"eval mode must be one of {MODES}, got {mode!r}.")
  if mode == "slide":
    window, stride = check_window(window, stride)
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
      if mode == "slide":
        logits = slide_logits(apply_fn, variables, view, window=window, stride=stride,
                              extent=_extent(sizes, (height, width), size, flipped))
      else:
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


def check_window(window: Sequence[int], stride: Sequence[int]) -> tuple[tuple[int, int],
                                                                          tuple[int, int]]:
  """``(window, stride)`` as pairs of ints (an int is a square); ValueError unless
  ``0 < stride <= window`` in both dimensions (a larger stride would leave pixels unseen)."""
  def pair(v, name):
    v = (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(x) for x in v)
    if len(v) != 2:
      raise ValueError(f"eval {name} must be (height, width), got {v}.")
    return v
  window, stride = pair(window, "window"), pair(stride, "stride")
  if min(window) < 1 or min(stride) < 1 or stride[0] > window[0] or stride[1] > window[1]:
    raise ValueError(f"sliding-window inference needs 0 < stride <= window in both dimensions, "
                     f"got window {window} and stride {stride}.")
  return window, stride


def num_windows(size: int, window: int, stride: int) -> int:
  """Windows along one dimension of ``size`` pixels (mmsegmentation's grid count): one when the
  image is no larger than the window, else ``ceil((size - window) / stride) + 1``."""
  return max(size - window + stride - 1, 0) // stride + 1


def _extent(sizes, full, scaled, flipped):
  """``[B, 4]`` (top, bottom, left, right) of each image inside the scaled, maybe flipped canvas
  (the pipeline pads at the bottom and right); None (the whole canvas) without ``sizes``."""
  if sizes is None:
    return None
  sizes = jnp.asarray(sizes, jnp.int32)
  hs = jnp.clip(jnp.round(sizes[:, 0] * (scaled[0] / full[0])), 1, scaled[0]).astype(jnp.int32)
  ws = jnp.clip(jnp.round(sizes[:, 1] * (scaled[1] / full[1])), 1, scaled[1]).astype(jnp.int32)
  zero = jnp.zeros_like(hs)
  if flipped:
    return jnp.stack([zero, hs, scaled[1] - ws, jnp.full_like(ws, scaled[1])], axis=1)
  return jnp.stack([zero, hs, zero, ws], axis=1)


def _window_offsets(start, end, canvas: int, window: int, stride: int, count: int):
  """Offsets ``[B, count]`` of the windows along one axis covering ``[start, end)`` of each image
  (window ``i`` at ``start + i * stride``, the last aligned to ``end``, all inside the canvas),
  and whether each is in use (``[B, count]``: a window equal to the previous one is not, so that
  images smaller than the canvas do not weigh their last window twice)."""
  i = jnp.arange(count, dtype=jnp.int32)
  offsets = jnp.minimum(start[:, None] + i * stride, end[:, None] - window)
  offsets = jnp.clip(offsets, 0, canvas - window)
  used = jnp.concatenate([jnp.ones_like(offsets[:, :1], bool),
                          offsets[:, 1:] != offsets[:, :-1]], axis=1)
  return offsets, used


def slide_logits(apply_fn: Callable[..., jax.Array], variables: Any, images: jax.Array, *,
                 window: Sequence[int], stride: Sequence[int],
                 extent: Optional[jax.Array] = None) -> jax.Array:
  """Sliding-window logits ``float32 [B, H, W, C]`` of ``images`` ``[B, H, W, 3]``.

  mmsegmentation's ``slide_inference``: windows of ``window`` = (h, w) pixels at offsets
  ``0, stride, 2 stride, ...``, the last window of each row and column aligned to the image's
  bottom and right border (so every window lies inside the image), the *logits* summed and
  divided by the number of windows covering each pixel (the count map). The softmax is applied
  afterwards, by the caller: logits, not probabilities, are averaged within a scale. An image
  smaller than the window (in either dimension) is padded with zeros (the normalised mean colour,
  as the pipeline pads) at the bottom and right to the window, the window's logits cropped back.
  Logits the model returns at a lower resolution (output stride) are resized bilinearly to the
  window first.

  ``extent`` (int ``[B, 4]``: top, bottom, left, right) is where each image lies inside a padded
  canvas (:func:`predict_probabilities` derives it from the batch's ``"size"``): the windows are
  then laid over that region and aligned to *its* border, so no window reaches into the padding
  unless the image is smaller than the window (then the window starts at the image's top-left
  corner and the padding fills the rest, as it would in whole-image prediction); pixels outside
  every window (padding only) get logits 0. Without ``extent``, the whole canvas.

  Static shapes: the number of windows comes from the static image shape
  (:func:`num_windows`), the offsets are computed on the device, and the windows run one after
  the other in a ``jax.lax.scan`` whose body is the one model call on a ``[B, h, w, 3]`` window:
  the compiled program holds the model once per view, whatever the number of windows, and a
  step compiles once per batch shape.
  """
  (wh, ww), (sh, sw) = check_window(window, stride)
  batch, height, width, channels = images.shape
  ph, pw = max(height, wh), max(width, ww)
  if (ph, pw) != (height, width):
    images = jnp.pad(images, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)))
  if extent is None:
    extent = jnp.broadcast_to(jnp.asarray([0, height, 0, width], jnp.int32), (batch, 4))
  extent = jnp.asarray(extent, jnp.int32)
  ny, nx = num_windows(ph, wh, sh), num_windows(pw, ww, sw)
  oy, uy = _window_offsets(extent[:, 0], extent[:, 1], ph, wh, sh, ny)
  ox, ux = _window_offsets(extent[:, 2], extent[:, 3], pw, ww, sw, nx)
  # The windows in row-major order, [n, B] each.
  ys = jnp.repeat(oy, nx, axis=1).T
  xs = jnp.tile(ox, (1, ny)).T
  used = (uy[:, :, None] & ux[:, None, :]).reshape(batch, ny * nx).T

  crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (wh, ww, channels)))

  def add(total, part, y, x):
    here = jax.lax.dynamic_slice(total, (y, x, 0), part.shape)
    return jax.lax.dynamic_update_slice(total, here + part, (y, x, 0))

  add = jax.vmap(add)

  def forward(view):
    logits = apply_fn(variables, view, train=False).astype(jnp.float32)
    if logits.shape[1:3] != (wh, ww):
      logits = jax.image.resize(logits, (batch, wh, ww, logits.shape[-1]), "bilinear",
                                antialias=False)
    return logits

  num_classes = jax.eval_shape(forward, jax.ShapeDtypeStruct((batch, wh, ww, channels),
                                                             images.dtype)).shape[-1]

  def body(carry, window_args):
    total, count = carry
    y, x, u = window_args
    weight = u.astype(jnp.float32)[:, None, None, None]
    logits = forward(crop(images, y, x)) * weight
    total = add(total, logits, y, x)
    count = add(count, jnp.broadcast_to(weight, (batch, wh, ww, 1)), y, x)
    return (total, count), None

  init = (jnp.zeros((batch, ph, pw, num_classes), jnp.float32),
          jnp.zeros((batch, ph, pw, 1), jnp.float32))
  (total, count), _ = jax.lax.scan(body, init, (ys, xs, used))
  return (total / jnp.maximum(count, 1.0))[:, :height, :width]


def _probabilities(logits: jax.Array) -> jax.Array:
  """Softmax over classes; a one-logit (binary) model gives ``[1 - sigmoid, sigmoid]``."""
  if logits.shape[-1] == 1:
    p = jax.nn.sigmoid(logits)
    return jnp.concatenate([1.0 - p, p], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def eval_step(apply_fn, variables, batch: dict, metrics: metrics_lib.MetricAccumulator, *,
              scales=(1.0,), flip: bool = False,
              loss_fn: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
              mode: str = "whole", window=(512, 512), stride=(341, 341),
              probabilities: bool = False) -> dict:
  """The statistics of one padded batch: ``metrics.statistics`` of the prediction.

  ``batch`` holds ``image`` ``[B, H, W, 3]``, ``label`` ``[B, H, W]`` and optionally
  ``example_mask`` ``[B]`` (False for the filler examples of a padded batch: counted nowhere),
  ``size`` ``[B, 2]`` (the images' sizes before padding: the sliding windows align to them) and
  ``instance`` ``[B, H, W]`` (instance ids, used when ``metrics`` scores instances, i.e.
  Cityscapes' iIoU). Returns :func:`jaxseg.metrics.batch_statistics` of the arg-max of
  :func:`predict_probabilities` (``mode``, ``window``, ``stride``: whole or sliding-window),
  plus ``"loss"`` (``loss_fn`` on the first view's logits at full resolution, filler examples
  void) when ``loss_fn`` is given. With ``probabilities`` it returns ``"probabilities"``
  (float32 ``[B, H, W, C]``) instead of the statistics, for the host-side CRF of
  :func:`evaluate`.
  """
  labels = batch["label"].astype(jnp.int32)
  mask = batch.get("example_mask")
  probs, logits = predict_probabilities(apply_fn, variables, batch["image"], scales=scales,
                                        flip=flip, return_logits=True, mode=mode, window=window,
                                        stride=stride, sizes=batch.get("size"))
  if probabilities:
    out = {"probabilities": probs}
  else:
    preds = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    instances = batch.get("instance") if metrics.scores_instances else None
    out = dict(metrics.statistics(preds, labels, mask=mask, instances=instances))
  if loss_fn is not None:
    if mask is not None:
      labels = jnp.where(mask[:, None, None], labels, metrics.ignore_index)
    out["loss"] = jnp.asarray(loss_fn(logits, labels), jnp.float32)
  return out


def make_eval_step(mesh: Mesh, apply_fn, metrics: metrics_lib.MetricAccumulator, *,
                   scales=(1.0,), flip=False, loss_fn=None, mode: str = "whole",
                   window=(512, 512), stride=(341, 341), probabilities: bool = False):
  """``jax.jit`` of :func:`eval_step`: variables replicated, batch sharded on ``'data'``, the
  statistics (and loss) replicated, the probabilities (``probabilities=True``, for
  ``evaluate(..., crf=...)``) sharded on ``'data'`` like the batch. ``metrics`` gives the
  classes, void label and instance settings (its fixed settings only: the step does not
  accumulate). ``mode`` / ``window`` / ``stride``: :func:`predict_probabilities`."""
  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  scales = tuple(float(s) for s in scales)
  if mode not in MODES:
    raise ValueError(f"eval mode must be one of {MODES}, got {mode!r}.")
  window, stride = check_window(window, stride)

  def step(variables, batch):
    return eval_step(apply_fn, variables, batch, metrics, scales=scales, flip=flip,
                     loss_fn=loss_fn, mode=mode, window=window, stride=stride,
                     probabilities=probabilities)

  out = rep
  if probabilities:
    out = {"probabilities": dat, **({"loss": rep} if loss_fn is not None else {})}
  return jax.jit(step, in_shardings=(rep, dat), out_shardings=out)


# ----------------------------------------------------------------------------------------------
# Dense CRF (host side)


@dataclasses.dataclass(frozen=True)
class CRFParams:
  """The fully-connected CRF (Krähenbühl and Koltun, NIPS 2011) as DeepLab runs it after the
  network: unary ``-log p`` of the evaluation's probabilities, a smoothness (Gaussian) kernel of
  weight ``pos_w`` and spatial standard deviation ``pos_xy_std`` pixels, an appearance
  (bilateral) kernel of weight ``bi_w``, spatial standard deviation ``bi_xy_std`` pixels and
  colour standard deviation ``bi_rgb_std`` (0-255 RGB), Potts compatibilities, ``iterations``
  mean-field iterations.

  Defaults: DeepLab-v2's published settings for its ResNet-101 model on Pascal VOC 2012
  (Chen et al., TPAMI 2018; the DeepLab-v2 ResNet-101 project page,
  http://liangchiehchen.com/projects/DeepLabv2_resnet.html: ``bi_w = 4, bi_xy_std = 67,
  bi_rgb_std = 3, pos_w = 3, pos_xy_std = 1``; 10 iterations, DeepLab's ``MaxIterations``; the
  settings the PyTorch re-implementation kazuto1011/deeplab-pytorch uses too). They were
  cross-validated on VOC at the images' own resolution: other datasets may want others.

  ``workers``: the processes of :func:`evaluate`'s pool (0: ``os.cpu_count()``).
  """
  iterations: int = 10
  pos_w: float = 3.0
  pos_xy_std: float = 1.0
  bi_w: float = 4.0
  bi_xy_std: float = 67.0
  bi_rgb_std: float = 3.0
  workers: int = 0


def _require_crf() -> None:
  _extras.require("crf", "Dense CRF post-processing (eval.crf)", "pydensecrf")


def dense_crf(probabilities: np.ndarray, image: np.ndarray,
              params: CRFParams = CRFParams()) -> np.ndarray:
  """Class ids ``int32 [H, W]``: the CRF's arg-max for ``probabilities`` ``[H, W, C]`` and the RGB
  image ``uint8 [H, W, 3]`` (NumPy, on the host; ``pydensecrf``, the ``crf`` extra)."""
  _require_crf()
  import pydensecrf.densecrf as dcrf  # pylint: disable=import-outside-toplevel

  probabilities = np.asarray(probabilities, np.float32)
  height, width, num_classes = probabilities.shape
  if np.shape(image) != (height, width, 3):
    raise ValueError(f"dense_crf: image of shape {np.shape(image)}, expected "
                     f"{(height, width, 3)} (the probabilities' size, RGB)")
  unary = -np.log(np.clip(probabilities, 1e-8, 1.0)).reshape(height * width, num_classes)
  crf = dcrf.DenseCRF2D(width, height, num_classes)
  crf.setUnaryEnergy(np.ascontiguousarray(unary.T))
  crf.addPairwiseGaussian(sxy=float(params.pos_xy_std), compat=float(params.pos_w))
  crf.addPairwiseBilateral(sxy=float(params.bi_xy_std), srgb=float(params.bi_rgb_std),
                           rgbim=np.ascontiguousarray(image, dtype=np.uint8),
                           compat=float(params.bi_w))
  q = np.asarray(crf.inference(int(params.iterations)), np.float32)
  return q.reshape(num_classes, height, width).argmax(0).astype(np.int32)


def _crf_task(probabilities: np.ndarray, image: np.ndarray, size, params: CRFParams):
  """One example of :func:`evaluate`'s pool: the CRF over the image's own region (the padding
  left out), class 0 in the padding (void there)."""
  out = np.zeros(probabilities.shape[:2], np.int32)
  h, w = (int(size[0]), int(size[1])) if size is not None else out.shape
  out[:h, :w] = dense_crf(probabilities[:h, :w], image[:h, :w], params)
  return out


def _local_rows(array) -> np.ndarray:
  """This process's rows of a global array sharded on its first axis (all rows on one host)."""
  if getattr(array, "is_fully_addressable", True):
    return np.asarray(array)
  shards = {s.index[0].start or 0: s.data for s in array.addressable_shards}
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


def _to_rgb(images: np.ndarray, mean, std) -> np.ndarray:
  """The pipeline's normalised images back to uint8 RGB."""
  rgb = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean,
                                                                                   np.float32)
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def evaluate(step_fn, variables, batches: Iterable[dict], mesh: Mesh,
             metrics: metrics_lib.MetricAccumulator, *,
             max_batches: Optional[int] = None, crf: Optional[CRFParams] = None,
             pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
             pixel_std: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, Any]:
  """Runs the jitted ``step_fn`` over ``batches`` (host-local NumPy dicts) into ``metrics``.

  ``metrics`` is reset first and holds the evaluation afterwards (``metrics.result()`` for
  arrays, ``metrics.table()`` for the printed tables). Returns ``metrics.summary()`` (JSON-ready:
  ``miou``, ``pixel_accuracy``, ``majority_class_miou``, ``per_class_iou`` by name, and for
  Cityscapes ``iiou``, ``category_miou``, ``category_iiou``, ...) with ``"loss"``, the mean of the
  per-batch losses (None if not finite), when the step computes one. At most ``max_batches``
  batches when it is >= 0.

  With ``crf`` (:class:`CRFParams`; ``step_fn`` from ``make_eval_step(...,
  probabilities=True)``) the prediction is the dense CRF's (:func:`dense_crf`) over the step's
  probabilities and the RGB image (``image * pixel_std + pixel_mean``: the data config's
  ``mean`` / ``std`` undo the pipeline's normalisation), each example's own region only (its
  ``"size"``; filler examples skipped), computed by a pool of ``crf.workers`` processes while
  the device runs the following batches (at most two batches wait for the pool); the
  statistics are then :meth:`jaxseg.metrics.MetricAccumulator.update`'s, in batch order.
  """
  metrics.reset()
  keys = (("image", "label", "example_mask", "size")
          + (("instance",) if metrics.scores_instances else ()))
  losses = []
  pool = None
  pending: collections.deque = collections.deque()
  if crf is not None:
    _require_crf()
    workers = int(crf.workers) or os.cpu_count() or 1
    # spawn: JAX's threads make fork unsafe; the workers import only jaxseg.evaluate's modules.
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))

  def finish(entry):
    futures, local = entry
    preds = np.stack([f.result() if f is not None else np.zeros(local["label"].shape[1:],
                                                                 np.int32)
                      for f in futures])
    instances = local.get("instance") if metrics.scores_instances else None
    metrics.update(preds, np.asarray(local["label"], np.int32),
                   mask=local.get("example_mask"), instances=instances)

  try:
    for i, local in enumerate(batches):
      if max_batches is not None and max_batches >= 0 and i >= max_batches:
        break
      local = {k: v for k, v in local.items() if k in keys}
      out = step_fn(variables, sharding.global_batch(local, mesh))  # dispatched, not awaited
      if pool is None:
        out = jax.device_get(out)
        if "loss" in out:
          losses.append(float(out.pop("loss")))
        metrics.add(out)
        continue
      if "probabilities" not in out:
        raise ValueError("evaluate(crf=...) needs a step from make_eval_step(..., "
                         "probabilities=True)")
      while len(pending) >= 2:   # the device works on this batch meanwhile
        finish(pending.popleft())
      probs = _local_rows(out["probabilities"])
      if "loss" in out:
        losses.append(float(jax.device_get(out["loss"])))
      rgb = _to_rgb(local["image"], pixel_mean, pixel_std)
      mask = local.get("example_mask")
      sizes = local.get("size")
      futures = [pool.submit(_crf_task, probs[j], rgb[j],
                             None if sizes is None else np.asarray(sizes[j]), crf)
                 if mask is None or mask[j] else None for j in range(len(probs))]
      pending.append((futures, local))
    while pending:
      finish(pending.popleft())
  finally:
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)
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
