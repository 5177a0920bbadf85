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

Faults (``RELIABILITY.md``):

* A process killed at any moment, even inside an asynchronous save, leaves the step it was
  writing as an orbax temporary directory (``<step>.orbax-checkpoint-tmp-*``: orbax renames it to
  ``<step>`` only once every file is written); orbax does not count it, and the next start
  removes it (``cleanup_tmp_directories``).
* A damaged checkpoint (a file truncated or missing, a step directory without its metadata) is
  found by :meth:`Checkpointer.restore_latest`: it is moved aside to ``<directory>.damaged/``
  (outside orbax's step names, or orbax would keep it as the latest step and never save that
  step again), with a warning naming it, and the run resumes from the newest checkpoint that
  reads whole. When every checkpoint is damaged it raises :class:`DamagedCheckpointError` and
  moves nothing: a run never starts afresh while checkpoints exist.
* A save that cannot be written (disk full, unwritable directory) raises
  :class:`CheckpointWriteError` naming the path; an asynchronous save's failure surfaces at the
  next save or at :meth:`Checkpointer.close`. The checkpoints written before are kept (orbax
  deletes the oldest only after a new one is complete).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxseg._files import write_json  # noqa: F401  (the run's JSON records, written whole)
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
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options,
                                           item_handlers=_item_handlers())
    except OSError as e:
      raise CheckpointWriteError(
          f"Cannot create the checkpoint directory {self.directory}: {e}") from e
    self._in_flight: Optional[int] = None   # the step of a save not yet known to be written

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

  def reached_preemption(self, step: int) -> bool:
    """orbax's agreement of every process on a step to stop at after a preemption notice."""
    return self.manager.reached_preemption(int(step))

  def save(self, state: TrainState, *, force: bool = False) -> bool:
    """Saves ``state`` if its step is due (or ``force``); returns whether a save started.

    Raises:
      NonFiniteError: if any floating-point leaf of the state is NaN or infinite (nothing is
        written, the previous checkpoints stay).
      CheckpointWriteError: if this save, or the asynchronous one before it, could not be
        written (the checkpoints written before stay).
    """
    step = int(jax.device_get(state.step))
    if not force and not self.manager.should_save(step):
      return False
    self._finish_writing()
    if step in self.manager.all_steps():
      return False
    tree = state.saveable()
    if not tree_is_finite(tree):
      raise NonFiniteError(
          f"Refusing to save the checkpoint of step {step}: the train state holds NaN or "
          f"infinite values. The last good checkpoint (step {self.latest_step()}) in "
          f"{self.directory} is kept.")
    meta = {"step": step, "data_position": step, "fingerprint": self.fingerprint}
    self._in_flight = step
    try:
      started = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except  (whatever the writer raised)
      raise self._write_error(e) from e
    self._in_flight = step if started else None
    return started

  def _finish_writing(self) -> None:
    """Waits for a save in flight; its failure raises :class:`CheckpointWriteError`."""
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(e) from e
    self._in_flight = None

  def _write_error(self, error: BaseException) -> CheckpointWriteError:
    step, self._in_flight = self._in_flight, None
    try:
      self.manager.reload()
      kept = self.manager.latest_step()
    except Exception:  # pylint: disable=broad-except
      kept = None
    return CheckpointWriteError(
        f"Could not write the checkpoint of step {step} to {self.step_path(step)}: "
        f"{_first_line(error)}. The checkpoints written before are kept "
        f"(latest: {'none' if kept is None else f'step {kept}'}) in {self.directory}.")

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

  def restore_latest(self, state: TrainState) -> tuple[TrainState, int]:
    """``(state restored from the newest checkpoint that reads whole, its step)``, or
    ``(state, 0)`` when there is no checkpoint.

    Damaged checkpoints newer than it are moved aside with a warning. Raises
    :class:`DamagedCheckpointError` (moving nothing) when every checkpoint is damaged, and
    :class:`IncompatibleCheckpointError` for a checkpoint that reads whole but belongs to another
    run.
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      problem = self._damage(step)
      if problem is None:
        try:
          restored = self.restore(state, step)
        except Exception:  # pylint: disable=broad-except
          problem = self._unreadable(step)
          if problem is None:
            raise   # it reads whole: the configured run differs, say so as it is
      if problem is None:
        held = int(jax.device_get(restored.step))
        if held != step:
          raise IncompatibleCheckpointError(
              f"The checkpoint of step {step} in {self.directory} holds step {held}.")
        self._move_aside(damaged, resumed=step)
        if jax.process_index() == 0:
          print(f"Resumed from the checkpoint of step {step} in {self.directory}.", flush=True)
        return restored, step
      damaged.append((step, problem))
    if damaged:
      raise DamagedCheckpointError(
          f"Every checkpoint in {self.directory} is damaged: "
          + "; ".join(f"step {s}: {p}" for s, p in damaged)
          + ". Nothing was moved. Move them away (or use another --workdir) to start afresh.")
    return state, 0

  def _damage(self, step: int) -> Optional[str]:
    """What is wrong with the files of ``step`` that orbax counts as complete, or None."""
    path = self.step_path(step)
    records = {}
    for name in ("_CHECKPOINT_METADATA", os.path.join("meta", "metadata"),
                 os.path.join("state", "_METADATA")):
      try:
        with open(os.path.join(path, name)) as f:
          records[name] = json.load(f)
      except FileNotFoundError:
        return f"{os.path.join(path, name)} is missing"
      except (OSError, ValueError) as e:
        return f"{os.path.join(path, name)} is unreadable ({_first_line(e)})"
    meta = records[os.path.join("meta", "metadata")]
    if not isinstance(meta, dict) or meta.get("step") != step:
      return f"{os.path.join(path, 'meta', 'metadata')} does not record step {step}"
    return None

  def _unreadable(self, step: int) -> Optional[str]:
    """None if the train state of ``step`` reads whole in its own structure, else why not."""
    try:
      _read_own_structure(self.manager, step, self.directory)
    except Exception as e:  # pylint: disable=broad-except
      return f"{self.step_path(step)} does not read: {_first_line(e)}"
    return None

  def _move_aside(self, damaged: list[tuple[int, str]], *, resumed: int) -> None:
    """Moves the ``damaged`` step directories to ``<directory>.damaged/`` (process 0), with a
    warning each; every process then sees the checkpoints that are left."""
    if not damaged:
      return
    if jax.process_index() == 0:
      root = self.directory + ".damaged"
      os.makedirs(root, exist_ok=True)
      for step, problem in damaged:
        dest, n = os.path.join(root, str(step)), 1
        while os.path.exists(dest):
          n += 1
          dest = os.path.join(root, f"{step}-{n}")
        os.rename(self.step_path(step), dest)
        print(f"WARNING: the checkpoint of step {step} is damaged ({problem}): moved to {dest}; "
              f"resuming from the checkpoint of step {resumed}.", file=sys.stderr, flush=True)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(f"jaxseg_damaged_checkpoints_moved_{resumed}")
    self.manager.reload()

  def close(self, *, wait: bool = True) -> None:
    """Waits for the save in flight (its failure raises :class:`CheckpointWriteError`) and
    closes the manager; ``wait=False`` (an aborted run) returns at once."""
    if not wait:
      return
    try:
      self._finish_writing()
    finally:
      self.manager.close()


def _item_handlers() -> dict:
  return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


def _first_line(error: BaseException) -> str:
  """What went wrong, in one line: the innermost cause's first line, without TensorStore's
  spec."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip() or type(error).__name__
  line = re.split(r" \[tensorstore_spec| See full TensorStore details", text.splitlines()[0])[0]
  return line if len(line) <= 300 else line[:300] + "..."


def _read_own_structure(manager: ocp.CheckpointManager, step: int, directory: str) -> dict:
  """The train state of ``step`` in the structure it was saved with, on one local device."""
  # Onto one local device: works whatever device topology the checkpoint was saved with (another
  # run's mesh, another number of hosts).
  metadata = manager.item_metadata(step)["state"]
  if metadata is None:
    raise FileNotFoundError(f"step {step} in {directory} holds no train state.")
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                        metadata)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))["state"]


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
      item_handlers=_item_handlers())
  try:
    step = manager.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"init_from: no checkpoint in {directory}.")
    try:
      restored = _read_own_structure(manager, step, directory)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"init_from: {e}") from e
  finally:
    manager.close()
  tree = jax.tree.map(np.asarray, restored)
  return tree, step
