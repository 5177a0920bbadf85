"""The input pipelines' keyword arguments, read from a config once.

``config.data`` (``configs/common.py``'s ``data_config``) and ``config.binary_class`` become the
keyword arguments of :func:`jaxseg.data.create_train_iterator` and
:func:`jaxseg.data.create_eval_iterator`; the trainer adds the batch size, seed, start step and
hosts.
"""

from __future__ import annotations

from typing import Any


def _location(data: Any) -> dict:
  """``name``, ``data_dir``, ``manual_dir`` and ``options`` of a data config."""
  options = data.get("options", None)
  return {"name": data.name, "data_dir": data.get("data_dir", None) or None,
          "manual_dir": data.get("manual_dir", None) or None,
          "options": dict(options.to_dict() if hasattr(options, "to_dict") else options or {})}


def train_arguments(config: Any) -> dict:
  """The keyword arguments of ``create_train_iterator`` but the batch size, seed and hosts."""
  data = config.data
  balanced = data.get("class_balanced", None) or {}
  return dict(
      _location(data), split=data.train_split, crop_size=data.crop_size,
      scale_range=tuple(data.get("scale_range", (1.0, 1.0))), flip=bool(data.get("flip", False)),
      mean=tuple(data.mean), std=tuple(data.std), equibatch=bool(data.get("equibatch", False)),
      class_balanced_class=int(balanced.get("class_id", -1)),
      class_balanced_fraction=float(balanced.get("fraction", 0.5)),
      binary_class=int(config.get("binary_class", -1)),
      num_parallel_calls=int(data.get("num_parallel_calls", -1)),
      prefetch=int(data.get("prefetch", 2)))


def eval_arguments(config: Any) -> dict:
  """The keyword arguments of ``create_eval_iterator`` but the batch size and hosts."""
  data = config.data
  return dict(
      _location(data), split=data.eval_split, pad_size=data.get("eval_pad_size", None),
      mean=tuple(data.mean), std=tuple(data.std),
      binary_class=int(config.get("binary_class", -1)),
      num_parallel_calls=int(data.get("num_parallel_calls", -1)),
      prefetch=int(data.get("prefetch", 2)))
