"""Segmentation metrics: the confusion matrix and every IoU flavour (dataset, batch and image mIoU:
Berman et al., CVPR 2018, Sec. 3.1, Eq. 14-15), with Cityscapes' category IoU and instance-weighted
iIoU.

Notation: ``C`` classes, predictions and labels are integer class ids of the same shape (e.g.
``[B, H, W]``), ``ignore_index`` (255) marks void ground-truth pixels.

**The confusion matrix** ``cm[g, p]`` counts the pixels of ground-truth class ``g`` predicted as
``p`` (rows = ground truth, columns = prediction). A pixel is counted when its label is in
``[0, C)`` (so not ``ignore_index``), its prediction is in ``[0, C)`` and the optional ``mask`` is
True. A label outside ``[0, C)`` that is not ``ignore_index`` is *counted nowhere* (the same as
void): inside jit nothing can be raised on values, so :func:`check_labels` reports such labels
on the host.

**Per-class IoU** from a confusion matrix::

    IoU_c = cm[c, c] / (sum_p cm[c, p] + sum_g cm[g, c] - cm[c, c])     (TP / (TP + FP + FN))

**The 0/0 convention**: a class absent from both the ground truth and the prediction has union 0
and IoU NaN; every mean (``mean_iou`` and the others) is a mean over the non-NaN entries only; a
mean with no non-NaN entry is NaN. The same holds for class accuracy (NaN for a class with no
ground-truth pixel) and pixel accuracy (NaN with no counted pixel).

**The three mIoUs** of Berman et al. (2018, §3.1), which differ because E(I/U) != E(I)/E(U):

* dataset mIoU: ``mean_iou(sum of the confusion matrices of all images)`` (the benchmark number);
* per-image mIoU: for each image, the mean IoU over the classes present in the image's ground
  truth or prediction (union > 0), then the mean over images (:func:`per_image_mean_iou`);
* batch mIoU: the mean IoU over the classes present in the batch's ground truth, from the
  batch's confusion matrix (:func:`batch_mean_iou`), what the Lovász-Softmax loss over present
  classes approximates.

Functions of a confusion matrix (:func:`iou_from_confusion`, :func:`mean_iou`, ...) work on NumPy
arrays (float64 results, any integer dtype: accumulate over a dataset in int64) and on JAX arrays
(float32 results, jittable). Functions of predictions and labels are jittable with static shapes.
For streaming over an evaluation set, :func:`batch_statistics` computes the additive statistics of
one batch (jittable) and :class:`MetricAccumulator` sums them on the host in int64 / float64.

**Dtypes** do not depend on JAX's global 64-bit mode (``jax_enable_x64``): on JAX arrays, counts
(confusion matrices, image counts) are int32 and scores and weights float32, with x64 on or off;
NumPy confusion matrices give float64 NumPy scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "confusion_matrix",
    "check_labels",
    "iou_from_confusion",
    "mean_iou",
    "pixel_accuracy",
    "class_accuracy",
    "mean_class_accuracy",
    "frequency_weighted_iou",
    "merge_confusion",
    "per_image_iou",
    "per_image_mean_iou",
    "batch_mean_iou",
    "instance_pixel_weights",
    "instance_weighted_counts",
    "instance_iou",
    "batch_statistics",
    "MetricAccumulator",
    "format_iou_table",
    "CITYSCAPES_CLASS_NAMES",
    "CITYSCAPES_CATEGORY_NAMES",
    "CITYSCAPES_CATEGORY_OF_CLASS",
    "CITYSCAPES_MEAN_INSTANCE_SIZE",
    "CITYSCAPES_MAX_INSTANCE_ID",
    "cityscapes_category_iou",
]

# ----------------------------------------------------------------------------------------------
# Cityscapes tables (cityscapesScripts, helpers/labels.py and evaluation/
# evalPixelLevelSemanticLabeling.py), indexed by train id
# ----------------------------------------------------------------------------------------------

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human",
                             "vehicle")
# Category of each of the 19 train ids: flat = road, sidewalk; construction = building, wall,
# fence; object = pole, traffic light, traffic sign; nature = vegetation, terrain; sky; human =
# person, rider; vehicle = car, truck, bus, train, motorcycle, bicycle. (The official categories
# also hold labels that are ignored in evaluation, e.g. parking or caravan; they have no train id
# and take no part in the scores, so merging the 19 x 19 matrix gives the official category IoU.)
CITYSCAPES_CATEGORY_OF_CLASS = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
# The official evaluation's fixed mean instance sizes in pixels (``args.avgClassSize``) for the
# eight instance classes person, rider, car, truck, bus, train, motorcycle, bicycle; 0 marks a
# class without instances.
CITYSCAPES_MEAN_INSTANCE_SIZE = np.array(
    [0.0] * 11 + [3462.4756337644, 3930.4788056518, 12794.0202738185, 27855.1264367816,
                  35732.1511111111, 67583.7075812274, 6298.7200839748, 4672.3249222261],
    dtype=np.float64)

# Largest id of Cityscapes' instanceIds images (labelId <= 33, k <= 999).
CITYSCAPES_MAX_INSTANCE_ID = 33999
# Cityscapes' instanceIds images hold labelId * 1000 + k for instances; smaller values are
# stuff or crowd groups. The official evaluation counts ids > 1000 as instances.
_INSTANCE_ID_THRESHOLD = 1000


# ----------------------------------------------------------------------------------------------
# Checks and small helpers
# ----------------------------------------------------------------------------------------------


def _as_array(x: Any) -> Any:
    return x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x)


def _xp(x: Any) -> Any:
    """jax.numpy for JAX arrays (tracers included), NumPy otherwise."""
    return jnp if isinstance(x, jax.Array) else np


def _check_num_classes(name: str, num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive Python int, got {num_classes!r}")
    return int(num_classes)


def _check_pair(name: str, predictions: Any, labels: Any, mask: Any) -> tuple[Any, Any, Any]:
    predictions, labels = _as_array(predictions), _as_array(labels)
    if not jnp.issubdtype(predictions.dtype, jnp.integer):
        raise ValueError(
            f"{name}: predictions must be integer class ids (e.g. argmax of the logits over the "
            f"class axis), got dtype {predictions.dtype} and shape {tuple(predictions.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name}: labels must be an integer array, got dtype {labels.dtype}")
    if tuple(predictions.shape) != tuple(labels.shape):
        raise ValueError(
            f"{name}: predictions shape {tuple(predictions.shape)} differs from labels shape "
            f"{tuple(labels.shape)}")
    if mask is not None:
        mask = _as_array(mask)
        if mask.dtype != bool:
            raise ValueError(f"{name}: mask must be boolean, got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(labels.shape[:mask.ndim]):
            raise ValueError(
                f"{name}: mask shape {tuple(mask.shape)} must equal the labels shape "
                f"{tuple(labels.shape)} or a prefix of it (e.g. [B] for an example mask)")
        mask = mask.reshape(tuple(mask.shape) + (1,) * (labels.ndim - mask.ndim))
    return predictions, labels, mask


def _counted(predictions: Any, labels: Any, num_classes: int, ignore_index: int,
             mask: Any) -> tuple[Any, Any, Any]:
    """(counted pixel mask, int32 predictions, int32 labels), as ``jnp`` arrays."""
    predictions = jnp.asarray(predictions).astype(jnp.int32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    counted = ((labels != ignore_index) & (labels >= 0) & (labels < num_classes)
               & (predictions >= 0) & (predictions < num_classes))
    if mask is not None:
        counted = counted & jnp.asarray(mask)
    return counted, predictions, labels


def _safe_ratio(xp: Any, num: Any, den: Any) -> Any:
    """``num / den``, NaN where ``den == 0`` (no warning, no NaN gradient paths)."""
    den_ok = den != 0
    return xp.where(den_ok, num / xp.where(den_ok, den, 1), xp.nan)


def _nanmean(xp: Any, values: Any, axis: int = -1) -> Any:
    """Mean over the non-NaN entries; NaN when there is none (no warning)."""
    ok = ~xp.isnan(values)
    total = xp.sum(xp.where(ok, values, 0), axis=axis)
    count = xp.sum(ok, axis=axis, dtype=xp.int32)  # (JAX's default would be int64 under x64)
    return _safe_ratio(xp, total, count)


def _bincount(index: Any, length: int) -> Any:
    """``jnp.bincount(index, length=length)`` in int32 (``jnp.bincount`` counts in the default
    integer, int64 under x64); ``index`` is in ``[0, length)``."""
    return jnp.zeros((length,), jnp.int32).at[index].add(1, mode="drop")


def _float(xp: Any, x: Any) -> Any:
    return x.astype(jnp.float32) if xp is jnp else np.asarray(x, dtype=np.float64)


def _check_confusion(name: str, cm: Any) -> Any:
    cm = _as_array(cm)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"{name}: expected a square confusion matrix [..., C, C], got shape "
                         f"{tuple(cm.shape)}")
    return cm


# ----------------------------------------------------------------------------------------------
# Confusion matrix
# ----------------------------------------------------------------------------------------------


def confusion_matrix(
    predictions: Any,
    labels: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
) -> jax.Array:
    """Confusion matrix ``cm[g, p]`` (rows = ground truth, columns = prediction), int32 ``[C, C]``.

    One bincount of ``label * C + prediction`` over the counted pixels (static shapes: pixels that
    are not counted go to an extra bin that is dropped). Counted pixels: label in ``[0, C)`` and
    not ``ignore_index``, prediction in ``[0, C)``, ``mask`` True. Labels out of range are counted
    nowhere (see :func:`check_labels`). Jittable; int32 counts hold up to 2^31 - 1 pixels per call
    (accumulate over a dataset in int64 on the host, as :class:`MetricAccumulator` does).

    Args:
      predictions: integer class ids, any shape (e.g. ``[B, H, W]``).
      labels: integer labels of the same shape.
      num_classes: ``C`` (a Python int).
      ignore_index: label of void pixels.
      mask: optional boolean mask of the same shape as ``labels`` or of a prefix of it (e.g. the
        ``[B]`` ``example_mask`` of a padded evaluation batch).
    """
    name = "confusion_matrix"
    c = _check_num_classes(name, num_classes)
    predictions, labels, mask = _check_pair(name, predictions, labels, mask)
    return _confusion_core(predictions, labels, mask, c=c, ignore_index=int(ignore_index))


@functools.partial(jax.jit, static_argnames=("c", "ignore_index"))
def _confusion_core(predictions: Any, labels: Any, mask: Any, c: int, ignore_index: int) -> Any:
    counted, predictions, labels = _counted(predictions, labels, c, ignore_index, mask)
    index = jnp.where(counted, labels * c + predictions, c * c)
    counts = _bincount(index.reshape(-1), c * c + 1)
    return counts[:c * c].reshape(c, c)


def check_labels(labels: Any, num_classes: int, *, ignore_index: int = 255,
                 raise_error: bool = False) -> np.ndarray:
    """Host-side check: the distinct label values that are neither in ``[0, C)`` nor void.

    The jitted metrics and losses count such labels nowhere; call this on the host (NumPy or
    concrete JAX arrays) to find them. Returns the sorted offending values (empty when the
    labels are clean); with ``raise_error=True`` raises ``ValueError`` listing them instead.
    """
    c = _check_num_classes("check_labels", num_classes)
    values = np.unique(np.asarray(labels))
    bad = values[((values < 0) | (values >= c)) & (values != ignore_index)]
    if raise_error and bad.size:
        raise ValueError(
            f"check_labels: label values {bad.tolist()} are outside [0, {c}) and are not the "
            f"ignore_index {ignore_index}; the metrics and losses would count them nowhere")
    return bad


# ----------------------------------------------------------------------------------------------
# Scores from a confusion matrix (NumPy float64 or JAX float32)
# ----------------------------------------------------------------------------------------------


def iou_from_confusion(cm: Any) -> Any:
    """Per-class IoU ``TP / (TP + FP + FN)`` from ``cm [..., C, C]``; NaN where the union is 0."""
    cm = _check_confusion("iou_from_confusion", cm)
    xp = _xp(cm)
    cm = _float(xp, cm)
    tp = xp.diagonal(cm, axis1=-2, axis2=-1)
    union = xp.sum(cm, axis=-1) + xp.sum(cm, axis=-2) - tp
    return _safe_ratio(xp, tp, union)


def mean_iou(cm: Any) -> Any:
    """Mean IoU over the classes with a non-zero union (dataset mIoU for a summed matrix)."""
    return _nanmean(_xp(cm), iou_from_confusion(cm))


def pixel_accuracy(cm: Any) -> Any:
    """Fraction of counted pixels predicted correctly, ``trace(cm) / sum(cm)``; NaN if empty."""
    cm = _check_confusion("pixel_accuracy", cm)
    xp = _xp(cm)
    cm = _float(xp, cm)
    return _safe_ratio(xp, xp.trace(cm, axis1=-2, axis2=-1), xp.sum(cm, axis=(-2, -1)))


def class_accuracy(cm: Any) -> Any:
    """Per-class recall ``cm[c, c] / sum_p cm[c, p]``; NaN for a class with no ground truth."""
    cm = _check_confusion("class_accuracy", cm)
    xp = _xp(cm)
    cm = _float(xp, cm)
    return _safe_ratio(xp, xp.diagonal(cm, axis1=-2, axis2=-1), xp.sum(cm, axis=-1))


def mean_class_accuracy(cm: Any) -> Any:
    """Mean of :func:`class_accuracy` over the classes present in the ground truth."""
    return _nanmean(_xp(cm), class_accuracy(cm))


def frequency_weighted_iou(cm: Any) -> Any:
    """Frequency-weighted IoU (Long et al., FCN, 2015): ``sum_c (n_c / n) IoU_c``.

    ``n_c`` is the number of ground-truth pixels of class ``c`` and ``n`` their total; classes
    without ground truth have weight 0. NaN when no pixel is counted.
    """
    cm = _check_confusion("frequency_weighted_iou", cm)
    xp = _xp(cm)
    iou = iou_from_confusion(cm)
    gt = xp.sum(_float(xp, cm), axis=-1)
    weighted = xp.sum(xp.where(gt > 0, gt * xp.where(gt > 0, iou, 0), 0), axis=-1)
    return _safe_ratio(xp, weighted, xp.sum(gt, axis=-1))


def merge_confusion(cm: Any, groups: Sequence[int], num_groups: int | None = None) -> Any:
    """Merges the classes of ``cm [C, C]`` into groups: ``M^T cm M`` with ``M[c, groups[c]] = 1``.

    The IoU of a group from the merged matrix counts as true positive any pixel of the group
    predicted as any class of the group: Cityscapes' category IoU with
    ``groups = CITYSCAPES_CATEGORY_OF_CLASS``.
    """
    cm = _check_confusion("merge_confusion", cm)
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != cm.shape[-1] or \
            not np.issubdtype(groups.dtype, np.integer) or np.any(groups < 0):
        raise ValueError(
            f"merge_confusion: groups must give a non-negative integer group per class "
            f"({cm.shape[-1]} entries), got {groups.tolist()}")
    k = int(groups.max()) + 1 if num_groups is None else int(num_groups)
    if np.any(groups >= k):
        raise ValueError(f"merge_confusion: group ids {groups.tolist()} exceed num_groups {k}")
    xp = _xp(cm)
    onehot = np.eye(k, dtype=np.int64)[groups]
    if xp is jnp:
        onehot = jnp.asarray(onehot, dtype=cm.dtype)
    return xp.swapaxes(onehot, 0, 1) @ cm @ onehot


def cityscapes_category_iou(cm: Any) -> Any:
    """Cityscapes category IoU ``[7]`` from the 19-class train-id confusion matrix.

    Categories (``CITYSCAPES_CATEGORY_NAMES``): flat, construction, object, nature, sky, human,
    vehicle. Equals cityscapesScripts' ``getIouScoreForCategory``: TP = pixels of the category
    predicted as any class of the category, FN = the rest of its pixels, FP = non-void pixels of
    other categories predicted in it.
    """
    cm = _check_confusion("cityscapes_category_iou", cm)
    if cm.shape[-1] != len(CITYSCAPES_CLASS_NAMES):
        raise ValueError(f"cityscapes_category_iou: expected a 19 x 19 train-id confusion matrix, "
                         f"got shape {tuple(cm.shape)}")
    return iou_from_confusion(merge_confusion(cm, CITYSCAPES_CATEGORY_OF_CLASS,
                                              len(CITYSCAPES_CATEGORY_NAMES)))


# ----------------------------------------------------------------------------------------------
# Per-image and batch mIoU (jittable)
# ----------------------------------------------------------------------------------------------


def _class_counts(predictions: Any, labels: Any, counted: Any, c: int) -> tuple[Any, Any, Any]:
    """(intersection, ground-truth count, prediction count), each int32 ``[C]``, of one image."""
    def count(values, keep):
        return _bincount(jnp.where(keep, values, c).reshape(-1), c + 1)[:c]

    hit = counted & (predictions == labels)
    return count(labels, hit), count(labels, counted), count(predictions, counted)


def per_image_iou(
    predictions: Any,
    labels: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
) -> jax.Array:
    """Per-image, per-class IoU, float32 ``[B, C]``; NaN for a class absent from both the image's
    ground truth and its prediction. ``predictions``/``labels`` are ``[B, ...]``; ``mask`` as in
    :func:`confusion_matrix`. Jittable.
    """
    name = "per_image_iou"
    c = _check_num_classes(name, num_classes)
    predictions, labels, mask = _check_pair(name, predictions, labels, mask)
    if labels.ndim < 1:
        raise ValueError(f"{name}: expected a leading image axis, got scalar labels")
    return _per_image_iou_core(predictions, labels, mask, c=c, ignore_index=int(ignore_index))


@functools.partial(jax.jit, static_argnames=("c", "ignore_index"))
def _per_image_iou_core(predictions: Any, labels: Any, mask: Any, c: int,
                        ignore_index: int) -> Any:
    counted, predictions, labels = _counted(predictions, labels, c, ignore_index, mask)
    inter, gt, pred = jax.vmap(functools.partial(_class_counts, c=c))(predictions, labels, counted)
    return _safe_ratio(jnp, inter.astype(jnp.float32), (gt + pred - inter).astype(jnp.float32))


def per_image_mean_iou(
    predictions: Any,
    labels: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
) -> jax.Array:
    """Mean IoU of each image over the classes in its ground truth or prediction, float32 ``[B]``.

    NaN for an image with no counted pixel (all void or masked out): exclude it from the mean over
    images (the per-image mIoU of a dataset is the mean of the non-NaN entries over all images).
    """
    return _nanmean(jnp, per_image_iou(predictions, labels, num_classes,
                                       ignore_index=ignore_index, mask=mask))


def batch_mean_iou(
    predictions: Any,
    labels: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
    classes: str = "present",
) -> jax.Array:
    """mIoU of a batch from its confusion matrix, float32 scalar.

    ``classes="present"``: mean over the classes present in the batch's ground truth (the
    quantity the batch Lovász-Softmax over present classes optimises; classes only predicted are
    left out). ``classes="union"``: mean over the classes in the ground truth or the prediction,
    i.e. ``mean_iou(confusion_matrix(...))``. NaN when no class qualifies.
    """
    if classes not in ("present", "union"):
        raise ValueError(f"batch_mean_iou: classes must be 'present' or 'union', got {classes!r}")
    cm = confusion_matrix(predictions, labels, num_classes, ignore_index=ignore_index, mask=mask)
    iou = iou_from_confusion(cm)
    if classes == "present":
        iou = jnp.where(jnp.sum(cm, axis=-1, dtype=jnp.int32) > 0, iou, jnp.nan)
    return _nanmean(jnp, iou)


# ----------------------------------------------------------------------------------------------
# Instance-weighted IoU (Cityscapes iIoU)
# ----------------------------------------------------------------------------------------------


def _same_value_counts(values: Any) -> Any:
    """For each entry of the 1-D ``values``, how many entries hold the same value (one sort)."""
    n = values.shape[0]
    # a stable sort carrying int32 positions (jnp.argsort's are int64 under x64)
    sorted_values, order = jax.lax.sort((values, jax.lax.iota(jnp.int32, n)), num_keys=1,
                                        is_stable=True)
    starts = jnp.concatenate([jnp.ones((1,), bool), sorted_values[1:] != sorted_values[:-1]])
    run = jnp.cumsum(starts.astype(jnp.int32)) - 1
    run_length = jax.ops.segment_sum(jnp.ones((n,), jnp.int32), run, num_segments=n)
    return jnp.zeros((n,), jnp.int32).at[order].set(run_length[run])


def instance_pixel_weights(
    labels: Any,
    instances: Any,
    mean_instance_size: Any,
    *,
    ignore_index: int = 255,
    mask: Any = None,
    instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
    max_instance_id: int | None = None,
) -> jax.Array:
    """Per-pixel weights of the instance-weighted counts, float32, shape of ``labels``.

    A pixel of image ``b`` is an *instance pixel* when ``instances > instance_id_threshold``
    (Cityscapes' instanceIds encoding ``labelId * 1000 + k``; smaller ids are stuff or crowd
    groups, which the official iIoU leaves out), its label ``c`` is a valid class with
    ``mean_instance_size[c] > 0`` and ``mask`` is True. Its weight is
    ``mean_instance_size[c] / |instance|``, where ``|instance|`` is the number of pixels of image
    ``b`` (inside ``mask``) with the same instance id; every other pixel has weight 0. Summing
    these weights over the correctly / wrongly predicted pixels of an instance gives
    cityscapesScripts' ``tp * avgClassSize / instSize`` and ``fn * avgClassSize / instSize``.
    Instance sizes come from one sort per image (jittable, vmapped over the leading image axis)
    or, when ``max_instance_id`` is given, from one bincount of length ``max_instance_id + 1``
    per image, about 10x faster on CPU (ids above ``max_instance_id`` are then not instances;
    Cityscapes' ids are at most 33999).

    Args:
      labels: ``[B, ...]`` integer train ids.
      instances: ``[B, ...]`` integer instance ids (Cityscapes ``gtFine_instanceIds``).
      mean_instance_size: ``[C]`` mean instance size of each class in pixels over the dataset (0
        for classes without instances); ``CITYSCAPES_MEAN_INSTANCE_SIZE`` for Cityscapes.
      ignore_index: label of void pixels.
      mask: optional boolean mask (shape of ``labels`` or a prefix of it).
      instance_id_threshold: ids above it are instances.
      max_instance_id: optional static bound on the ids, for the bincount path.
    """
    name = "instance_pixel_weights"
    labels, instances = _as_array(labels), _as_array(instances)
    _, labels, mask = _check_pair(name, labels, labels, mask)
    if not jnp.issubdtype(instances.dtype, jnp.integer) or \
            tuple(instances.shape) != tuple(labels.shape):
        raise ValueError(
            f"{name}: instances must be integer ids of the labels' shape {tuple(labels.shape)}, "
            f"got dtype {instances.dtype} and shape {tuple(instances.shape)}")
    if labels.ndim < 1:
        raise ValueError(f"{name}: expected a leading image axis, got scalar labels")
    sizes = jnp.asarray(mean_instance_size, dtype=jnp.float32)
    if sizes.ndim != 1:
        raise ValueError(f"{name}: mean_instance_size must be a vector [C], got shape "
                         f"{tuple(sizes.shape)}")
    return _instance_weights_core(labels, instances, sizes, mask, ignore_index=int(ignore_index),
                                  threshold=int(instance_id_threshold),
                                  max_id=None if max_instance_id is None else int(max_instance_id))


def _bounded_value_counts(values: Any, max_id: int) -> Any:
    """Like :func:`_same_value_counts` for values in ``[0, max_id]`` (others get 0): a bincount."""
    ok = (values >= 0) & (values <= max_id)
    index = jnp.where(ok, values, max_id + 1)
    counts = _bincount(index, max_id + 2)
    return jnp.where(ok, counts[index], 0)


@functools.partial(jax.jit, static_argnames=("ignore_index", "threshold", "max_id"))
def _instance_weights_core(labels: Any, instances: Any, sizes: Any, mask: Any, ignore_index: int,
                           threshold: int, max_id: int | None) -> Any:
    c = sizes.shape[0]
    inside = jnp.ones(labels.shape, bool) if mask is None else jnp.broadcast_to(
        jnp.asarray(mask), labels.shape)
    labels_i = jnp.asarray(labels).astype(jnp.int32)
    ids = jnp.asarray(instances).astype(jnp.int32)
    valid = inside & (labels_i != ignore_index) & (labels_i >= 0) & (labels_i < c)
    safe = jnp.where(valid, labels_i, 0)
    is_instance = valid & (ids > threshold) & (sizes[safe] > 0)
    # Pixels outside the mask get an id of their own group (-1), below any real instance id.
    keyed = jnp.where(inside, ids, -1).reshape(ids.shape[0], -1)
    if max_id is None:
        counts = jax.vmap(_same_value_counts)(keyed).reshape(ids.shape)
    else:
        counts = jax.vmap(functools.partial(_bounded_value_counts, max_id=max_id))(keyed)
        counts = counts.reshape(ids.shape)
        is_instance = is_instance & (ids <= max_id)
    weights = sizes[safe] / jnp.maximum(counts, 1).astype(jnp.float32)
    return jnp.where(is_instance, weights, 0.0)


def instance_weighted_counts(
    predictions: Any,
    labels: Any,
    weights: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    groups: Sequence[int] | None = None,
    num_groups: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Instance-weighted true positives and false negatives per class (or per group), float32.

    ``iTP_c = sum_i w_i [y_i = c, p_i = c]`` and ``iFN_c = sum_i w_i [y_i = c, p_i != c]`` with
    ``w`` from :func:`instance_pixel_weights`. With ``groups`` (a group id per class, e.g.
    ``CITYSCAPES_CATEGORY_OF_CLASS``) the labels and predictions are first mapped to their groups,
    and a pixel is a true positive when its prediction lies in its label's group (cityscapesScripts'
    category iIoU, which keeps the class weights). Jittable.
    """
    name = "instance_weighted_counts"
    c = _check_num_classes(name, num_classes)
    predictions, labels, _ = _check_pair(name, predictions, labels, None)
    weights = _as_array(weights)
    if tuple(weights.shape) != tuple(labels.shape):
        raise ValueError(f"{name}: weights shape {tuple(weights.shape)} differs from labels shape "
                         f"{tuple(labels.shape)}")
    k = c
    if groups is not None:
        table = np.asarray(groups)
        if table.shape != (c,) or not np.issubdtype(table.dtype, np.integer) or np.any(table < 0):
            raise ValueError(f"{name}: groups must give a non-negative group id for each of the "
                             f"{c} classes, got {table.tolist()}")
        k = int(table.max()) + 1 if num_groups is None else int(num_groups)
        if np.any(table >= k):
            raise ValueError(f"{name}: group ids {table.tolist()} exceed num_groups {k}")
        groups = tuple(int(g) for g in table)
    return _weighted_counts_core(predictions, labels, weights, c=c, ignore_index=int(ignore_index),
                                 groups=groups, k=k)


@functools.partial(jax.jit, static_argnames=("c", "ignore_index", "groups", "k"))
def _weighted_counts_core(predictions: Any, labels: Any, weights: Any, c: int, ignore_index: int,
                          groups: tuple[int, ...] | None, k: int) -> tuple[Any, Any]:
    predictions = jnp.asarray(predictions).astype(jnp.int32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    # a prediction out of range is simply not a hit; the label must be a class
    label_ok = (labels != ignore_index) & (labels >= 0) & (labels < c)
    pred_ok = (predictions >= 0) & (predictions < c)
    safe_labels = jnp.where(label_ok, labels, 0)
    safe_preds = jnp.where(pred_ok, predictions, 0)
    if groups is not None:
        table = jnp.asarray(groups, jnp.int32)
        safe_labels, safe_preds = table[safe_labels], table[safe_preds]
    w = jnp.where(label_ok, jnp.asarray(weights, jnp.float32), 0.0)
    hit = pred_ok & (safe_preds == safe_labels)
    itp = jax.ops.segment_sum(jnp.where(hit, w, 0.0).reshape(-1), safe_labels.reshape(-1),
                              num_segments=k)
    ifn = jax.ops.segment_sum(jnp.where(hit, 0.0, w).reshape(-1), safe_labels.reshape(-1),
                              num_segments=k)
    return itp, ifn


def instance_iou(itp: Any, ifn: Any, cm: Any, instance_classes: Any) -> Any:
    """Instance-weighted IoU ``iTP / (iTP + FP + iFN)`` per class (cityscapesScripts' iIoU).

    ``FP_c`` is unweighted: the pixels of any other (non-void) class predicted as ``c``, from the
    confusion matrix ``cm`` (the merged one for categories). NaN for classes that are not
    instance classes (``instance_classes`` False) and where the denominator is 0. NumPy or JAX.
    """
    cm = _check_confusion("instance_iou", cm)
    xp = _xp(cm)
    cmf = _float(xp, cm)
    fp = xp.sum(cmf, axis=-2) - xp.diagonal(cmf, axis1=-2, axis2=-1)
    itp, ifn = _float(xp, xp.asarray(itp)), _float(xp, xp.asarray(ifn))
    value = _safe_ratio(xp, itp, itp + fp + ifn)
    return xp.where(xp.asarray(instance_classes, dtype=bool), value, xp.nan)


def _group_instance_mask(instance_classes: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """A group is an instance group when all its classes are instance classes (cityscapesScripts)."""
    out = np.zeros(k, dtype=bool)
    for g in range(k):
        members = groups == g
        out[g] = bool(members.any() and instance_classes[members].all())
    return out


# ----------------------------------------------------------------------------------------------
# Streaming over an evaluation set
# ----------------------------------------------------------------------------------------------


def batch_statistics(
    predictions: Any,
    labels: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
    instances: Any = None,
    mean_instance_size: Any = None,
    groups: Sequence[int] | None = None,
    num_groups: int | None = None,
    instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
    max_instance_id: int | None = None,
) -> dict[str, jax.Array]:
    """The additive statistics of one batch, jittable; sum them over batches for a dataset.

    Returns a dict with ``confusion`` (int32 ``[C, C]``), ``image_iou_sum`` (float32, sum of the
    per-image mIoUs of the images with a counted pixel) and ``image_count`` (int32, their
    number); with ``instances`` and ``mean_instance_size`` also ``instance_tp`` and
    ``instance_fn`` (float32 ``[C]``), and with ``groups`` too ``group_instance_tp`` and
    ``group_instance_fn`` (float32 ``[K]``). ``mask`` (e.g. the ``[B]`` example mask) excludes
    filler examples from everything.
    """
    cm = confusion_matrix(predictions, labels, num_classes, ignore_index=ignore_index, mask=mask)
    image_miou = per_image_mean_iou(predictions, labels, num_classes, ignore_index=ignore_index,
                                    mask=mask)
    has_pixels = ~jnp.isnan(image_miou)
    stats = {
        "confusion": cm,
        "image_iou_sum": jnp.sum(jnp.where(has_pixels, image_miou, 0.0)),
        "image_count": jnp.sum(has_pixels, dtype=jnp.int32),
    }
    if instances is not None:
        if mean_instance_size is None:
            raise ValueError("batch_statistics: instances given without mean_instance_size")
        weights = instance_pixel_weights(labels, instances, mean_instance_size,
                                         ignore_index=ignore_index, mask=mask,
                                         instance_id_threshold=instance_id_threshold,
                                         max_instance_id=max_instance_id)
        stats["instance_tp"], stats["instance_fn"] = instance_weighted_counts(
            predictions, labels, weights, num_classes, ignore_index=ignore_index)
        if groups is not None:
            stats["group_instance_tp"], stats["group_instance_fn"] = instance_weighted_counts(
                predictions, labels, weights, num_classes, ignore_index=ignore_index,
                groups=groups, num_groups=num_groups)
    return stats


class MetricAccumulator:
    """Sums :func:`batch_statistics` over an evaluation set (on the host, int64 / float64).

    Usage::

        acc = MetricAccumulator(num_classes=21, class_names=names)
        for batch in eval_iterator:
            preds = eval_step(params, batch)                 # int [b, H, W]
            acc.update(preds, batch["label"], mask=batch["example_mask"])
        print(format_iou_table(acc.result()["per_class_iou"], names))

    ``update`` runs a jit-compiled :func:`batch_statistics` (compiled once per input shape); a
    trainer that computes the statistics inside its own jitted (sharded) step calls ``add``
    instead. :meth:`cityscapes` makes one with Cityscapes' names, categories and the official
    mean instance sizes (pass ``instances`` to ``update`` for iIoU). ``mean_instance_size``,
    ``groups``, ``instance_id_threshold`` and ``max_instance_id`` are those of
    :func:`batch_statistics`; ``class_names`` and ``group_names`` label :meth:`table`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        mean_instance_size: Any = None,
        groups: Sequence[int] | None = None,
        group_names: Sequence[str] | None = None,
        instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
        max_instance_id: int | None = None,
    ):
        self.num_classes = _check_num_classes("MetricAccumulator", num_classes)
        self.ignore_index = int(ignore_index)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"MetricAccumulator: {len(class_names)} class names for "
                             f"{self.num_classes} classes")
        self.class_names = None if class_names is None else tuple(class_names)
        self.mean_instance_size = None
        if mean_instance_size is not None:
            sizes = np.asarray(mean_instance_size, dtype=np.float64)
            if sizes.shape != (self.num_classes,) or not np.all(np.isfinite(sizes)) \
                    or np.any(sizes < 0):
                raise ValueError(f"MetricAccumulator: mean_instance_size must be finite, >= 0 "
                                 f"and of shape ({self.num_classes},), got {sizes.tolist()}")
            self.mean_instance_size = sizes
        self.groups = None if groups is None else tuple(int(g) for g in groups)
        self.num_groups = None
        if self.groups is not None:
            if len(self.groups) != self.num_classes or min(self.groups) < 0:
                raise ValueError(f"MetricAccumulator: groups must give a group id >= 0 for each "
                                 f"of the {self.num_classes} classes, got {list(self.groups)}")
            self.num_groups = (len(group_names) if group_names is not None
                               else max(self.groups) + 1)
            if max(self.groups) >= self.num_groups:
                raise ValueError("MetricAccumulator: a group id exceeds the number of group names")
        self.group_names = None if group_names is None else tuple(group_names)
        self.instance_id_threshold = int(instance_id_threshold)
        self._stats_fn = jax.jit(functools.partial(
            batch_statistics, num_classes=self.num_classes, ignore_index=self.ignore_index,
            groups=self.groups, num_groups=self.num_groups,
            instance_id_threshold=self.instance_id_threshold, max_instance_id=max_instance_id))
        self.reset()

    @classmethod
    def cityscapes(cls, **kwargs: Any) -> "MetricAccumulator":
        """An accumulator for the 19 Cityscapes train ids with categories and iIoU."""
        kwargs.setdefault("class_names", CITYSCAPES_CLASS_NAMES)
        kwargs.setdefault("mean_instance_size", CITYSCAPES_MEAN_INSTANCE_SIZE)
        kwargs.setdefault("groups", CITYSCAPES_CATEGORY_OF_CLASS)
        kwargs.setdefault("group_names", CITYSCAPES_CATEGORY_NAMES)
        kwargs.setdefault("max_instance_id", CITYSCAPES_MAX_INSTANCE_ID)
        return cls(len(CITYSCAPES_CLASS_NAMES), **kwargs)

    def reset(self) -> None:
        """Forgets everything accumulated so far."""
        c = self.num_classes
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.image_iou_sum = 0.0
        self.image_count = 0
        self.instance_tp = np.zeros(c, dtype=np.float64)
        self.instance_fn = np.zeros(c, dtype=np.float64)
        k = self.num_groups or 0
        self.group_instance_tp = np.zeros(k, dtype=np.float64)
        self.group_instance_fn = np.zeros(k, dtype=np.float64)
        self.has_instances = False

    def update(self, predictions: Any, labels: Any, *, mask: Any = None,
               instances: Any = None) -> dict[str, np.ndarray]:
        """Computes the statistics of one batch (jitted) and adds them; returns them."""
        if instances is not None and self.mean_instance_size is None:
            raise ValueError("MetricAccumulator.update: instances given but the accumulator has "
                             "no mean_instance_size")
        stats = self._stats_fn(
            predictions, labels, mask=mask, instances=instances,
            mean_instance_size=None if instances is None else self.mean_instance_size)
        stats = jax.device_get(stats)
        self.add(stats)
        return stats

    def add(self, stats: Mapping[str, Any]) -> None:
        """Adds statistics from :func:`batch_statistics` (host or device arrays)."""
        stats = jax.device_get(dict(stats))
        cm = np.asarray(stats["confusion"], dtype=np.int64)
        if cm.shape != self.confusion.shape:
            raise ValueError(f"MetricAccumulator.add: confusion matrix of shape {cm.shape}, "
                             f"expected {self.confusion.shape}")
        self.confusion += cm
        self.image_iou_sum += float(stats.get("image_iou_sum", 0.0))
        self.image_count += int(stats.get("image_count", 0))
        if "instance_tp" in stats:
            self.has_instances = True
            self.instance_tp += np.asarray(stats["instance_tp"], dtype=np.float64)
            self.instance_fn += np.asarray(stats["instance_fn"], dtype=np.float64)
            if "group_instance_tp" in stats and self.num_groups:
                self.group_instance_tp += np.asarray(stats["group_instance_tp"], np.float64)
                self.group_instance_fn += np.asarray(stats["group_instance_fn"], np.float64)

    def result(self) -> dict[str, Any]:
        """Every metric of the data seen so far (NaN where undefined, see the module docstring).

        Keys: ``miou`` (dataset mIoU), ``per_class_iou`` ``[C]``, ``pixel_accuracy``,
        ``mean_class_accuracy``, ``per_class_accuracy``, ``fw_iou``, ``image_miou`` (per-image
        mIoU), ``num_images``, ``confusion``; with groups ``per_group_iou`` and ``group_miou``; after
        updates with instances ``per_class_iiou`` and ``iiou`` (mean over instance classes), and
        with groups ``per_group_iiou`` and ``group_iiou``.
        """
        cm = self.confusion
        out: dict[str, Any] = {
            "confusion": cm.copy(),
            "per_class_iou": iou_from_confusion(cm),
            "miou": float(mean_iou(cm)),
            "pixel_accuracy": float(pixel_accuracy(cm)),
            "per_class_accuracy": class_accuracy(cm),
            "mean_class_accuracy": float(mean_class_accuracy(cm)),
            "fw_iou": float(frequency_weighted_iou(cm)),
            "image_miou": (self.image_iou_sum / self.image_count if self.image_count
                           else math.nan),
            "num_images": self.image_count,
        }
        groups = None if self.groups is None else np.asarray(self.groups)
        if groups is not None:
            group_cm = merge_confusion(cm, groups, self.num_groups)
            out["per_group_iou"] = iou_from_confusion(group_cm)
            out["group_miou"] = float(mean_iou(group_cm))
        if self.has_instances:
            instance_classes = self.mean_instance_size > 0
            per_class = instance_iou(self.instance_tp, self.instance_fn, cm, instance_classes)
            out["per_class_iiou"] = per_class
            out["iiou"] = float(_nanmean(np, per_class))
            if groups is not None:
                group_mask = _group_instance_mask(instance_classes, groups, self.num_groups)
                per_group = instance_iou(self.group_instance_tp, self.group_instance_fn,
                                         group_cm, group_mask)
                out["per_group_iiou"] = per_group
                out["group_iiou"] = float(_nanmean(np, per_group))
        return out

    def table(self) -> str:
        """:func:`format_iou_table` of the per-class IoU (and iIoU when available)."""
        res = self.result()
        names = self.class_names or tuple(str(c) for c in range(self.num_classes))
        text = format_iou_table(res["per_class_iou"], names,
                                instance_iou=res.get("per_class_iiou"))
        if self.groups is not None:
            gnames = self.group_names or tuple(str(g) for g in range(self.num_groups))
            text += "\n\n" + format_iou_table(res["per_group_iou"], gnames,
                                              instance_iou=res.get("per_group_iiou"),
                                              header="category")
        return text


def format_iou_table(per_class_iou: Any, class_names: Sequence[str], *,
                     instance_iou: Any = None, header: str = "class") -> str:
    """A plain-text table of per-class IoU in percent, with the mean (over non-NaN entries).

    NaN entries (classes absent from ground truth and prediction) print as ``n/a``. With
    ``instance_iou`` a second column shows the iIoU (``n/a`` for non-instance classes).
    """
    iou = np.asarray(per_class_iou, dtype=np.float64).reshape(-1)
    if len(class_names) != iou.shape[0]:
        raise ValueError(f"format_iou_table: {len(class_names)} names for {iou.shape[0]} values")
    columns = [("IoU", iou)]
    if instance_iou is not None:
        columns.append(("iIoU", np.asarray(instance_iou, dtype=np.float64).reshape(-1)))
    width = max([len(header), len("mean")] + [len(str(n)) for n in class_names])

    def fmt(v):
        return "   n/a" if np.isnan(v) else f"{100.0 * v:6.2f}"

    lines = [f"{header:<{width}}  " + "  ".join(f"{title:>6}" for title, _ in columns)]
    rule = "-" * len(lines[0])
    lines.append(rule)
    for i, name in enumerate(class_names):
        lines.append(f"{str(name):<{width}}  " + "  ".join(fmt(col[i]) for _, col in columns))
    lines.append(rule)
    lines.append(f"{'mean':<{width}}  " + "  ".join(fmt(_nanmean(np, col)) for _, col in columns))
    return "\n".join(lines)
