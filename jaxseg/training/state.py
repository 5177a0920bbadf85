"""The train state: step, parameters, BatchNorm statistics, optimiser state and random key."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Everything a checkpoint needs to continue a run exactly.

  Attributes:
    step: int32 scalar, number of optimiser updates done (also the data position: the batch of
      step ``k`` is a pure function of ``(seed, k)``).
    params: the model's ``params`` collection.
    batch_stats: the model's ``batch_stats`` collection (``{}`` for models without BatchNorm).
    opt_state: the optax state.
    rng: the run's base PRNG key (raw ``uint32[2]``); the step's dropout key is
      ``fold_in(rng, step)``, so a resumed run draws the same random numbers.
    apply_fn / tx: static (not saved).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn, params, batch_stats, tx, rng) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=tx.init(params), rng=rng, apply_fn=apply_fn, tx=tx)

  def apply_gradients(self, grads, batch_stats=None) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)

  @property
  def variables(self) -> dict:
    """The ``variables`` dict for ``apply_fn``."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def saveable(self) -> dict:
    """The pytree that checkpoints hold (no functions)."""
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state, "rng": self.rng}

  def restore_from(self, tree: dict) -> "TrainState":
    return self.replace(step=tree["step"], params=tree["params"],
                        batch_stats=tree["batch_stats"], opt_state=tree["opt_state"],
                        rng=tree["rng"])


def init_variables(model: flax.linen.Module, rng: jax.Array, image_shape) -> dict:
  """Initialises the model on a dummy batch ``[1, H, W, 3]`` in inference mode."""
  h, w = image_shape
  dummy = jnp.zeros((1, h, w, 3), jnp.float32)
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)
  variables = flax.core.unfreeze(variables) if isinstance(variables, flax.core.FrozenDict) \
      else dict(variables)
  return variables
