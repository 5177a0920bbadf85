"""Segmentation metrics: the confusion matrix and every IoU flavour (dataset, batch and image mIoU:
Berman et al., CVPR 2018, Sec. 3.1, Eq. 14-15), with Cityscapes' category IoU and instance-weighted
iIoU.

Notation: ``C`` classes, predictions and labels are integer class ids of the same shape (e.g.
``[B, H, W]``), ``ignore_index`` (255) marks void ground-truth pixels. The input contract is the
losses' (``jaxseg._validation``), checked at trace time: an array of the wrong dtype raises
``TypeError`` (predictions, labels or instance ids that are not integers, a mask that is not
boolean, a confusion matrix that is not integer or floating point); a wrong shape or a bad static
argument (``num_classes`` not a positive int, ``ignore_index`` not an int) raises ``ValueError``;
each message names the function and the argument.

**The confusion matrix** ``cm[g, p]`` counts the pixels of ground-truth class ``g`` predicted as
``p`` (rows = ground truth, columns = prediction). A pixel is counted when its label is in
``[0, C)`` (so not ``ignore_index``), its prediction is in ``[0, C)`` and the optional ``mask`` is
True. A label outside ``[0, C)`` that is not ``ignore_index`` is *counted nowhere* (the same as
void): inside jit nothing can be raised on values, so :func:`check_labels` reports such labels
on the host.

**Per-class IoU** from a confusion matrix::

    IoU_c = cm[c, c] / (sum_p cm[c, p] + sum_g cm[g, c] - cm[c, c])     (TP / (TP + FP + FN))

**Empty batches** (``B``, ``H`` or ``W`` = 0) are valid input and count nothing: a zero confusion
matrix, per-image results with 0 rows, undefined (NaN) scores by the rule below.

**The 0/0 convention**: a class absent from both the ground truth and the prediction has union 0
and IoU NaN; every mean (``mean_iou`` and the others) is a mean over the non-NaN entries only; a
mean with no non-NaN entry is NaN. The same holds for class accuracy (NaN for a class with no
ground-truth pixel) and pixel accuracy (NaN with no counted pixel).

**The three mIoUs** of Berman et al. (2018, §3.1), which differ because E(I/U) != E(I)/E(U):

* dataset mIoU: ``mean_iou(sum of the confusion matrices of all images)`` (the benchmark number);
* per-image mIoU: for each image, the mean IoU over the classes present in the image's ground
  truth or prediction (union > 0), then the mean over images (:func:`per_image_mean_iou`);
* per-class image IoU: for each class, its per-image IoU averaged over the images whose ground
  truth or prediction holds it (:class:`MetricAccumulator`, ``per_class_image_iou``);
* batch mIoU: the mean IoU over the classes present in the batch's ground truth, from the
  batch's confusion matrix (:func:`batch_mean_iou`), what the Lovász-Softmax loss over present
  classes approximates.

**The Cityscapes benchmark** (Cordts et al., CVPR 2016, Sec. 3.2) reports four numbers, each a
mean over classes or categories: class IoU; class iIoU, ``iTP / (iTP + FP + iFN)`` where each
pixel of a ground-truth instance counts ``mean_instance_size[c] / |instance|`` (so that large
instances do not dominate; FP is not weighted); and the same two over the 7 categories, whose
confusion matrix merges the classes of a category (:func:`merge_confusion`). Exactly as
cityscapesScripts' ``evalPixelLevelSemanticLabeling`` computes them: the instance weights are
applied in float64 on the host to per-instance integer counts (:func:`instance_counts`,
:func:`instance_weighted_sums`).

Functions of a confusion matrix (:func:`iou_from_confusion`, :func:`mean_iou`, ...) work on NumPy
arrays (float64 results, any integer dtype: accumulate over a dataset in int64) and on JAX arrays
(float32 results, jittable). Functions of predictions and labels are jittable with static shapes.
The evaluation has one path: :func:`batch_statistics` computes the additive (integer) statistics
of one batch, jittable, and :class:`MetricAccumulator` sums them on the host in int64 / float64
and scores them (:meth:`~MetricAccumulator.result`, :meth:`~MetricAccumulator.summary` for JSON,
:meth:`~MetricAccumulator.table`).

**Dtypes** do not depend on JAX's global 64-bit mode (``jax_enable_x64``): on JAX arrays, counts
(confusion matrices, image and instance counts) are int32 and scores float32, with x64 on or off;
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

from jaxseg._validation import require_dtype, static_int, valid_labels

__all__ = [
    "confusion_matrix",
    "check_labels",
    "iou_from_confusion",
    "mean_iou",
    "pixel_accuracy",
    "class_accuracy",
    "mean_class_accuracy",
    "frequency_weighted_iou",
    "majority_class_miou",
    "merge_confusion",
    "per_image_iou",
    "per_image_mean_iou",
    "batch_mean_iou",
    "instance_counts",
    "instance_weighted_sums",
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
    return static_int(name, "num_classes", num_classes, minimum=1)


def _check_pair(name: str, predictions: Any, labels: Any, mask: Any,
                ignore_index: Any) -> tuple[Any, Any, Any, int]:
    """Checks the arguments of a metric of predictions and labels (``jaxseg._validation``);
    returns them with the mask reshaped to broadcast against the labels."""
    predictions, labels = _as_array(predictions), _as_array(labels)
    require_dtype(name, "predictions", predictions, "integer",
                  " of class ids (e.g. the argmax of the logits over the class axis)")
    require_dtype(name, "labels", labels, "integer")
    ignore_index = static_int(name, "ignore_index", ignore_index)
    if tuple(predictions.shape) != tuple(labels.shape):
        raise ValueError(
            f"{name}: predictions shape {tuple(predictions.shape)} differs from labels shape "
            f"{tuple(labels.shape)}")
    if mask is not None:
        mask = _as_array(mask)
        require_dtype(name, "mask", mask, "bool")
        if tuple(mask.shape) != tuple(labels.shape[:mask.ndim]):
            raise ValueError(
                f"{name}: mask shape {tuple(mask.shape)} must equal the labels shape "
                f"{tuple(labels.shape)} or a prefix of it (e.g. [B] for an example mask)")
        mask = mask.reshape(tuple(mask.shape) + (1,) * (labels.ndim - mask.ndim))
    return predictions, labels, mask, ignore_index


def _counted(predictions: Any, labels: Any, num_classes: int, ignore_index: int,
             mask: Any) -> tuple[Any, Any, Any]:
    """(counted pixel mask, int32 predictions, int32 labels), as ``jnp`` arrays."""
    predictions = jnp.asarray(predictions).astype(jnp.int32)
    valid, _ = valid_labels(labels, num_classes, ignore_index)
    labels = jnp.asarray(labels).astype(jnp.int32)
    counted = valid & (predictions >= 0) & (predictions < num_classes)
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
    integer, int64 under x64); an ``index`` outside ``[0, length)`` is dropped."""
    return jnp.zeros((length,), jnp.int32).at[index].add(1, mode="drop")


def _float(xp: Any, x: Any) -> Any:
    return x.astype(jnp.float32) if xp is jnp else np.asarray(x, dtype=np.float64)


def _check_confusion(name: str, cm: Any) -> Any:
    cm = _as_array(cm)
    require_dtype(name, "cm", cm, "real", " of counts")
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
    predictions, labels, mask, ignore_index = _check_pair(name, predictions, labels, mask,
                                                          ignore_index)
    return _confusion_core(predictions, labels, mask, c=c, ignore_index=ignore_index)


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
    ignore_index = static_int("check_labels", "ignore_index", ignore_index)
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


def majority_class_miou(cm: Any) -> Any:
    """mIoU of the majority-class baseline: predicting everywhere the class with the most
    ground-truth pixels in ``cm [..., C, C]``.

    With ``n_c`` ground-truth pixels of class ``c`` and ``n = sum_c n_c``, that class ``m`` scores
    ``IoU_m = n_m / n``, every other class present scores 0 and absent classes are left out (0/0,
    as in :func:`mean_iou`)::

        majority_class_miou = (max_c n_c / n) / |{c : n_c > 0}|

    NaN when no pixel is counted. The floor a trained model must beat; the trainer prints it next
    to the per-class table (a jaxseg convention).
    """
    cm = _check_confusion("majority_class_miou", cm)
    xp = _xp(cm)
    gt = xp.sum(_float(xp, cm), axis=-1)
    present = xp.sum(gt > 0, axis=-1, dtype=xp.int32)
    return _safe_ratio(xp, xp.max(gt, axis=-1), xp.sum(gt, axis=-1) * present)


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
    predictions, labels, mask, ignore_index = _check_pair(name, predictions, labels, mask,
                                                          ignore_index)
    if labels.ndim < 1:
        raise ValueError(f"{name}: expected a leading image axis, got scalar labels")
    return _per_image_iou_core(predictions, labels, mask, c=c, ignore_index=ignore_index)


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


def instance_counts(
    predictions: Any,
    labels: Any,
    instances: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    mask: Any = None,
    categories: Sequence[int] | None = None,
    instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
    max_instance_id: int = CITYSCAPES_MAX_INSTANCE_ID,
) -> dict[str, jax.Array]:
    """Integer pixel counts of every instance of every image, int32 ``[B, L]``; jittable.

    The ingredients of the iIoU (Cordts et al., CVPR 2016, Sec. 3.2), exact: the weights
    ``mean_instance_size[c] / |instance|`` are applied on the host in float64
    (:func:`instance_weighted_sums`): summing float32 weights over the millions of pixels of
    1024 x 2048 frames put the iIoU 3.5e-4 away from cityscapesScripts' (measured).

    An *instance pixel* of image ``b`` has an id in ``(instance_id_threshold, max_instance_id]``
    (Cityscapes' instanceIds encoding ``labelId * 1000 + k``; ids up to 1000 are stuff or crowd
    regions, which the iIoU leaves out), a label that is a class in ``[0, C)`` and ``mask`` True.
    Bin ``j`` of image ``b`` counts the instance pixels with id ``instance_id_threshold + 1 + j``,
    so ``L = max_instance_id - instance_id_threshold`` (33000 for Cityscapes). Returns

    * ``instance_class``: the instance's class (its pixels' label; Cityscapes' instances have one
      class, the id encodes it), -1 for an id absent from the image;
    * ``instance_size``: its number of pixels ``n``;
    * ``instance_tp``: how many of them are predicted as its class (``n - tp`` are missed);
    * with ``categories`` (a category per class, e.g. ``CITYSCAPES_CATEGORY_OF_CLASS``)
      ``instance_category_tp``: how many are predicted as any class of its category.

    Args:
      predictions: ``[B, ...]`` integer class ids (out of range: never a hit).
      labels: ``[B, ...]`` integer labels (train ids).
      instances: ``[B, ...]`` integer instance ids (Cityscapes ``gtFine_instanceIds``).
      num_classes: ``C``.
      ignore_index: label of void pixels.
      mask: optional boolean mask of the labels' shape or of a prefix of it (e.g. ``[B]``).
      categories: optional category id per class.
      instance_id_threshold: ids above it are instances.
      max_instance_id: static bound on the ids (larger ids are not instances); Cityscapes' are at
        most ``CITYSCAPES_MAX_INSTANCE_ID`` = 33999.
    """
    name = "instance_counts"
    c = _check_num_classes(name, num_classes)
    predictions, labels, mask, ignore_index = _check_pair(name, predictions, labels, mask,
                                                          ignore_index)
    instances = _as_array(instances)
    require_dtype(name, "instances", instances, "integer", " of instance ids")
    if tuple(instances.shape) != tuple(labels.shape) or labels.ndim < 1:
        raise ValueError(f"{name}: instances shape {tuple(instances.shape)} must equal the labels "
                         f"shape {tuple(labels.shape)}, with a leading image axis")
    threshold, max_id = int(instance_id_threshold), int(max_instance_id)
    if max_id <= threshold:
        raise ValueError(f"{name}: max_instance_id {max_id} must exceed instance_id_threshold "
                         f"{threshold}")
    table = None if categories is None else _check_categories(name, categories, c)[0]
    return _instance_counts_core(predictions, labels, instances, mask, c=c,
                                 ignore_index=ignore_index, categories=table,
                                 threshold=threshold, max_id=max_id)


@functools.partial(jax.jit,
                   static_argnames=("c", "ignore_index", "categories", "threshold", "max_id"))
def _instance_counts_core(predictions: Any, labels: Any, instances: Any, mask: Any, c: int,
                          ignore_index: int, categories: tuple[int, ...] | None, threshold: int,
                          max_id: int) -> dict[str, Any]:
    bins = max_id - threshold
    predictions = jnp.asarray(predictions).astype(jnp.int32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    ids = jnp.asarray(instances).astype(jnp.int32)
    inside = jnp.ones(labels.shape, bool) if mask is None else jnp.broadcast_to(
        jnp.asarray(mask), labels.shape)
    counted = inside & valid_labels(labels, c, ignore_index)[0] & (ids > threshold) \
        & (ids <= max_id)
    index = jnp.where(counted, ids - (threshold + 1), bins).reshape(ids.shape[0], -1)
    pred_ok = (predictions >= 0) & (predictions < c)
    hit = (counted & pred_ok & (predictions == labels)).reshape(index.shape)
    flat_labels = labels.reshape(index.shape)

    # index == bins (not an instance pixel) is out of range: dropped, no update at all
    def per_image(index, hit, label):
        count = _bincount(index, bins)
        tp = _bincount(jnp.where(hit, index, bins), bins)
        cls = jnp.full((bins,), -1, jnp.int32).at[index].max(label, mode="drop")
        return count, tp, cls

    size, tp, cls = jax.vmap(per_image)(index, hit, flat_labels)
    out = {"instance_class": cls, "instance_size": size, "instance_tp": tp}
    if categories is not None:
        table = jnp.asarray(categories, jnp.int32)
        same = table[jnp.where(pred_ok, predictions, 0)] == table[jnp.where(counted, labels, 0)]
        category_hit = (counted & pred_ok & same).reshape(index.shape)
        out["instance_category_tp"] = jax.vmap(
            lambda i, h: _bincount(jnp.where(h, i, bins), bins))(index, category_hit)
    return out


def instance_weighted_sums(
    instance_class: Any,
    instance_size: Any,
    instance_tp: Any,
    mean_instance_size: Any,
    *,
    categories: Sequence[int] | None = None,
    num_categories: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance-weighted true positives and false negatives, float64 NumPy, on the host.

    The iIoU of Cordts et al. (CVPR 2016, Sec. 3.2) weights each pixel of a ground-truth instance
    ``i`` of class ``c`` by ``w_i = s_c / n_i``, the class's mean instance size over its size::

        iTP_c = sum_{i of class c} tp_i * w_i        iFN_c = sum_{i of class c} (n_i - tp_i) * w_i

    computed as cityscapesScripts does (``w = s_c / n`` in float64, then ``tp * w``), from the
    integer counts of :func:`instance_counts` (any shape, e.g. ``[B, L]``). With ``categories``
    the sums go to the category of each instance's class (``instance_tp`` then holds
    :func:`instance_counts`' ``instance_category_tp``), still with the class weight ``w_i``, as the
    official category iIoU does. Entries with class < 0, size 0 or ``s_c = 0`` (a class without
    instances) are skipped. Returns ``(iTP, iFN)``, each ``[C]`` (or ``[num_categories]``).
    """
    name = "instance_weighted_sums"
    arrays = [np.asarray(a) for a in (instance_class, instance_size, instance_tp)]
    for label, a in zip(("instance_class", "instance_size", "instance_tp"), arrays):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name}: {label} must be integer counts, got dtype {a.dtype}")
        if a.shape != arrays[0].shape:
            raise ValueError(f"{name}: {label} shape {a.shape} differs from instance_class "
                             f"shape {arrays[0].shape}")
    sizes = np.asarray(mean_instance_size, dtype=np.float64)
    if sizes.ndim != 1:
        raise ValueError(f"{name}: mean_instance_size must be a vector [C], got shape "
                         f"{sizes.shape}")
    c = sizes.shape[0]
    cls, n, tp = (a.reshape(-1).astype(np.int64) for a in arrays)
    keep = (cls >= 0) & (cls < c) & (n > 0)
    keep[keep] = sizes[cls[keep]] > 0
    cls, n, tp = cls[keep], n[keep], tp[keep]
    weight = sizes[cls] / n.astype(np.float64)
    target, length = cls, c
    if categories is not None:
        table, length = _check_categories(name, categories, c, num_categories)
        target = np.asarray(table, np.int64)[cls]
    itp = np.bincount(target, weights=tp * weight, minlength=length)
    ifn = np.bincount(target, weights=(n - tp) * weight, minlength=length)
    return itp, ifn


def _check_categories(name: str, categories: Sequence[int], c: int,
                      num_categories: int | None = None) -> tuple[tuple[int, ...], int]:
    """(category per class as a tuple, number of categories); ValueError when malformed."""
    table = np.asarray(categories)
    if table.shape != (c,) or not np.issubdtype(table.dtype, np.integer) or np.any(table < 0):
        raise ValueError(f"{name}: categories must give a category id >= 0 for each of the {c} "
                         f"classes, got {table.tolist()}")
    k = int(table.max()) + 1 if num_categories is None else int(num_categories)
    if np.any(table >= k):
        raise ValueError(f"{name}: category ids {table.tolist()} exceed num_categories {k}")
    return tuple(int(g) for g in table), k


def instance_iou(itp: Any, ifn: Any, cm: Any, instance_classes: Any) -> Any:
    """Instance-weighted IoU ``iTP / (iTP + FP + iFN)`` per class (Cordts et al., Sec. 3.2).

    ``FP_c`` is not weighted (a false positive belongs to no instance): the pixels of any other
    (non-void) class predicted as ``c``, from the confusion matrix ``cm`` (the merged one for
    categories). NaN for classes that are not instance classes (``instance_classes`` False) and
    where the denominator is 0. NumPy or JAX.
    """
    cm = _check_confusion("instance_iou", cm)
    xp = _xp(cm)
    cmf = _float(xp, cm)
    fp = xp.sum(cmf, axis=-2) - xp.diagonal(cmf, axis1=-2, axis2=-1)
    itp, ifn = _float(xp, xp.asarray(itp)), _float(xp, xp.asarray(ifn))
    value = _safe_ratio(xp, itp, itp + fp + ifn)
    return xp.where(xp.asarray(instance_classes, dtype=bool), value, xp.nan)


def _category_instance_mask(instance_classes: np.ndarray, categories: np.ndarray,
                            k: int) -> np.ndarray:
    """A category has an iIoU when all its classes have instances (cityscapesScripts)."""
    out = np.zeros(k, dtype=bool)
    for g in range(k):
        members = categories == g
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
    categories: Sequence[int] | None = None,
    instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
    max_instance_id: int = CITYSCAPES_MAX_INSTANCE_ID,
) -> dict[str, jax.Array]:
    """The additive statistics of one batch, all integer but the two IoU sums, jittable.

    Returns ``confusion`` (int32 ``[C, C]``), ``image_iou_sum`` (float32, the sum of the per-image
    mIoUs of the images with a counted pixel), ``image_count`` (int32, their number),
    ``image_class_iou_sum`` (float32 ``[C]``, the sum over images of each class's per-image IoU
    where it is defined: the class is in the image's ground truth or prediction) and
    ``image_class_count`` (int32 ``[C]``, the number of those images); with
    ``instances`` also the int32 ``[B, L]`` counts of :func:`instance_counts` (``instance_class``,
    ``instance_size``, ``instance_tp``, and ``instance_category_tp`` with ``categories``), which
    :class:`MetricAccumulator` weights in float64 on the host. ``mask`` (e.g. the ``[B]`` example
    mask of a padded evaluation batch) excludes filler examples from everything.
    """
    cm = confusion_matrix(predictions, labels, num_classes, ignore_index=ignore_index, mask=mask)
    image_iou = per_image_iou(predictions, labels, num_classes, ignore_index=ignore_index,
                              mask=mask)
    image_miou = _nanmean(jnp, image_iou)
    has_pixels = ~jnp.isnan(image_miou)
    has_class = ~jnp.isnan(image_iou)
    stats = {
        "confusion": cm,
        "image_iou_sum": jnp.sum(jnp.where(has_pixels, image_miou, 0.0)),
        "image_count": jnp.sum(has_pixels, dtype=jnp.int32),
        "image_class_iou_sum": jnp.sum(jnp.where(has_class, image_iou, 0.0), axis=0),
        "image_class_count": jnp.sum(has_class, axis=0, dtype=jnp.int32),
    }
    if instances is not None:
        stats.update(instance_counts(predictions, labels, instances, num_classes,
                                     ignore_index=ignore_index, mask=mask, categories=categories,
                                     instance_id_threshold=instance_id_threshold,
                                     max_instance_id=max_instance_id))
    return stats


class MetricAccumulator:
    """Sums :func:`batch_statistics` over an evaluation set on the host, and scores the sums.

    The confusion matrix is summed in int64, the per-image mIoUs in float64, and the
    instance-weighted ``iTP`` / ``iFN`` in float64 from per-instance integer counts
    (:func:`instance_weighted_sums`): Cityscapes' class and category IoU and iIoU (Cordts et al.,
    CVPR 2016, Sec. 3.2) equal cityscapesScripts' up to float64 rounding.

    Usage::

        acc = MetricAccumulator.cityscapes()       # or MetricAccumulator(21, class_names=names)
        for batch in eval_iterator:
            preds = predict(params, batch)         # int [b, H, W]
            acc.update(preds, batch["label"], mask=batch["example_mask"],
                       instances=batch["instance"])
        print(acc.table())                         # per class (and category) IoU, iIoU
        summary = acc.summary()                    # for a JSON file or a metric logger

    A jitted (sharded) evaluation step calls :meth:`statistics` inside its own jit (a pure function
    of the accumulator's fixed settings) and passes what it returns to :meth:`add`; :meth:`update`
    does both. :meth:`cityscapes` makes one with Cityscapes' names, categories and the official
    mean instance sizes.

    Args:
      num_classes: ``C``.
      ignore_index: label of void pixels.
      class_names: ``C`` names for :meth:`summary` and :meth:`table` (default ``"0"``, ``"1"``...).
      mean_instance_size: ``[C]`` mean instance size of each class in pixels, 0 for classes
        without instances; needed for statistics with instances (iIoU).
      categories: a category id per class (Cityscapes' categories): category IoU, and category
        iIoU for the categories whose classes all have instances.
      category_names: names of the categories (their number is ``num_categories``).
      instance_id_threshold, max_instance_id: as in :func:`instance_counts`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        mean_instance_size: Any = None,
        categories: Sequence[int] | None = None,
        category_names: Sequence[str] | None = None,
        instance_id_threshold: int = _INSTANCE_ID_THRESHOLD,
        max_instance_id: int = CITYSCAPES_MAX_INSTANCE_ID,
    ):
        name = "MetricAccumulator"
        self.num_classes = _check_num_classes(name, num_classes)
        self.ignore_index = static_int(name, "ignore_index", ignore_index)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{name}: {len(class_names)} class names for {self.num_classes} "
                             f"classes")
        self.class_names = tuple(class_names or (str(c) for c in range(self.num_classes)))
        self.mean_instance_size = None
        if mean_instance_size is not None:
            sizes = np.asarray(mean_instance_size, dtype=np.float64)
            if sizes.shape != (self.num_classes,) or not np.all(np.isfinite(sizes)) \
                    or np.any(sizes < 0):
                raise ValueError(f"{name}: mean_instance_size must be finite, >= 0 and of shape "
                                 f"({self.num_classes},), got {sizes.tolist()}")
            self.mean_instance_size = sizes
        self.categories, self.num_categories, self.category_names = None, 0, None
        if categories is not None:
            self.categories, self.num_categories = _check_categories(
                name, categories, self.num_classes,
                None if category_names is None else len(category_names))
            self.category_names = tuple(category_names or (
                str(g) for g in range(self.num_categories)))
        self.instance_id_threshold = int(instance_id_threshold)
        self.max_instance_id = int(max_instance_id)
        self._jitted_statistics = jax.jit(self.statistics)
        self.reset()

    @classmethod
    def cityscapes(cls, **kwargs: Any) -> "MetricAccumulator":
        """An accumulator for the 19 Cityscapes train ids with categories and iIoU."""
        kwargs.setdefault("class_names", CITYSCAPES_CLASS_NAMES)
        kwargs.setdefault("mean_instance_size", CITYSCAPES_MEAN_INSTANCE_SIZE)
        kwargs.setdefault("categories", CITYSCAPES_CATEGORY_OF_CLASS)
        kwargs.setdefault("category_names", CITYSCAPES_CATEGORY_NAMES)
        kwargs.setdefault("max_instance_id", CITYSCAPES_MAX_INSTANCE_ID)
        return cls(len(CITYSCAPES_CLASS_NAMES), **kwargs)

    @property
    def scores_instances(self) -> bool:
        """Whether statistics with instances are wanted (a ``mean_instance_size`` was given)."""
        return self.mean_instance_size is not None

    def reset(self) -> None:
        """Forgets everything accumulated so far."""
        c, k = self.num_classes, self.num_categories
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.image_iou_sum = 0.0
        self.image_count = 0
        self.image_class_iou_sum = np.zeros(c, dtype=np.float64)
        self.image_class_count = np.zeros(c, dtype=np.int64)
        self.instance_tp = np.zeros(c, dtype=np.float64)
        self.instance_fn = np.zeros(c, dtype=np.float64)
        self.category_instance_tp = np.zeros(k, dtype=np.float64)
        self.category_instance_fn = np.zeros(k, dtype=np.float64)
        self.has_instances = False

    def statistics(self, predictions: Any, labels: Any, *, mask: Any = None,
                   instances: Any = None) -> dict[str, jax.Array]:
        """:func:`batch_statistics` with this accumulator's settings (pure, jittable)."""
        if instances is not None and not self.scores_instances:
            raise ValueError("MetricAccumulator: instances given but the accumulator has no "
                             "mean_instance_size")
        return batch_statistics(predictions, labels, self.num_classes,
                                ignore_index=self.ignore_index, mask=mask, instances=instances,
                                categories=self.categories,
                                instance_id_threshold=self.instance_id_threshold,
                                max_instance_id=self.max_instance_id)

    def update(self, predictions: Any, labels: Any, *, mask: Any = None,
               instances: Any = None) -> dict[str, np.ndarray]:
        """Computes the statistics of one batch (jitted) and adds them; returns them."""
        stats = jax.device_get(self._jitted_statistics(predictions, labels, mask=mask,
                                                       instances=instances))
        self.add(stats)
        return stats

    def add(self, stats: Mapping[str, Any]) -> None:
        """Adds statistics from :meth:`statistics` / :func:`batch_statistics` (host or device)."""
        stats = jax.device_get(dict(stats))
        cm = np.asarray(stats["confusion"], dtype=np.int64)
        if cm.shape != self.confusion.shape:
            raise ValueError(f"MetricAccumulator.add: confusion matrix of shape {cm.shape}, "
                             f"expected {self.confusion.shape}")
        if "instance_class" in stats:
            self._add_instances(stats)
        self.confusion += cm
        self.image_iou_sum += float(stats.get("image_iou_sum", 0.0))
        self.image_count += int(stats.get("image_count", 0))
        if "image_class_count" in stats:
            self.image_class_iou_sum += np.asarray(stats["image_class_iou_sum"], np.float64)
            self.image_class_count += np.asarray(stats["image_class_count"], np.int64)

    def _add_instances(self, stats: Mapping[str, Any]) -> None:
        if not self.scores_instances:
            raise ValueError("MetricAccumulator.add: statistics with instances, but the "
                             "accumulator has no mean_instance_size")
        if self.categories is not None and "instance_category_tp" not in stats:
            raise ValueError("MetricAccumulator.add: the statistics lack instance_category_tp "
                             "(batch_statistics without the accumulator's categories)")
        counts = (stats["instance_class"], stats["instance_size"])
        tp, fn = instance_weighted_sums(*counts, stats["instance_tp"], self.mean_instance_size)
        if self.categories is not None:
            ctp, cfn = instance_weighted_sums(*counts, stats["instance_category_tp"],
                                              self.mean_instance_size, categories=self.categories,
                                              num_categories=self.num_categories)
            self.category_instance_tp += ctp
            self.category_instance_fn += cfn
        self.instance_tp += tp
        self.instance_fn += fn
        self.has_instances = True

    def result(self) -> dict[str, Any]:
        """Every metric of the data seen so far, as NumPy arrays and floats (NaN where undefined,
        see the module docstring).

        Keys: ``miou`` (dataset mIoU), ``per_class_iou`` ``[C]``, ``pixel_accuracy``,
        ``mean_class_accuracy``, ``per_class_accuracy``, ``fw_iou``, ``image_miou`` (per-image
        mIoU), ``per_class_image_iou`` ``[C]`` (each class's IoU averaged over the images whose
        ground truth or prediction holds it: the binary "image-IoU" of Berman et al., CVPR 2018,
        Table 1, for the foreground class), ``num_images``, ``num_pixels``, ``majority_class_miou``
        (:func:`majority_class_miou`), ``confusion``; with categories ``per_category_iou`` and
        ``category_miou``; after statistics with instances ``per_class_iiou`` and ``iiou`` (mean
        over the instance classes), and with categories ``per_category_iiou`` and
        ``category_iiou``.
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
            "per_class_image_iou": np.divide(
                self.image_class_iou_sum, self.image_class_count,
                out=np.full(self.num_classes, np.nan), where=self.image_class_count > 0),
            "num_images": self.image_count,
            "num_pixels": int(cm.sum()),
            "majority_class_miou": float(majority_class_miou(cm)),
        }
        if self.categories is not None:
            category_cm = merge_confusion(cm, self.categories, self.num_categories)
            out["per_category_iou"] = iou_from_confusion(category_cm)
            out["category_miou"] = float(mean_iou(category_cm))
        if self.has_instances:
            instance_classes = self.mean_instance_size > 0
            per_class = instance_iou(self.instance_tp, self.instance_fn, cm, instance_classes)
            out["per_class_iiou"] = per_class
            out["iiou"] = float(_nanmean(np, per_class))
            if self.categories is not None:
                with_instances = _category_instance_mask(
                    instance_classes, np.asarray(self.categories), self.num_categories)
                per_category = instance_iou(self.category_instance_tp, self.category_instance_fn,
                                            category_cm, with_instances)
                out["per_category_iiou"] = per_category
                out["category_iiou"] = float(_nanmean(np, per_category))
        return out

    def summary(self) -> dict[str, Any]:
        """:meth:`result` for a JSON file or a metric logger: no NaN (``None`` instead), per-class
        and per-category values by name, the confusion matrix as nested lists.

        The scalars of :meth:`result`, ``majority_class`` (the name of the most frequent
        ground-truth class, ``None`` before any pixel), ``per_class_iou`` and
        ``per_class_accuracy`` (``{class: value}``), ``confusion_matrix``; with categories
        ``per_category_iou`` (``{category: IoU}``); with instances ``per_class_iiou`` (the classes
        with instances only) and ``per_category_iiou`` (the categories with an iIoU only).
        """
        res = self.result()
        out: dict[str, Any] = {k: _json_number(v) for k, v in res.items() if np.ndim(v) == 0}
        out["majority_class"] = self._majority_class()
        for key in ("per_class_iou", "per_class_accuracy", "per_class_image_iou",
                    "per_class_iiou"):
            if key in res:
                out[key] = _named(res[key], self.class_names, keep_nan=key != "per_class_iiou")
        for key in ("per_category_iou", "per_category_iiou"):
            if key in res:
                out[key] = _named(res[key], self.category_names,
                                  keep_nan=key != "per_category_iiou")
        out["confusion_matrix"] = self.confusion.tolist()
        return out

    def _majority_class(self) -> str | None:
        """Name of the class with the most ground-truth pixels; None before any pixel."""
        gt = self.confusion.sum(axis=1)
        return self.class_names[int(np.argmax(gt))] if gt.sum() else None

    def table(self, title: str | None = None) -> str:
        """The per-class table (IoU, and iIoU after statistics with instances), the per-category
        table with categories, then pixel accuracy and the majority-class baseline mIoU; each
        table's ``mean`` row is the mIoU (iIoU) over the defined entries, as cityscapesScripts'
        "Score Average"."""
        res = self.result()
        parts = [] if title is None else [title]
        parts.append(format_iou_table(res["per_class_iou"], self.class_names,
                                      instance_iou=res.get("per_class_iiou")))
        if self.categories is not None:
            parts.append(format_iou_table(res["per_category_iou"], self.category_names,
                                          instance_iou=res.get("per_category_iiou"),
                                          header="category"))
        majority = res["majority_class_miou"]
        baseline = ("n/a" if math.isnan(majority) else
                    f"{100 * majority:.2f}% (predicting '{self._majority_class()}' everywhere)")
        accuracy = ("n/a" if math.isnan(res["pixel_accuracy"])
                    else f"{100 * res['pixel_accuracy']:.2f}%")
        parts.append(f"pixel accuracy {accuracy}\nmajority-class baseline mIoU {baseline}")
        return "\n\n".join(parts)


def _json_number(value: Any) -> Any:
    """A Python float or int for JSON; ``None`` for NaN."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def _named(values: Any, names: Sequence[str], *, keep_nan: bool) -> dict[str, Any]:
    """``{name: value}``, NaN as ``None``, or left out when not ``keep_nan``."""
    return {str(n): _json_number(v) for n, v in zip(names, np.asarray(values, np.float64))
            if keep_nan or not np.isnan(v)}


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
