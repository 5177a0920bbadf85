"""Figures: palette, colourised masks, overlays, prediction grids and training curves."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxseg import viz


def test_palette_is_the_voc_colour_map():
  p = viz.palette(21)
  assert p.shape == (256, 3) and p.dtype == np.uint8
  # Known VOC colours: background, aeroplane, bicycle, bird, person (15).
  assert p[0].tolist() == [0, 0, 0]
  assert p[1].tolist() == [128, 0, 0]
  assert p[2].tolist() == [0, 128, 0]
  assert p[3].tolist() == [128, 128, 0]
  assert p[15].tolist() == [192, 128, 128]
  assert p[255].tolist() == [255, 255, 255]
  assert len({tuple(c) for c in p[:255]}) == 255  # distinct classes
  with pytest.raises(ValueError):
    viz.palette(0)


def test_colorize_and_overlay():
  label = np.array([[0, 1], [2, 255]])
  rgb = viz.colorize(label)
  assert rgb.shape == (2, 2, 3)
  assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]
  image = np.full((2, 2, 3), 100, np.uint8)
  out = viz.overlay(image, label, alpha=0.5)
  assert out[0, 1].tolist() == [114, 50, 50]    # round(0.5 * 100 + 0.5 * 128) = 114
  assert out[1, 1].tolist() == [100, 100, 100]  # void keeps the image
  with pytest.raises(ValueError, match="sizes differ"):
    viz.overlay(image, np.zeros((3, 2), int))
  with pytest.raises(ValueError, match="\\[0, 255\\]"):
    viz.colorize(np.array([[256]]))


def test_to_uint8_image_undoes_normalisation():
  raw = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3)).astype(np.float32)
  mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
  norm = (raw - np.array(mean)) / np.array(std)
  np.testing.assert_array_equal(viz.to_uint8_image(norm, mean, std), raw.astype(np.uint8))


def test_prediction_grid_and_curves(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
  labels = rng.integers(0, 3, size=(2, 8, 8))
  path = tmp_path / "pred.png"
  viz.save_prediction_grid(str(path), images, labels, labels)
  assert Image.open(path).size[0] > 100
  metrics = tmp_path / "metrics.jsonl"
  with open(metrics, "w") as f:
    for step in (10, 20, 30):
      f.write(json.dumps({"step": step, "split": "train", "loss": 1.0 / step}) + "\n")
    f.write(json.dumps({"step": 30, "split": "eval", "loss": 0.2, "miou": 0.5,
                        "iou/a": 0.4, "iou/b": 0.6}) + "\n")
  curves = tmp_path / "curves.png"
  names = viz.plot_training_curves(str(metrics), str(curves))
  assert names == ["iou", "loss", "miou"]
  assert Image.open(curves).format == "PNG"
  with pytest.raises(FileNotFoundError):
    viz.plot_training_curves(str(tmp_path / "missing.jsonl"), str(curves))
