"""The jitted train step: model apply, loss, gradient, optax update, under explicit shardings.

``make_train_step`` returns ``jax.jit(train_step)`` with ``in_shardings=(replicated,
P('data'))`` and ``out_shardings=(replicated, replicated)``: the state (parameters, BatchNorm
statistics, optimiser state, key) is replicated over the ``'data'`` mesh axis and the batch is
split along it. Every reduction in the step (the loss over the batch, the BatchNorm moments, the
gradient) is over the global batch, so the step does not depend on the number of devices; XLA
inserts the cross-device reductions.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxseg import sharding
from jaxseg.training.state import TrainState


def resize_labels_nearest(labels: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resampling of ``labels [B, H, W]`` to ``size = (h, w)``, corners aligned.

  Output pixel ``i`` reads input row ``round(i (H - 1) / (h - 1))``: the label "shrink" of
  DeepLab-v2 (321 -> 41 reads every 8th pixel exactly), used when the loss is computed at the
  feature stride as in the original recipe.
  """
  _, in_h, in_w = labels.shape
  h, w = size

  def idx(n_in, n_out):
    if n_out == 1:
      return jnp.zeros((1,), jnp.int32)
    return jnp.round(jnp.arange(n_out) * ((n_in - 1) / (n_out - 1))).astype(jnp.int32)

  return labels[:, idx(in_h, h)][:, :, idx(in_w, w)]


def shrink_labels(labels: jax.Array, size: tuple[int, int],
                  stride: Optional[int] = None) -> jax.Array:
  """Labels at the logits' resolution: ``labels[:, ::stride, ::stride]`` when the model states its
  ``feature_stride`` (the models' convention for ``logits_stride=True``: ``ceil(H / s)`` rows),
  else :func:`resize_labels_nearest`."""
  if stride:
    out = labels[:, ::stride, ::stride]
    if out.shape[1:3] != tuple(size):
      raise ValueError(f"labels {labels.shape} at stride {stride} give {out.shape[1:3]}, but the "
                       f"logits are {tuple(size)}.")
    return out
  return resize_labels_nearest(labels, size)


def forward_train(state: TrainState, params: Any, images: jax.Array, rng: jax.Array, *,
                  freeze_batch_stats: bool) -> tuple[Any, Any]:
  """Training forward pass; returns ``(logits, new_batch_stats)`` (``logits`` a dict
  ``{"out", "aux"}`` for a model with an auxiliary head)."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  if freeze_batch_stats or not state.batch_stats:
    logits = state.apply_fn(variables, images, train=not freeze_batch_stats,
                            rngs={"dropout": rng})
    return logits, state.batch_stats
  logits, updates = state.apply_fn(variables, images, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": rng})
  return logits, updates["batch_stats"]


def predict_labels(logits: jax.Array) -> jax.Array:
  """Predicted labels ``int32 [B, H, W]`` of ``logits [B, H, W, C]``: the arg-max over classes,
  or for a one-logit (binary) model ``logits[..., 0] > 0`` (1 = foreground)."""
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, -1).astype(jnp.int32)


def train_step(state: TrainState, batch: dict, *, loss_fn: Callable[[jax.Array, jax.Array],
                                                                     jax.Array],
               learning_rate_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
               freeze_batch_stats: bool = False, ignore_index: int = 255,
               label_stride: Optional[int] = None,
               aux_loss_weight: float = 0.0) -> tuple[TrainState, dict]:
  """One optimiser update on the global ``batch`` (``image [B,H,W,3]``, ``label [B,H,W]``).

  The loss sees float32 logits; when the model returns logits at a stride (``logits_stride``
  option) the labels are shrunk to their size with :func:`shrink_labels` (``label_stride``:
  the model's ``feature_stride``), as DeepLab-v2 computes its loss at stride 8. A model with an
  auxiliary head returns ``{"out", "aux"}`` in training: the loss is then
  ``loss_fn(out) + aux_loss_weight * loss_fn(aux)`` (torchvision's recipe, weight 0.5; both at
  the input size), and ``aux_loss`` is logged. Returns the new
  state and scalar metrics: ``loss``, ``accuracy`` (valid pixels at the loss resolution, the
  prediction from :func:`predict_labels`),
  ``grad_norm``, ``learning_rate``, ``param_norm``.
  """
  images, labels = batch["image"], batch["label"].astype(jnp.int32)
  step_rng = jax.random.fold_in(state.rng, state.step)

  def labelled_loss(logits):
    logits = logits.astype(jnp.float32)
    lab = labels
    if logits.shape[1:3] != lab.shape[1:3]:
      lab = shrink_labels(lab, logits.shape[1:3], label_stride)
    return loss_fn(logits, lab), logits, lab

  def compute_loss(params):
    out, new_stats = forward_train(state, params, images, step_rng,
                                   freeze_batch_stats=freeze_batch_stats)
    aux = out["aux"] if isinstance(out, dict) else None
    loss, logits, lab = labelled_loss(out["out"] if isinstance(out, dict) else out)
    extra = {}
    if aux is not None:
      extra["aux_loss"] = labelled_loss(aux)[0]
      loss = loss + aux_loss_weight * extra["aux_loss"]
    return loss, (logits, lab, new_stats, extra)

  (loss, (logits, lab, new_stats, extra)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, batch_stats=new_stats)

  # Void: ignore_index and any label outside the classes, as in every loss and metric.
  valid = (lab != ignore_index) & (lab >= 0) & (lab < max(logits.shape[-1], 2))
  correct = (predict_labels(logits) == lab) & valid
  metrics = {
      "loss": loss.astype(jnp.float32),
      "accuracy": jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1),
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(new_state.params),
      **{k: v.astype(jnp.float32) for k, v in extra.items()},
  }
  if learning_rate_fn is not None:
    metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  return new_state, metrics


def make_train_step(mesh: Mesh, *, loss_fn, learning_rate_fn=None, freeze_batch_stats=False,
                    ignore_index: int = 255, label_stride: Optional[int] = None,
                    aux_loss_weight: float = 0.0, donate: bool = True):
  """``jax.jit`` of :func:`train_step` with the state replicated and the batch on ``'data'``."""
  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)

  def step(state, batch):
    return train_step(state, batch, loss_fn=loss_fn, learning_rate_fn=learning_rate_fn,
                      freeze_batch_stats=freeze_batch_stats, ignore_index=ignore_index,
                      label_stride=label_stride, aux_loss_weight=aux_loss_weight)

  return jax.jit(step, in_shardings=(rep, dat), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())
