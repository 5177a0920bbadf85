"""Starting a run: the train state, fresh or from another run's / PyTorch weights.

* :func:`create_train_state`: the replicated :class:`~jaxseg.training.state.TrainState` (fresh
  or ``config.init_from`` variables, the optax chain of ``config.optim``, the base PRNG key);
* :func:`initial_variables`: fresh variables, then ``config.init_from`` applied (a checkpoint
  of another run, with ``reinit_pattern`` / ``binary_head``, or a PyTorch state dict);
* :func:`transfer_weights`: the leaf-by-leaf copy behind ``init_from.checkpoint``.

:class:`ConfigError` (a config field the trainer cannot use) lives here too: the trainer's
other modules raise it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import models
from jaxseg import sharding
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import optim as optim_lib
from jaxseg.training.state import TrainState, init_variables


class ConfigError(ValueError):
  """A config field holds a value the trainer cannot use."""


def crop_hw(crop_size) -> tuple[int, int]:
  """``config.data.crop_size`` (an int or ``(height, width)``) as ``(height, width)``."""
  if isinstance(crop_size, int):
    return int(crop_size), int(crop_size)
  crop = tuple(int(c) for c in crop_size)
  if len(crop) != 2:
    raise ConfigError(f"config.data.crop_size must be an int or (height, width), got {crop_size}.")
  return crop


def to_dict(x: Any) -> dict:
  """A ConfigDict, dict or None as a plain dict."""
  if x is None:
    return {}
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return dict(x)


def _flat(tree) -> dict[str, Any]:
  return {optim_lib.path_to_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def transfer_weights(target: dict, source: dict, *, reinit_pattern: str = "",
                     binary_head: Optional[dict] = None) -> tuple[dict, dict]:
  """Copies ``source`` leaves into ``target`` (both ``{"params", "batch_stats"}`` trees).

  A target leaf takes the source leaf of the same path and shape. Leaves whose path matches
  ``reinit_pattern`` keep their fresh initialisation (a new head). With ``binary_head =
  {"pattern", "class_index", "background_index"}``, a leaf matching ``pattern`` whose source has
  ``C`` entries in the last axis and the target one is initialised as
  ``source[..., c] - source[..., background]``: the binary classifier that scores class ``c``
  against the background with the multi-class model's logits (the binary Lovász hinge recipe).
  Any other mismatch is an error naming the leaf. Returns the new tree and counts.
  """
  src = _flat(source)
  reinit = re.compile(reinit_pattern) if reinit_pattern else None
  head_re = re.compile(binary_head["pattern"]) if binary_head else None
  stats = {"copied": 0, "reinitialised": 0, "binary_head": 0}

  def pick(path, leaf):
    name = optim_lib.path_to_str(path)
    local = name.split("/", 1)[1] if "/" in name else name  # without "params/" / "batch_stats/"
    if reinit is not None and reinit.search(local):
      stats["reinitialised"] += 1
      return leaf
    if name not in src:
      raise ckpt_lib.IncompatibleCheckpointError(
          f"init_from: the source has no weight {name!r} (shape {tuple(leaf.shape)}); set "
          f"config.init_from.reinit_pattern to initialise it afresh.")
    value = np.asarray(src[name])
    if head_re is not None and head_re.search(local) and value.shape != leaf.shape:
      c, bg = int(binary_head["class_index"]), int(binary_head["background_index"])
      if leaf.shape[-1] != 1 or value.shape[:-1] != leaf.shape[:-1] or \
          not (0 <= c < value.shape[-1] and 0 <= bg < value.shape[-1]):
        raise ckpt_lib.IncompatibleCheckpointError(
            f"init_from.binary_head: cannot make {name!r} of shape {tuple(leaf.shape)} from the "
            f"source's {value.shape} with class {c} and background {bg}.")
      stats["binary_head"] += 1
      return jnp.asarray(value[..., c:c + 1] - value[..., bg:bg + 1], leaf.dtype)
    if value.shape != tuple(leaf.shape):
      raise ckpt_lib.IncompatibleCheckpointError(
          f"init_from: weight {name!r} has shape {value.shape} in the source but "
          f"{tuple(leaf.shape)} in the model; set config.init_from.reinit_pattern to "
          f"initialise it afresh.")
    stats["copied"] += 1
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(pick, target), stats


def initial_variables(config, model, rng, mesh) -> dict:
  """Fresh variables (replicated), then ``config.init_from`` applied."""
  crop = crop_hw(config.data.crop_size)
  rep = sharding.replicated(mesh)
  variables = jax.jit(lambda r: init_variables(model, r, crop), out_shardings=rep)(rng)
  variables.setdefault("batch_stats", {})
  init = config.get("init_from", None)
  if init is None:
    return variables
  source = None
  if init.get("checkpoint", ""):
    step = int(init.get("step", -1))
    tree, src_step = ckpt_lib.restore_raw(init.checkpoint, None if step < 0 else step)
    source = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {}) or {}}
    origin = f"checkpoint {init.checkpoint} (step {src_step})"
  elif init.get("torch_weights", ""):
    path = init.torch_weights
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.init_from.torch_weights: no file at {path}.")
    try:
      new = models.import_torch_state_dict(jax.device_get(variables), path,
                                           **to_dict(init.get("torch_options", {})))
    except ValueError as e:
      raise ckpt_lib.IncompatibleCheckpointError(
          f"config.init_from.torch_weights={path!r} does not fit model "
          f"{config.model.name!r}: {e}") from e
    new = {"params": new["params"], "batch_stats": new.get("batch_stats", {}) or {}}
    if jax.process_index() == 0:
      print(f"Initialised from the PyTorch weights {path}.", flush=True)
    return jax.device_put(new, rep)
  if source is None:
    return variables
  bh = init.get("binary_head", None)
  binary_head = None
  if bh is not None and int(bh.get("class_index", -1)) >= 0:
    binary_head = {"pattern": bh.pattern, "class_index": int(bh.class_index),
                   "background_index": int(bh.get("background_index", 0))}
  host = jax.device_get(variables)
  new, stats = transfer_weights(host, source, reinit_pattern=init.get("reinit_pattern", ""),
                                binary_head=binary_head)
  if jax.process_index() == 0:
    print(f"Initialised from {origin}: {stats}", flush=True)
  return jax.device_put(new, rep)


def create_train_state(config, model, mesh, learning_rate_fn, rng) -> TrainState:
  """The replicated train state: fresh or ``init_from`` variables, optax chain, base key."""
  # Parameters are drawn with the "rbg" generator (XLA's RngBitGenerator): compiling the init of a
  # deep model with threefry costs several times longer on CPU (14 s against 3 s for unet_small).
  seed = jax.random.randint(rng, (), 0, 2**31 - 1)
  init_rng = jax.random.key(int(seed), impl="rbg")
  state_rng = jax.random.fold_in(rng, 1)
  variables = initial_variables(config, model, init_rng, mesh)
  try:
    tx = optim_lib.create_optimizer(variables["params"], learning_rate_fn,
                                    **to_dict(config.optim))
  except (TypeError, ValueError) as e:  # a field the optimizer does not know, or a bad value
    raise ConfigError(f"config.optim: {e}") from e
  rep = sharding.replicated(mesh)

  def make(variables, key):
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx, rng=key)

  return jax.jit(make, out_shardings=rep)(variables, state_rng)
