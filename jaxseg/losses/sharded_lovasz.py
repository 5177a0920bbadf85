"""Batch-level Lovász-Softmax over a data-sharded batch, with the classes spread over devices.

The batch-level Lovász-Softmax (Berman et al., CVPR 2018, Eq. 13 (Sec. 2.2) averaged over the
classes present in the batch (Sec. 3.1), gradient by Algorithm 1 (Sec. 3))
sorts, for every class ``c``, the errors ``m_i(c) = |[y_i = c] - f_i(c)|`` of *all* pixels of
the *global* batch. Left to itself, XLA computes that on a batch sharded along ``'data'`` by
all-gathering every error onto every device and repeating the same ``C`` sorts of length
``B H W`` on each of them: ``D`` devices do the work of one, ``D`` times over.

:func:`lovasz_softmax_all_to_all` splits the work instead (``jax.shard_map`` over the mesh):

1. each device computes the probabilities of its own images, class-major ``[C', P_local]``
   (classes padded to ``C' = D ceil(C / D)``; padding classes are never selected);
2. one ``all_to_all`` re-shards them from the pixel axis onto the class axis: device ``d``
   receives classes ``d k ... d k + k - 1`` (``k = C' / D``) over the whole global batch,
   ``[k, D P_local]``, in global pixel order; the labels (``int32``, one per pixel) are
   all-gathered so each device builds its classes' errors and ground truth on the fly;
3. each device evaluates its ``k`` classes with the library's
   ``jaxseg.losses.lovasz.lovasz_softmax_class_losses`` (one sort per selected class over the
   global batch; an unselected class costs nothing, an absent one under "all" a ``max``);
4. the per-class losses, weighted by the selection (times ``class_weights[c]`` when given), and
   the weights are summed with ``psum``: the loss is ``psum(Σ w L) / psum(Σ w)``.

Every device sorts ``k = C / D`` classes instead of ``C``; the communication is one all-to-all of
the probabilities (each device sends and receives ``(D - 1) / D`` of its ``C' P_local`` floats) and one
all-gather of the labels. The result, and its gradient (JAX transposes the all-to-all), equal
those of the plain batch-level ``lovasz_softmax`` on the unsharded batch: same per-class values,
same (weighted) mean over the selected classes, whatever ``D``.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from jaxseg._validation import check_logits_labels, empty_loss, is_empty, valid_labels, zero_void
from jaxseg.losses.extension import compute_dtype
from jaxseg.losses.lovasz import lovasz_softmax_class_losses

Classes = Union[str, Sequence[int]]


def lovasz_softmax_all_to_all(logits: jax.Array, labels: jax.Array, *, mesh: Mesh,
                              axis_name: str = "data", ignore_index: int = 255,
                              classes: Classes = "present", class_weights=None,
                              sort: str = "auto") -> jax.Array:
  """Batch-level Lovász-Softmax of ``logits [B, H, W, C]`` against ``labels [B, H, W]``.

  Same value and gradient as the plain batch-level ``lovasz_softmax`` (``per_image=False``):
  ``Σ_{c in selected} w_c L_c / Σ_{c in selected} w_c`` with
  ``L_c = lovasz_extension(m(c), [y = c], valid = [y != ignore])``, the probabilities
  ``f = softmax(logits)`` and errors ``m_i(c) = |[y_i = c] - f_i(c)|``; the selected classes are
  those present in the global batch (``classes='present'``), all classes (``'all'``) or the
  listed ids; ``w_c`` is ``class_weights[c]`` (optional ``[C]`` non-negative weights, no
  gradient) or 1. 0 with zero gradient when no class is selected (or their weights sum to 0).
  The batch must be (or will be) sharded along ``axis_name`` of ``mesh``; ``B`` must be
  divisible by its size. ``sort`` is the sort formulation of ``jaxseg.losses.lovasz_softmax``.
  The value has dtype ``promote_types(logits.dtype, float32)``.
  """
  logits, labels, ignore_index = check_logits_labels(
      "lovasz_softmax_all_to_all", logits, labels, ignore_index=ignore_index)
  n_dev = mesh.shape[axis_name]
  batch, _, _, num_classes = logits.shape
  if batch % n_dev:
    raise ValueError(f"lovasz_softmax_all_to_all: batch size {batch} is not divisible by the "
                     f"{n_dev} devices of mesh axis "
                     f"{axis_name!r}.")
  if class_weights is not None:
    class_weights = lax.stop_gradient(jnp.asarray(class_weights, compute_dtype(logits.dtype)))
    if class_weights.shape != (num_classes,):
      raise ValueError(f"lovasz_softmax_all_to_all: class_weights must have shape "
                       f"({num_classes},), got {class_weights.shape}.")
  if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
    return empty_loss(logits)
  per_dev = -(-num_classes // n_dev)
  padded = per_dev * n_dev

  def local(logits_l, labels_l, *weights_l):
    # 0 at void pixels: a NaN there reaches neither the value nor the gradient
    scores = zero_void(logits_l.astype(compute_dtype(logits_l.dtype)),
                       valid_labels(labels_l, num_classes, ignore_index)[0])
    probs = jax.nn.softmax(scores, axis=-1)
    probs = probs.reshape(-1, num_classes)                         # [p, C]
    lab = labels_l.reshape(-1).astype(jnp.int32)                   # [p]
    rows = jnp.pad(probs.T, ((0, padded - num_classes), (0, 0)))    # [C', p]
    # Pixels -> classes: device d gets classes [d k, (d + 1) k) over all pixels, in global
    # (device-major) pixel order.
    rows = lax.all_to_all(rows, axis_name, split_axis=0, concat_axis=1, tiled=True)
    all_labels = lax.all_gather(lab, axis_name, tiled=True)        # [D p]
    class_ids = lax.axis_index(axis_name) * per_dev + jnp.arange(per_dev, dtype=jnp.int32)
    values, weights = lovasz_softmax_class_losses(
        rows, all_labels[None], class_ids, num_classes=num_classes, classes=classes,
        ignore_index=ignore_index, class_weights=weights_l[0] if weights_l else None, sort=sort)
    total = lax.psum(jnp.sum(weights * values), axis_name)
    count = lax.psum(jnp.sum(weights), axis_name)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)

  operands, specs = (logits, labels), (P(axis_name), P(axis_name))
  if class_weights is not None:  # replicated: every device needs the weights of its classes
    operands, specs = operands + (class_weights,), specs + (P(),)
  return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())(*operands)
