"""The metric writer: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard.

:class:`MetricLogger` writes from process 0 only; on resume it drops the records after the
checkpoint's step, which the resumed run logs again. TensorBoard (tensorboardX) events go to
``workdir/tensorboard`` unless ``tensorboard=False``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricLogger:
  """metrics.jsonl + TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str, *, truncate_after: Optional[int] = None,
               tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writer = None
    if not self.active:
      return
    if truncate_after is not None and os.path.exists(self.path):
      # A resumed run logs again the steps after its checkpoint: drop the stale records.
      with open(self.path) as f:
        keep = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= truncate_after]
      with open(self.path, "w") as f:
        f.writelines(keep)
    if tensorboard:
      self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
