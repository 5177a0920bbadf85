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
* **Schedules** (optax's schedule functions): ``poly`` ``lr_k = base (1 - k / K)^power`` (DeepLab's "poly", power 0.9),
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

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "cosine", "piecewise")


def _field(entry: Any, name: str, default: Any = None) -> Any:
  """``entry[name]`` of a mapping or ``ConfigDict`` (an entry of ``param_groups``)."""
  return entry.get(name, default) if hasattr(entry, "get") else getattr(entry, name, default)


def effective_warmup_steps(*, warmup_steps: int, num_train_steps: int) -> int:
  """The warmup a schedule uses in a run of ``num_train_steps`` steps.

  ``warmup_steps`` as given when it is shorter than the run; otherwise clamped to
  ``num_train_steps - 1`` (the learning rate reaches ``base_lr`` at the last step), so that a
  short run of a config with a warmup (a smoke test) works. Callers can compare it with the
  configured value to say so. Raises ``ValueError`` for a negative warmup or a non-positive
  ``num_train_steps``.
  """
  total = int(num_train_steps)
  if total <= 0:
    raise ValueError(f"num_train_steps must be positive, got {total}.")
  warmup = int(warmup_steps or 0)
  if warmup < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup}.")
  return min(warmup, total - 1)


def create_learning_rate_schedule(*, num_train_steps: int, name: str = "constant",
                                  base_lr: float = 0.0, warmup_steps: int = 0,
                                  power: float = 0.9, end_lr: float = 0.0,
                                  boundaries: Sequence[int] = (),
                                  boundaries_epochs: Sequence[float] = (),
                                  learning_rates: Sequence[float] = (),
                                  steps_per_epoch: int = -1) -> optax.Schedule:
  """The learning-rate schedule ``step -> lr`` (float32), built from optax's schedules.

  ``name`` is one of ``SCHEDULES``: ``poly`` (``optax.polynomial_schedule`` from ``base_lr`` to
  ``end_lr`` with ``power``), ``cosine`` (``optax.cosine_decay_schedule`` from ``base_lr`` to
  ``end_lr``), ``constant``, ``piecewise`` (``learning_rates[i]`` from ``boundaries[i - 1]`` on,
  ``optax.join_schedules`` of constants; the boundaries in steps, or in epochs with
  ``boundaries_epochs`` times ``steps_per_epoch``). The decay runs over the ``num_train_steps``
  steps after a linear warmup from 0 over ``warmup_steps`` (clamped by
  :func:`effective_warmup_steps`). Raises ``ValueError`` naming the field that is wrong.
  """
  if name not in SCHEDULES:
    raise ValueError(f"Unknown learning-rate schedule {name!r} (config.schedule.name); "
                     f"choose one of {SCHEDULES}.")
  base_lr, end_lr = float(base_lr), float(end_lr or 0.0)
  warmup = effective_warmup_steps(warmup_steps=warmup_steps, num_train_steps=num_train_steps)
  decay_steps = max(int(num_train_steps) - warmup, 1)

  if name == "constant":
    main = optax.constant_schedule(base_lr)
  elif name == "poly":
    main = optax.polynomial_schedule(init_value=base_lr, end_value=end_lr, power=float(power),
                                     transition_steps=decay_steps)
  elif name == "cosine":
    # optax decays to alpha * init_value: alpha = end / base (any alpha when base_lr is 0).
    alpha = end_lr / base_lr if base_lr else 0.0
    main = optax.cosine_decay_schedule(init_value=base_lr, decay_steps=decay_steps, alpha=alpha)
  else:  # piecewise
    boundaries = [int(b) for b in boundaries or ()]
    epochs = [float(e) for e in boundaries_epochs or ()]
    if epochs:
      if boundaries:
        raise ValueError("give the piecewise schedule boundaries or boundaries_epochs, not both.")
      if steps_per_epoch <= 0:
        raise ValueError("schedule.boundaries_epochs needs config.steps_per_epoch > 0.")
      boundaries = [int(round(e * steps_per_epoch)) for e in epochs]
    values = [float(v) for v in learning_rates or ()]
    if len(values) != len(boundaries) + 1:
      raise ValueError(f"piecewise schedule needs len(learning_rates) == len(boundaries) + 1, got "
                       f"boundaries={boundaries}, learning_rates={values}.")
    if sorted(boundaries) != boundaries:
      raise ValueError(f"piecewise schedule boundaries must increase, got {boundaries}.")
    main = optax.join_schedules([optax.constant_schedule(v) for v in values], boundaries)

  if warmup > 0:
    main = optax.join_schedules(
        [optax.linear_schedule(0.0, base_lr, transition_steps=warmup), main], [warmup])
  return lambda step: jnp.asarray(main(step), jnp.float32)


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
    pattern = _field(g, "pattern")
    if pattern is None:
      raise ValueError(f"Each entry of optim.param_groups needs a 'pattern' (regex), got {g}.")
    groups.append((re.compile(pattern), float(_field(g, "lr_mult", 1.0))))

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


def create_optimizer(params: Any, learning_rate: optax.ScalarOrSchedule, *, name: str = "sgd",
                     momentum: float = 0.9, nesterov: bool = False, b1: float = 0.9,
                     b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                     weight_decay_on: str = "kernels", param_groups: Sequence[Any] = (),
                     clip_grad_norm: float = 0.0) -> optax.GradientTransformation:
  """The optax chain for ``params`` (see the module docstring).

  ``name`` is one of ``OPTIMIZERS``; ``momentum`` / ``nesterov`` (sgd; 0 is plain SGD), ``b1``,
  ``b2``, ``eps`` (adam, adamw); ``weight_decay`` on the leaves of ``weight_decay_on``;
  ``param_groups`` (``{"pattern", "lr_mult"}`` entries); ``clip_grad_norm`` (0: off).
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r} (config.optim.name); choose one of "
                     f"{OPTIMIZERS}.")
  wd = float(weight_decay or 0.0)
  mask = weight_decay_mask(params, weight_decay_on)
  chain = []
  if clip_grad_norm:
    chain.append(optax.clip_by_global_norm(float(clip_grad_norm)))
  if name in ("sgd", "adam") and wd:
    chain.append(optax.add_decayed_weights(wd, mask))
  if name == "sgd":
    chain.append(optax.sgd(learning_rate, momentum=float(momentum or 0.0) or None,
                           nesterov=bool(nesterov)))
  elif name == "adam":
    chain.append(optax.adam(learning_rate, b1=float(b1), b2=float(b2), eps=float(eps)))
  else:
    chain.append(optax.adamw(learning_rate, b1=float(b1), b2=float(b2), eps=float(eps),
                             weight_decay=wd, mask=mask))
  if param_groups:
    chain.append(scale_by_multipliers(lr_multipliers(params, param_groups)))
  return optax.chain(*chain)
