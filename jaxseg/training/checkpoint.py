"""Checkpoints with orbax: periodic asynchronous saves, keep the last K, resume from the latest.

A checkpoint holds the whole :class:`~jaxseg.training.state.TrainState` (step, parameters,
BatchNorm statistics, optimiser state, PRNG key) and a small JSON record (step, data position,
the run's config fingerprint). The data position is the step itself: the training iterator
yields the batch of step ``k`` as a pure function of ``(seed, k)``, so a resumed run restarts
the iterator at ``start_step = step`` and follows the same trajectory as an uninterrupted one.

Safety: :meth:`Checkpointer.save` refuses a state whose parameters, statistics or optimiser
state hold a NaN or infinity (:class:`NonFiniteError`), so a diverged run never overwrites the
last good checkpoint. A workdir that holds checkpoints of a different model / dataset gives an
:class:`IncompatibleCheckpointError` naming the differing fields instead of an orbax stack trace.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.training.state import TrainState


class NonFiniteError(FloatingPointError):
  """Raised when a loss or a state to be saved is not finite."""


class IncompatibleCheckpointError(ValueError):
  """Raised when the checkpoints in a workdir do not belong to the configured run."""


class DamagedCheckpointError(RuntimeError):
  """Raised when every checkpoint of a workdir is damaged (the run does not start afresh)."""


class CheckpointWriteError(OSError):
  """Raised when a checkpoint could not be written (disk full, unwritable directory): names the
  path; the checkpoints written before are kept."""


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def tree_is_finite(tree: Any) -> bool:
  """True iff every floating-point leaf of ``tree`` is finite (one device->host transfer).

  One module-level jitted check: compiled once per list of leaf shapes, dtypes and shardings,
  so the saves of a run after the first do not compile again.
  """
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  if not leaves:
    return True
  return bool(jax.device_get(_all_finite(leaves)))


def _abstract(tree: Any) -> Any:
  def to_struct(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
  return jax.tree.map(to_struct, tree)


def _describe_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  diffs = []
  for key in sorted(set(saved) | set(current)):
    if saved.get(key) != current.get(key):
      diffs.append(f"  {key}: checkpoint has {saved.get(key)!r}, config has {current.get(key)!r}")
  return diffs


class Checkpointer:
  """An orbax ``CheckpointManager`` under ``<workdir>/checkpoints`` for a :class:`TrainState`.

  Args:
    directory: where the step folders go (created).
    save_every: save when ``step % save_every == 0`` (and whenever ``force=True``).
    keep: how many of the most recent checkpoints to keep (``None``: all).
    async_save: write in a background thread (:meth:`close` blocks until written).
    fingerprint: JSON-able dict describing what makes checkpoints compatible (model, classes,
      dataset, optimiser); compared on :meth:`restore`.
  """

  def __init__(self, directory: str, *, save_every: int, keep: Optional[int] = 3,
               async_save: bool = True, fingerprint: Optional[Mapping[str, Any]] = None):
    self.directory = os.path.abspath(os.fspath(directory))
    self.fingerprint = dict(fingerprint or {})
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=keep,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, state: TrainState, *, force: bool = False) -> bool:
    """Saves ``state`` if its step is due (or ``force``); returns whether a save started.

    Raises:
      NonFiniteError: if any floating-point leaf of the state is NaN or infinite (nothing is
        written, the previous checkpoints stay).
    """
    step = int(jax.device_get(state.step))
    if not force and not self.manager.should_save(step):
      return False
    if step in self.manager.all_steps():
      return False
    tree = state.saveable()
    if not tree_is_finite(tree):
      raise NonFiniteError(
          f"Refusing to save the checkpoint of step {step}: the train state holds NaN or "
          f"infinite values. The last good checkpoint (step {self.latest_step()}) in "
          f"{self.directory} is kept.")
    meta = {"step": step, "data_position": step, "fingerprint": self.fingerprint}
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)

  def read_meta(self, step: Optional[int] = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def check_compatible(self, step: Optional[int] = None) -> None:
    """Raises :class:`IncompatibleCheckpointError` if the saved fingerprint differs."""
    if not self.fingerprint:
      return
    saved = self.read_meta(step).get("fingerprint", {})
    diffs = _describe_differences(saved, self.fingerprint)
    if diffs:
      raise IncompatibleCheckpointError(
          f"The workdir's checkpoints ({self.directory}) belong to a different run:\n"
          + "\n".join(diffs)
          + "\nUse another --workdir, or delete the old checkpoints to start afresh.")

  def restore(self, state: TrainState, step: Optional[int] = None) -> TrainState:
    """Restores step ``step`` (default: latest) into the structure and shardings of ``state``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint to restore in {self.directory}.")
    self.check_compatible(step)
    target = _abstract(state.saveable())
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, TypeError) as e:
      raise IncompatibleCheckpointError(
          f"The checkpoint of step {step} in {self.directory} does not match the configured "
          f"model/optimiser (parameter structure or shapes differ): {e}\n"
          f"Use another --workdir for a different model or optimiser.") from e
    return state.restore_from(restored["state"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_raw(directory: str, step: Optional[int] = None) -> tuple[dict, int]:
  """Reads a checkpoint's state as host NumPy arrays (for fine-tuning from another run).

  ``directory`` is a run's workdir or its ``checkpoints`` folder. Returns ``(tree, step)``
  where ``tree`` has the keys of :meth:`TrainState.saveable`.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"init_from: no checkpoint folder at {directory}.")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})
  try:
    step = manager.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"init_from: no checkpoint in {directory}.")
    # Restore onto one local device: works whatever device topology the checkpoint was saved
    # with (another run's mesh, another number of hosts).
    metadata = manager.item_metadata(step)["state"]
    if metadata is None:
      raise FileNotFoundError(f"init_from: step {step} in {directory} holds no train state.")
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                          metadata)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
  finally:
    manager.close()
  tree = jax.tree.map(np.asarray, restored["state"])
  return tree, step


def write_json(path: str, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
