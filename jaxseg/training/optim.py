"""Optimisers and learning-rate schedules (optax), as in the papers' recipes.

* ``sgd``: SGD with (heavy-ball or Nesterov) momentum, ``v <- mu v + g``, ``w <- w - lr v``, as in
  Caffe / DeepLab-v2 (Lovász-Softmax paper, Sec. 4: momentum 0.9, weight decay 5e-4).
* ``adam`` (ENet fine-tuning on Cityscapes, Sec. 4) and ``adamw``.
* **L2 weight decay** "as in the papers": the decay ``wd * w`` is *added to the gradient* before
  the optimiser (``optax.add_decayed_weights`` first in the chain), which is what Caffe's and
  PyTorch's ``weight_decay`` do for SGD and Adam; only ``adamw`` uses decoupled decay.
  By default it applies to every parameter with ``ndim > 1`` (kernels, not biases or
  BatchNorm scales), Caffe's ``decay_mult: 0`` for biases; ``weight_decay_on="all"`` decays
  everything.
* **Schedules**: ``poly`` ``lr_k = base (1 - k / K)^power`` (DeepLab's "poly", power 0.9),
  ``cosine`` ``lr_k = end + (base - end) (1 + cos(pi k / K)) / 2``, ``constant``, and
  ``piecewise`` (``boundaries`` / ``learning_rates``: e.g. 5e-4 then 1e-4 after one epoch), each
  with an optional linear warmup from 0 over ``warmup_steps`` (clamped to the run: a warmup not
  shorter than the run ends at its last step). ``K`` is ``config.num_train_steps``.
* **Per-parameter-group learning-rate multipliers**: ``param_groups`` is a list of
  ``{"pattern": regex, "lr_mult": float}``; a parameter takes the multiplier of the first pattern
  that matches its path (``"backbone/layer1/conv/kernel"``), 1 otherwise. The update of that
  parameter is scaled by the multiplier, which for SGD with momentum and for Adam is exactly a
  learning rate ``lr * lr_mult`` for that group (the updates are linear in the learning rate):
  the "10x learning rate on the new classifier" of DeepLab; ``lr_mult = 0`` freezes a group.
* **Gradient clipping** by global norm (``clip_grad_norm``), first in the chain.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "cosine", "piecewise")


def _get(cfg: Any, name: str, default: Any = None) -> Any:
  if cfg is None:
    return default
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def effective_warmup_steps(schedule_config: Any, num_train_steps: int) -> int:
  """The warmup the schedule of ``schedule_config`` uses in a run of ``num_train_steps`` steps.

  ``warmup_steps`` as given when it is shorter than the run; otherwise clamped to
  ``num_train_steps - 1`` (the learning rate reaches ``base_lr`` at the last step), so that a
  short run of a config with a warmup (a smoke test) works. Callers can compare it with the
  configured value to say so. Raises ``ValueError`` for a negative warmup or a non-positive
  ``num_train_steps``.
  """
  total = int(num_train_steps)
  if total <= 0:
    raise ValueError(f"num_train_steps must be positive, got {total}.")
  warmup = int(_get(schedule_config, "warmup_steps", 0) or 0)
  if warmup < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup}.")
  return min(warmup, total - 1)


def create_learning_rate_schedule(schedule_config: Any, num_train_steps: int,
                                  steps_per_epoch: int = -1) -> optax.Schedule:
  """Builds the learning-rate schedule ``step -> lr`` described by ``schedule_config``.

  Fields: ``name`` (one of ``SCHEDULES``), ``base_lr``, ``warmup_steps`` (linear ramp from 0;
  clamped to ``num_train_steps - 1`` when not shorter than the run, :func:`effective_warmup_steps`),
  ``power`` (poly, default 0.9), ``end_lr`` (poly / cosine floor, default 0), and for
  ``piecewise`` ``boundaries`` (steps) or ``boundaries_epochs`` (epochs, times
  ``steps_per_epoch``) and ``learning_rates`` (``len(boundaries) + 1`` values).
  """
  name = _get(schedule_config, "name", "constant")
  if name not in SCHEDULES:
    raise ValueError(f"Unknown learning-rate schedule {name!r} (config.schedule.name); "
                     f"choose one of {SCHEDULES}.")
  base_lr = float(_get(schedule_config, "base_lr", 0.0))
  warmup = effective_warmup_steps(schedule_config, num_train_steps)
  end_lr = float(_get(schedule_config, "end_lr", 0.0) or 0.0)
  total = int(num_train_steps)
  decay_steps = max(total - warmup, 1)

  if name == "constant":
    main = optax.constant_schedule(base_lr)
  elif name == "poly":
    power = float(_get(schedule_config, "power", 0.9))

    def main(step):
      frac = jnp.clip(step / decay_steps, 0.0, 1.0)
      return end_lr + (base_lr - end_lr) * (1.0 - frac) ** power
  elif name == "cosine":

    def main(step):
      frac = jnp.clip(step / decay_steps, 0.0, 1.0)
      return end_lr + (base_lr - end_lr) * 0.5 * (1.0 + jnp.cos(math.pi * frac))
  else:  # piecewise
    boundaries = [int(b) for b in _get(schedule_config, "boundaries", ()) or ()]
    epochs = [float(e) for e in _get(schedule_config, "boundaries_epochs", ()) or ()]
    if epochs:
      if boundaries:
        raise ValueError("give the piecewise schedule boundaries or boundaries_epochs, not both.")
      if steps_per_epoch <= 0:
        raise ValueError("schedule.boundaries_epochs needs config.steps_per_epoch > 0.")
      boundaries = [int(round(e * steps_per_epoch)) for e in epochs]
    values = [float(v) for v in _get(schedule_config, "learning_rates", ()) or ()]
    if len(values) != len(boundaries) + 1:
      raise ValueError(f"piecewise schedule needs len(learning_rates) == len(boundaries) + 1, got "
                       f"boundaries={boundaries}, learning_rates={values}.")
    if sorted(boundaries) != boundaries:
      raise ValueError(f"piecewise schedule boundaries must increase, got {boundaries}.")

    def main(step):
      lr = jnp.asarray(values[0], jnp.float32)
      for b, v in zip(boundaries, values[1:]):
        lr = jnp.where(step >= b, v, lr)
      return lr

  if warmup <= 0:
    return lambda step: jnp.asarray(main(step), jnp.float32)

  def schedule(step):
    warm = base_lr * jnp.minimum(step, warmup) / warmup
    return jnp.asarray(jnp.where(step < warmup, warm, main(step - warmup)), jnp.float32)

  return schedule


def path_to_str(path: Sequence[Any]) -> str:
  """``('params', 'head', 'kernel')`` key path -> ``'params/head/kernel'``."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def lr_multipliers(params: Any, param_groups: Sequence[Any] | None) -> Any:
  """Pytree of floats (same structure as ``params``): each leaf's learning-rate multiplier."""
  groups = []
  for g in param_groups or ():
    pattern = _get(g, "pattern")
    if pattern is None:
      raise ValueError(f"Each entry of optim.param_groups needs a 'pattern' (regex), got {g}.")
    groups.append((re.compile(pattern), float(_get(g, "lr_mult", 1.0))))

  def mult(path, _):
    name = path_to_str(path)
    for regex, m in groups:
      if regex.search(name):
        return m
    return 1.0

  return jax.tree_util.tree_map_with_path(mult, params)


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update leaf by its (static, Python float) multiplier."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree.map(lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype),
                           updates, multipliers)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def weight_decay_mask(params: Any, on: str = "kernels") -> Any:
  """``True`` for the leaves that weight decay applies to (``'kernels'``: ndim > 1; ``'all'``)."""
  if on == "all":
    return jax.tree.map(lambda _: True, params)
  if on == "kernels":
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)
  raise ValueError(f"optim.weight_decay_on must be 'kernels' or 'all', got {on!r}.")


def create_optimizer(optim_config: Any, schedule: optax.Schedule,
                     params: Any) -> optax.GradientTransformation:
  """The optax chain of ``optim_config`` (see the module docstring) for ``params``.

  Fields: ``name`` (``OPTIMIZERS``), ``momentum`` (sgd, default 0.9), ``nesterov``, ``b1``, ``b2``,
  ``eps`` (adam), ``weight_decay``, ``weight_decay_on``, ``param_groups``, ``clip_grad_norm``.
  """
  name = _get(optim_config, "name", "sgd")
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r} (config.optim.name); choose one of "
                     f"{OPTIMIZERS}.")
  wd = float(_get(optim_config, "weight_decay", 0.0) or 0.0)
  mask = weight_decay_mask(params, _get(optim_config, "weight_decay_on", "kernels"))
  chain = []
  clip = _get(optim_config, "clip_grad_norm", None)
  if clip:
    chain.append(optax.clip_by_global_norm(float(clip)))
  if name == "sgd":
    if wd:
      chain.append(optax.add_decayed_weights(wd, mask))
    momentum = float(_get(optim_config, "momentum", 0.9) or 0.0)
    chain.append(optax.sgd(schedule, momentum=momentum or None,
                           nesterov=bool(_get(optim_config, "nesterov", False))))
  elif name == "adam":
    if wd:
      chain.append(optax.add_decayed_weights(wd, mask))
    chain.append(optax.adam(schedule, b1=float(_get(optim_config, "b1", 0.9)),
                            b2=float(_get(optim_config, "b2", 0.999)),
                            eps=float(_get(optim_config, "eps", 1e-8))))
  else:
    chain.append(optax.adamw(schedule, b1=float(_get(optim_config, "b1", 0.9)),
                             b2=float(_get(optim_config, "b2", 0.999)),
                             eps=float(_get(optim_config, "eps", 1e-8)), weight_decay=wd,
                             mask=mask))
  groups = _get(optim_config, "param_groups", None)
  if groups:
    chain.append(scale_by_multipliers(lr_multipliers(params, groups)))
  return optax.chain(*chain)
