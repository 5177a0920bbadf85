"""Dense CRF post-processing (``eval.crf``): the CRF cleans a noisy prediction along an image
edge; ``evaluate(crf=...)`` (a process pool over the step's probabilities) equals the CRF applied
image by image on the host; the missing extra is named."""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import evaluate as ev
from jaxseg import metrics as m
from jaxseg import sharding

pytest.importorskip("pydensecrf.densecrf",
                    reason="pydensecrf is not installed: pip install -e '.[crf]' (pydensecrf2)")


def _edge_case(rng, height=48, width=64, edge=32, shift=5):
  """Two flat colours meeting at column ``edge`` (class 0 left, 1 right), and a prediction whose
  boundary is blurred, moved ``shift`` pixels left and noisy."""
  image = np.zeros((height, width, 3), np.float64)
  image[:, :edge] = (40, 60, 80)
  image[:, edge:] = (200, 180, 90)
  image = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
  truth = np.broadcast_to(np.arange(width) >= edge, (height, width)).astype(np.int32)
  x = np.arange(width)[None, :] - (edge - shift)
  p = 1 / (1 + np.exp(-x / 3.0)) + rng.normal(0, 0.25, (height, width))
  p = np.clip(p, 0.02, 0.98)
  return image, truth, np.stack([1 - p, p], -1).astype(np.float32)


def test_crf_cleans_a_noisy_prediction_along_an_edge():
  image, truth, probs = _edge_case(np.random.default_rng(0))
  before = int(np.sum(probs.argmax(-1) != truth))
  after = ev.dense_crf(probs, image)   # DeepLab-v2's parameters
  assert after.shape == truth.shape and after.dtype == np.int32
  assert before > 250                  # the band left of the edge and the noise
  assert int(np.sum(after != truth)) <= 0.02 * before
  # Without the appearance kernel the CRF only smooths: the boundary stays where it was.
  smooth = ev.dense_crf(probs, image, ev.CRFParams(bi_w=0.0))
  assert int(np.sum(smooth != truth)) > 0.5 * before
  with pytest.raises(ValueError, match="expected"):
    ev.dense_crf(probs, image[:, :10])


def model(variables, images, train=False):
  """Logits are the images' last two channels: the test writes the noisy probabilities' logs
  there (channel 0 holds the grey level the CRF sees)."""
  return images[..., 1:]


def test_evaluate_with_crf_equals_the_crf_on_the_host():
  rng = np.random.default_rng(1)
  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator(2)
  step = ev.make_eval_step(mesh, model, acc, probabilities=True,
                           loss_fn=lambda logits, labels: jnp.float32(0.5))
  host = m.MetricAccumulator(2)
  plain = m.MetricAccumulator(2)
  batches = []
  for i in range(3):
    images, labels, sizes = [], [], []
    for j in range(2):
      rgb, truth, probs = _edge_case(rng, shift=4 + j)
      h, w = (48, 64) if j == 0 else (40, 50)   # the second image is padded
      canvas = np.zeros((48, 64, 3), np.float32)
      canvas[:h, :w, 0] = rgb[:h, :w, 0]
      canvas[:h, :w, 1:] = np.log(probs[:h, :w])
      label = np.full((48, 64), 255, np.int32)
      label[:h, :w] = truth[:h, :w]
      images.append(canvas)
      labels.append(label)
      sizes.append((h, w))
    batch = {"image": np.stack(images), "label": np.stack(labels),
             "example_mask": np.array([True, i < 2]), "size": np.array(sizes, np.int32)}
    batches.append(batch)
    # The host reference: the CRF on each image's own region, the RGB image (g, 0, 0).
    grey = np.zeros((2, 48, 64, 3), np.uint8)
    grey[..., 0] = np.rint(batch["image"][..., 0])
    preds = np.zeros((2, 48, 64), np.int32)
    for j, (h, w) in enumerate(sizes):
      p = np.exp(batch["image"][j, :h, :w, 1:])
      preds[j, :h, :w] = ev.dense_crf(p / p.sum(-1, keepdims=True), grey[j, :h, :w])
    host.update(preds, batch["label"], mask=batch["example_mask"])
    plain.update(batch["image"][..., 1:].argmax(-1), batch["label"], mask=batch["example_mask"])
  # The RGB image is the pipeline's normalisation undone: std 1 on channel 0 (the grey level),
  # 0 on the channels that hold the logits.
  summary = ev.evaluate(step, {}, batches, mesh, acc, crf=ev.CRFParams(workers=2),
                        pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 0.0, 0.0))
  assert summary["loss"] == pytest.approx(0.5)
  summary.pop("loss")
  assert summary == host.summary()
  assert summary["miou"] > plain.summary()["miou"] + 0.05   # the CRF helped
  assert summary["num_images"] == 5
  # A step without probabilities is refused.
  with pytest.raises(ValueError, match="probabilities=True"):
    ev.evaluate(ev.make_eval_step(mesh, model, acc), {}, batches, mesh, acc,
                crf=ev.CRFParams(workers=1))


def test_missing_extra_is_named(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "pydensecrf" else real(name, *a))
  with pytest.raises(ImportError, match=r"jaxseg\[crf\]"):
    ev.dense_crf(np.full((2, 2, 2), 0.5, np.float32), np.zeros((2, 2, 3), np.uint8))
