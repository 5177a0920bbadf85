"""Figures: colour palettes, mask overlays, prediction grids and training curves (PNG, Agg).

* :func:`palette` is the PASCAL VOC colour map (class ``c``'s RGB bits are the interleaved bits of
  ``c``), extended to any number of classes; the void label (255) is drawn white.
* :func:`colorize` maps a label map ``[H, W]`` to RGB ``uint8 [H, W, 3]``.
* :func:`overlay` alpha-blends a colourised mask over an image (void pixels keep the image).
* :func:`save_prediction_grid` writes rows of image | ground truth | prediction.
* :func:`plot_training_curves` reads ``metrics.jsonl`` and plots each metric against the step,
  one panel per metric, train and eval splits as separate lines.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from jaxseg import _extras

_extras.require("train", "jaxseg.viz (figures)", "matplotlib", "PIL")

import matplotlib  # noqa: E402  pylint: disable=g-import-not-at-top

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

VOID_COLOR = (255, 255, 255)


def palette(num_classes: int = 256) -> np.ndarray:
  """``uint8 [max(num_classes, 256), 3]``: the VOC colour map; entry 255 is white (void)."""
  if num_classes <= 0:
    raise ValueError(f"num_classes must be positive, got {num_classes}.")
  n = max(int(num_classes), 256)
  cmap = np.zeros((n, 3), np.uint8)
  for c in range(n):
    r = g = b = 0
    cid = c
    for j in range(8):
      r |= ((cid >> 0) & 1) << (7 - j)
      g |= ((cid >> 1) & 1) << (7 - j)
      b |= ((cid >> 2) & 1) << (7 - j)
      cid >>= 3
    cmap[c] = (r, g, b)
  cmap[255] = VOID_COLOR
  return cmap


def colorize(label: np.ndarray, num_classes: int = 256) -> np.ndarray:
  """RGB ``uint8 [H, W, 3]`` of an integer label map ``[H, W]`` (values in [0, 255])."""
  label = np.asarray(label)
  if label.ndim != 2:
    raise ValueError(f"colorize expects a [H, W] label map, got shape {label.shape}.")
  if label.size and (label.min() < 0 or label.max() > 255):
    raise ValueError(f"label values must be in [0, 255], got [{label.min()}, {label.max()}].")
  return palette(num_classes)[label.astype(np.int64)]


def to_uint8_image(image: np.ndarray, mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None) -> np.ndarray:
  """Undoes ``(x - mean) / std`` normalisation (0-255 scale) and clips to ``uint8``."""
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an image [H, W, 3], got shape {image.shape}.")
  if std is not None:
    image = image * np.asarray(std, np.float32)
  if mean is not None:
    image = image + np.asarray(mean, np.float32)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
  """``(1 - alpha) * image + alpha * colorize(label)``; void pixels show the image alone."""
  image = np.asarray(image)
  label = np.asarray(label)
  if image.shape[:2] != label.shape or image.ndim != 3:
    raise ValueError(f"image {image.shape} and label {label.shape} sizes differ.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
  color = colorize(label).astype(np.float32)
  blend = (1.0 - alpha) * image.astype(np.float32) + alpha * color
  blend = np.where((label == ignore_index)[..., None], image.astype(np.float32), blend)
  return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def save_prediction_grid(path: str, images: np.ndarray, labels: np.ndarray,
                         predictions: np.ndarray, *, ignore_index: int = 255,
                         alpha: float = 0.6) -> None:
  """PNG with one row per example: image, ground-truth overlay, prediction overlay."""
  images, labels, predictions = map(np.asarray, (images, labels, predictions))
  n = images.shape[0]
  if n == 0:
    raise ValueError("save_prediction_grid needs at least one example.")
  fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
  for i in range(n):
    panels = [images[i], overlay(images[i], labels[i], alpha, ignore_index),
              overlay(images[i], predictions[i], alpha, ignore_index)]
    for j, (ax, panel, title) in enumerate(zip(axes[i], panels,
                                               ("image", "ground truth", "prediction"))):
      ax.imshow(panel)
      ax.set_axis_off()
      if i == 0:
        ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` file."""
  records = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        records.append(json.loads(line))
  return records


def plot_training_curves(metrics_path: str, out_path: str,
                         keys: Optional[Sequence[str]] = None) -> list[str]:
  """Plots every numeric metric of ``metrics.jsonl`` against ``step``; returns the panel names.

  One panel per metric with one line per split (train, eval); metrics named ``group/name``
  (the per-class ``iou/<class>``) share the panel ``group``, one line per name.
  """
  if not os.path.exists(metrics_path):
    raise FileNotFoundError(f"no metrics file at {metrics_path}.")
  records = read_metrics(metrics_path)
  panels: dict[str, dict[str, tuple[list, list]]] = {}
  for r in records:
    split = str(r.get("split", "train"))
    for k, v in r.items():
      if k in ("step", "split", "time") or not isinstance(v, (int, float)) or isinstance(v, bool):
        continue
      if keys is not None and k not in keys and k.split("/")[0] not in keys:
        continue
      panel, _, line = k.partition("/")
      label = f"{split}: {line}" if line else split
      xs, ys = panels.setdefault(panel, {}).setdefault(label, ([], []))
      xs.append(r["step"])
      ys.append(v)
  names = sorted(panels)
  if not names:
    raise ValueError(f"no numeric metrics to plot in {metrics_path}.")
  cols = min(3, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
  for ax, name in zip(axes.flat, names):
    for label, (xs, ys) in sorted(panels[name].items()):
      ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=label)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small" if len(panels[name]) > 4 else "medium")
  for ax in list(axes.flat)[len(names):]:
    ax.set_axis_off()
  fig.tight_layout()
  fig.savefig(out_path, dpi=80)
  plt.close(fig)
  return names
