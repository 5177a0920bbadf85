"""Stopping a run at a signal without losing it: a preemption notice (SIGTERM) or Ctrl-C (SIGINT).

The trainer (:func:`jaxseg.training.loop.train_and_evaluate`) holds a :class:`PreemptionWatch`
for the length of the run and asks it every step whether to stop. When it says so, the loop saves
the checkpoint of the step it has just taken, waits until it is written, and raises
:class:`Preempted`; ``train.py`` turns that into one line and the exit status
:data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL`` of ``sysexits.h``: "try again later"), so a job
scheduler can requeue the job; the next start in the same workdir resumes at that step.

* One process: the watch installs Python handlers for SIGTERM and SIGINT that only set a flag,
  read by the loop at the end of every step (and between evaluation batches: a signal during an
  evaluation abandons the evaluation, never the save). A second signal raises
  ``KeyboardInterrupt`` at once (``train.py``: exit status 130, no wait for a save in flight;
  the next start resumes from the latest complete checkpoint, as after ``kill -9``).
* Several processes (``jax.distributed``): ``jax.distributed.initialize`` installs JAX's own
  SIGTERM notice (the preemption sync service); the watch leaves it in place, and every process
  asks orbax's ``CheckpointManager.reached_preemption(step)`` every step, so that all of them stop
  at the same step (the first step after the notice reached every process, about a second).
  Ctrl-C on a process is passed to that service as a SIGTERM of the process; a second Ctrl-C
  raises ``KeyboardInterrupt``. An evaluation in progress finishes first (the processes agree on
  training steps only).

The handlers are installed only by the run (not at import), only from the main thread, and the
previous ones are restored when the run ends, however it ends.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Iterable, Iterator, Optional

EXIT_PREEMPTED = 75
"""``train.py``'s exit status after a signal: the checkpoint of the current step is written."""

EXIT_ABORTED = 130
"""``train.py``'s exit status after a second signal (128 + SIGINT, the shell's Ctrl-C status)."""


class Preempted(Exception):
  """The run stopped at a signal after writing the checkpoint of ``step`` in ``directory``."""

  def __init__(self, step: int, directory: str, signal_name: str):
    self.step, self.directory, self.signal_name = int(step), directory, signal_name
    super().__init__(
        f"{signal_name}: stopped after writing the checkpoint of step {step} in {directory}; "
        f"the same command resumes there (exit status {EXIT_PREEMPTED}).")


class EvaluationAbandoned(Exception):
  """Raised between evaluation batches once a signal asked the run to stop."""


def jax_preemption_service_active() -> bool:
  """Whether ``jax.distributed`` runs JAX's preemption sync service (its SIGTERM notice)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None
  except (ImportError, AttributeError):  # pragma: no cover  (another JAX: the process count)
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_count() > 1


class PreemptionWatch:
  """A context manager that turns SIGTERM / SIGINT into a request to stop at a step boundary.

  Args:
    reached_preemption: ``step -> bool``, the agreement of every process on the step to stop at
      (orbax's ``CheckpointManager.reached_preemption``); asked every step when JAX's preemption
      service runs (several processes), unused otherwise.
    distributed: whether JAX's preemption service runs (default: found out from ``jax``).
  """

  def __init__(self, reached_preemption: Callable[[int], bool], *,
               distributed: Optional[bool] = None):
    self._reached_preemption = reached_preemption
    self.distributed = jax_preemption_service_active() if distributed is None else distributed
    self.signal_name: Optional[str] = None   # the first signal received
    self._previous: dict[int, object] = {}

  # -- installation ----------------------------------------------------------------------------

  def __enter__(self) -> "PreemptionWatch":
    if threading.current_thread() is not threading.main_thread():
      return self   # Python only lets the main thread install handlers: stop only at the end.
    # With JAX's preemption service, SIGTERM belongs to it (a C handler Python does not see).
    signals = [signal.SIGINT] if self.distributed else [signal.SIGINT, signal.SIGTERM]
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if self.signal_name is not None:
      self.__exit__()
      raise KeyboardInterrupt(f"a second signal ({signal.Signals(signum).name}): aborted")
    self.signal_name = signal.Signals(signum).name
    if self.distributed:
      # Hand Ctrl-C to JAX's preemption notice, which every process hears about.
      os.kill(os.getpid(), signal.SIGTERM)

  # -- questions of the loop -------------------------------------------------------------------

  @property
  def requested(self) -> bool:
    """Whether a signal reached this process."""
    return self.signal_name is not None

  def should_stop(self, step: int) -> bool:
    """Asked by every process after every training step: stop after ``step``?"""
    if self.distributed:
      if self._reached_preemption(int(step)):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.requested

  def interruptible(self, batches: Iterable) -> Iterator:
    """``batches``, abandoned with :class:`EvaluationAbandoned` once a signal asked to stop
    (one process; with several, the evaluation finishes and the next step stops)."""
    for batch in batches:
      if self.requested and not self.distributed:
        raise EvaluationAbandoned(self.signal_name)
      yield batch

  def preempted(self, step: int, directory: str) -> Preempted:
    return Preempted(step, directory, self.signal_name or "SIGTERM")
