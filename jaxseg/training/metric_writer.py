"""The metric writer: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, and the
evaluation summaries ``eval_<step>.json``.

:class:`MetricLogger` writes from process 0 only. On resume it drops what was logged after the
checkpoint's step, which the resumed run logs again: the records of ``metrics.jsonl`` after that
step and a last line torn by a killed process, and the TensorBoard events after that step (the
event files are rewritten without them, and without a torn last record). TensorBoard
(tensorboardX) events go to ``workdir/tensorboard`` unless ``tensorboard=False``. Every rewrite
goes through a temporary file (``<name>.tmp<pid>``) renamed over the old one, so a process killed
during it leaves the old file or the new one, never a part (and the next start removes the
temporary file).

An evaluation is done when its ``eval_<step>.json`` exists (:func:`read_evaluation`):
:func:`write_evaluation` logs the scores first and writes that file last, so a run killed in
between evaluates that step again on its next start (``redo_eval_at``) and logs it once.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import time
from typing import Callable, Optional

import jax
import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from jaxseg import evaluate as eval_lib
from jaxseg._files import atomic_write, remove_temporaries


class MetricLogger:
  """metrics.jsonl + TensorBoard scalars, written by process 0 only.

  Args:
    workdir: the run's directory.
    truncate_after: the step the run resumes from: records and events after it are dropped.
    tensorboard: write TensorBoard events too.
    redo_eval_at: a step whose evaluation is done again: its evaluation records are dropped too.
  """

  def __init__(self, workdir: str, *, truncate_after: Optional[int] = None,
               tensorboard: bool = True, redo_eval_at: Optional[int] = None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writer = None
    if not self.active:
      return
    tb_dir = os.path.join(workdir, "tensorboard")
    for folder in (workdir, tb_dir):   # the rewrites of a killed process
      remove_temporaries(folder)
    if truncate_after is not None:
      def stale(step: int, split: str) -> bool:
        return step > truncate_after or (split == "eval" and step == redo_eval_at)
      _truncate_jsonl(self.path, stale)
      for path in glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")):
        _purge_events(path, stale)
    if tensorboard:
      # A file of its own: tensorboardX names it by the second, and opens an existing one afresh.
      self.writer = SummaryWriter(tb_dir, filename_suffix=f".{time.time_ns()}")

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), "split": split}
    record.update({k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                   for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.writer is not None:
      for k, v in values.items():
        if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
          self.writer.add_scalar(f"{split}/{k}", float(v), int(step))
      self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


class TrainWindow:
  """The training metrics of the steps since the last log line.

  Each step's metrics are fetched from the device while the next step runs (one step stays in
  flight), checked finite, and averaged at the log line.

  Args:
    non_finite: ``(step, loss, grad_norm) -> exception`` raised for a non-finite loss or gradient
      norm.
  """

  def __init__(self, non_finite: Callable[[int, float, float], Exception]):
    self._non_finite = non_finite
    self._pending: list[tuple[int, dict]] = []   # (step, device metrics) not yet checked
    self._checked: list[dict] = []
    self.restart_clock()

  def add(self, step: int, metrics: dict) -> None:
    """Checks the steps before ``step`` (whose own step is running) and holds ``metrics``."""
    self.check()
    self._pending.append((step, metrics))

  def check(self) -> None:
    """Fetches and checks every step held."""
    while self._pending:
      step, metrics = self._pending.pop(0)
      host = jax.device_get(metrics)
      loss, grad_norm = float(host["loss"]), float(host["grad_norm"])
      if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise self._non_finite(step, loss, grad_norm)
      self._checked.append({k: float(v) for k, v in host.items()})

  def mean(self) -> Optional[dict]:
    """The means over the checked steps since the last call, with ``steps_per_sec``; None if
    there are none."""
    if not self._checked:
      return None
    values = {k: float(np.mean([w[k] for w in self._checked])) for k in self._checked[0]}
    values["steps_per_sec"] = len(self._checked) / max(time.time() - self._start, 1e-9)
    self._checked.clear()
    self.restart_clock()
    return values

  def restart_clock(self) -> None:
    """Starts the time of ``steps_per_sec`` again (after an evaluation)."""
    self._start = time.time()


def _replace(path: str, data: bytes) -> None:
  atomic_write(path, lambda f: f.write(data))


def _truncate_jsonl(path: str, stale: Callable[[int, str], bool]) -> None:
  """Drops the records of ``metrics.jsonl`` that are ``stale(step, split)`` and lines that do not
  parse (the last line of a killed process)."""
  if not os.path.exists(path):
    return
  keep, changed = [], False
  with open(path, "rb") as f:
    for line in f:
      try:
        record = json.loads(line)
        drop = stale(int(record.get("step", 0)), str(record.get("split", "")))
      except (ValueError, AttributeError):   # torn, or not a record
        drop = True
      changed = changed or drop or not line.endswith(b"\n")
      if not drop:
        keep.append(line if line.endswith(b"\n") else line + b"\n")
  if changed:
    _replace(path, b"".join(keep))


def _purge_events(path: str, stale: Callable[[int, str], bool]) -> None:
  """Rewrites a TensorBoard event file without its events that are ``stale(step, split)`` (the
  split is the tag's prefix) and without a torn or corrupt record and what follows it."""
  with open(path, "rb") as f:
    data = f.read()
  kept, pos, changed = [], 0, False
  while pos < len(data):
    header = data[pos:pos + 8]
    if len(header) < 8 or data[pos + 8:pos + 12] != struct.pack("I", masked_crc32c(header)):
      changed = True
      break
    (length,) = struct.unpack("Q", header)
    body = data[pos + 12:pos + 12 + length]
    end = pos + 16 + length
    if len(body) < length or data[end - 4:end] != struct.pack("I", masked_crc32c(body)):
      changed = True
      break
    event = event_pb2.Event.FromString(body)
    tags = [v.tag for v in event.summary.value]
    if tags and any(stale(int(event.step), tag.split("/", 1)[0]) for tag in tags):
      changed = True
    else:
      kept.append(data[pos:end])
    pos = end
  if changed:
    _replace(path, b"".join(kept))


def evaluation_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, f"eval_{int(step):06d}.json")


def read_evaluation(workdir: str, step: int) -> Optional[dict]:
  """The evaluation summary saved for ``step``, or None if it is missing or unreadable."""
  try:
    with open(evaluation_path(workdir, step)) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) else None


SCALARS = ("miou", "pixel_accuracy", "majority_class_miou", "loss", "iiou", "category_miou",
           "category_iiou")
PER_NAME = {"per_class_iou": "iou", "per_class_iiou": "iiou",
            "per_category_iou": "category_iou", "per_category_iiou": "category_iiou"}


def write_evaluation(logger: MetricLogger, workdir: str, step: int, summary: dict) -> None:
  """Logs the defined scores of ``summary`` (Cityscapes: class and category IoU and iIoU too; per
  name as ``iou/<class>``, ``iiou/<class>``, ``category_iou/<category>``, ...), then writes it,
  confusion matrix included, to ``eval_<step>.json`` (last, and whole or not at all)."""
  values = {k: summary[k] for k in SCALARS if summary.get(k) is not None}
  for key, prefix in PER_NAME.items():
    values.update({f"{prefix}/{name}": v for name, v in summary.get(key, {}).items()
                   if v is not None})
  logger.write(step, "eval", values)
  if jax.process_index() == 0:
    path = evaluation_path(workdir, step)
    tmp = f"{path}.tmp{os.getpid()}"
    eval_lib.save_summary(tmp, summary, step=step)
    os.replace(tmp, path)
