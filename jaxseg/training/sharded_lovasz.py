"""Batch-level Lovász-Softmax over a data-sharded batch, with the classes spread over devices.

The batch-level Lovász-Softmax (Berman et al., CVPR 2018, Sec. 3.2 and Alg. 1; SPEC.md Sec. 1)
sorts, for every class ``c``, the errors ``m_i(c) = |[y_i = c] - f_i(c)|`` of *all* pixels of
the *global* batch. Left to itself, XLA computes that on a batch sharded along ``'data'`` by
all-gathering every error onto every device and repeating the same ``C`` sorts of length
``B H W`` on each of them: ``D`` devices do the work of one, ``D`` times over.

:func:`lovasz_softmax_all_to_all` splits the work instead (``jax.shard_map`` over the mesh):

1. each device computes the errors of its own images, ``[C', P_local]`` (classes padded to
   ``C' = D ceil(C / D)`` with zero errors and no ground truth);
2. one ``all_to_all`` re-shards them from the pixel axis onto the class axis: device ``d`` receives
   the errors of classes ``d k ... d k + k - 1`` (``k = C' / D``) over the whole global batch,
   ``[k, D P_local]``, in global pixel order; the labels (``int32``, one per pixel) are
   all-gathered so each device builds its classes' ground truth and validity masks;
3. each device evaluates the Lovász extension of its ``k`` classes with the library's
   ``jaxseg.losses.lovasz.lovasz_extension`` (one sort per class, over the global batch);
4. the per-class losses and the count of selected classes are summed with ``psum``.

Every device sorts ``k = C / D`` classes instead of ``C``; the communication is one all-to-all of
the errors (each device sends and receives ``(D - 1) / D`` of its ``C' P_local`` floats) and one
all-gather of the labels. The result, and its gradient (JAX transposes the all-to-all), equal
those of the plain batch-level ``lovasz_softmax`` on the unsharded batch: same per-class values,
same mean over the selected classes, whatever ``D``.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from jaxseg.losses.lovasz import lovasz_extension
from jaxseg.training.mesh import DATA_AXIS

Classes = Union[str, Sequence[int]]


def _selection(class_ids: jax.Array, present: jax.Array, num_classes: int,
               classes: Classes) -> jax.Array:
  real = class_ids < num_classes
  if isinstance(classes, str):
    if classes == "present":
      return real & present
    if classes == "all":
      return real
    raise ValueError(f"classes must be 'present', 'all' or a sequence of class ids, got "
                     f"{classes!r}.")
  wanted = np.asarray(list(classes), np.int32)
  if wanted.size and (wanted.min() < 0 or wanted.max() >= num_classes):
    raise ValueError(f"class ids {wanted.tolist()} out of range [0, {num_classes}).")
  return real & jnp.isin(class_ids, jnp.asarray(wanted))


def lovasz_softmax_all_to_all(logits: jax.Array, labels: jax.Array, *, mesh: Mesh,
                              axis_name: str = DATA_AXIS, ignore_index: int = 255,
                              classes: Classes = "present") -> jax.Array:
  """Batch-level Lovász-Softmax of ``logits [B, H, W, C]`` against ``labels [B, H, W]``.

  Same value and gradient as the plain batch-level ``lovasz_softmax`` (``per_image=False``):
  ``mean_{c in selected} lovasz_extension(m(c), [y = c], valid = [y != ignore])`` with the
  probabilities ``f = softmax(logits)`` and errors ``m_i(c) = |[y_i = c] - f_i(c)|``; the mean
  is over the classes present in the global batch (``classes='present'``), all classes
  (``'all'``) or the listed ids; 0 with zero gradient when none is selected. The batch must be
  (or will be) sharded along ``axis_name`` of ``mesh``; ``B`` must be divisible by its size.
  """
  if logits.ndim != 4:
    raise ValueError(f"logits must be [B, H, W, C], got shape {logits.shape}.")
  if labels.shape != logits.shape[:3]:
    raise ValueError(f"labels must be [B, H, W] = {logits.shape[:3]}, got {labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
  n_dev = mesh.shape[axis_name]
  batch, _, _, num_classes = logits.shape
  if batch % n_dev:
    raise ValueError(f"batch size {batch} is not divisible by the {n_dev} devices of mesh axis "
                     f"{axis_name!r}.")
  per_dev = -(-num_classes // n_dev)
  padded = per_dev * n_dev

  def local(logits_l, labels_l):
    probs = jax.nn.softmax(logits_l.astype(jnp.float32), axis=-1)
    probs = probs.reshape(-1, num_classes)                         # [p, C]
    lab = labels_l.reshape(-1).astype(jnp.int32)                   # [p]
    valid = lab != ignore_index
    onehot = lab[:, None] == jnp.arange(num_classes, dtype=jnp.int32)
    errors = jnp.abs(onehot.astype(jnp.float32) - probs)
    errors = jnp.where(valid[:, None], errors, 0.0)
    errors = jnp.pad(errors.T, ((0, padded - num_classes), (0, 0)))  # [C', p]
    # Pixels -> classes: device d gets classes [d k, (d + 1) k) over all pixels, in global
    # (device-major) pixel order.
    errors = lax.all_to_all(errors, axis_name, split_axis=0, concat_axis=1, tiled=True)
    all_labels = lax.all_gather(lab, axis_name, tiled=True)        # [D p]
    first = lax.axis_index(axis_name) * per_dev
    class_ids = first + jnp.arange(per_dev, dtype=jnp.int32)       # [k]
    all_valid = all_labels != ignore_index
    gt = all_labels[None, :] == class_ids[:, None]                 # [k, D p]
    values = lovasz_extension(errors, gt, valid=jnp.broadcast_to(all_valid, gt.shape))
    present = jnp.any(gt & all_valid[None, :], axis=1)
    selected = _selection(class_ids, present, num_classes, classes)
    total = lax.psum(jnp.sum(jnp.where(selected, values, 0.0)), axis_name)
    count = lax.psum(jnp.sum(selected.astype(jnp.float32)), axis_name)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(axis_name), P(axis_name)),
                       out_specs=P())(logits, labels)
