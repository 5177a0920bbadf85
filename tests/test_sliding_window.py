"""Sliding-window inference (``mode="slide"``): against whole-image prediction on a model whose
output does not depend on the window, against a NumPy transcription of mmsegmentation's
``slide_inference`` on one whose output does, images smaller than the window, the border-aligned
last window, the image's own border inside a padded canvas, one compilation per shape, and the
config override."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import evaluate as ev
from jaxseg import metrics as m
from jaxseg import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 4
RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, C)).astype(np.float32)
V = RNG.normal(size=(3, C)).astype(np.float32)


def conv1x1(variables, images, train=False):
  """A 1x1 convolution: each pixel's logits depend on that pixel only, not on the window."""
  assert not train
  return images @ variables["w"]


def window_model(variables, images, train=False):
  """Output depends on the window: a 1x1 convolution plus the window's mean colour."""
  assert not train
  return images @ variables["w"] + jnp.mean(images, axis=(1, 2), keepdims=True) @ variables["v"]


def _numpy_window_model(x):
  return x @ W.astype(np.float64) + x.mean(axis=(1, 2), keepdims=True) @ V.astype(np.float64)


def _mmseg_slide(images, window, stride):
  """mmsegmentation's ``slide_inference`` in NumPy (float64), a window smaller image padded with
  zeros to the window and its logits cropped back."""
  b, h, w, _ = images.shape
  (hc, wc), (hs, ws) = window, stride
  h_grids = max(h - hc + hs - 1, 0) // hs + 1
  w_grids = max(w - wc + ws - 1, 0) // ws + 1
  preds = np.zeros((b, h, w, C))
  count = np.zeros((b, h, w, 1))
  starts = []
  for hi in range(h_grids):
    for wi in range(w_grids):
      y1, x1 = hi * hs, wi * ws
      y2, x2 = min(y1 + hc, h), min(x1 + wc, w)
      y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
      starts.append((y1, x1))
      crop = images[:, y1:y2, x1:x2].astype(np.float64)
      padded = np.zeros((b, hc, wc, 3))
      padded[:, :y2 - y1, :x2 - x1] = crop
      preds[:, y1:y2, x1:x2] += _numpy_window_model(padded)[:, :y2 - y1, :x2 - x1]
      count[:, y1:y2, x1:x2] += 1
  assert count.min() >= 1
  return preds / count, starts


VARS = {"w": jnp.asarray(W), "v": jnp.asarray(V)}
predict = jax.jit(ev.predict_probabilities, static_argnums=0,
                  static_argnames=("scales", "flip", "mode", "window", "stride"))


@pytest.mark.parametrize("shape,window,stride,scales,flip", [
    # several windows, the last ones aligned to the border; multi-scale and flip
    ((37, 53), (16, 24), (10, 16), (1.0, 0.75), True),
    ((10, 12), (16, 24), (8, 8), (1.0,), False),      # smaller than the window: padded
    ((20, 40), (20, 16), (20, 16), (1.0, 0.5), True),  # no overlap in height
])
def test_slide_equals_whole_on_a_1x1_convolution(shape, window, stride, scales, flip):
  images = jnp.asarray(RNG.normal(size=(2,) + shape + (3,)).astype(np.float32))
  whole = predict(conv1x1, VARS, images, scales=scales, flip=flip)
  slide = predict(conv1x1, VARS, images, scales=scales, flip=flip, mode="slide", window=window,
                  stride=stride)
  np.testing.assert_allclose(np.asarray(slide), np.asarray(whole), atol=2e-6)


@pytest.mark.parametrize("shape,window,stride", [
    ((37, 53), (16, 24), (10, 16)),
    ((10, 12), (16, 24), (8, 8)),
    ((16, 53), (16, 24), (16, 24)),
])
def test_slide_logits_match_mmsegmentation(shape, window, stride):
  images = RNG.normal(size=(2,) + shape + (3,)).astype(np.float32)
  want, starts = _mmseg_slide(images, window, stride)
  got = ev.slide_logits(window_model, VARS, jnp.asarray(images), window=window, stride=stride)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  if shape == (37, 53):  # the grid: 3 x 3 windows, the last row and column at the border
    assert sorted({y for y, _ in starts}) == [0, 10, 20, 37 - 16]   # mmseg's 4 rows
    assert sorted({x for _, x in starts}) == [0, 16, 53 - 24]


def test_windows_align_to_each_image_inside_a_padded_canvas():
  """With the batch's sizes, each image's windows align to its own border (the padding is seen
  only by an image smaller than the window), as mmsegmentation on the unpadded image."""
  window, stride = (16, 24), (10, 16)
  sizes = [(37, 53), (12, 20)]
  canvas = np.zeros((2, 40, 64, 3), np.float32)
  originals = []
  for i, (h, w) in enumerate(sizes):
    originals.append(RNG.normal(size=(1, h, w, 3)).astype(np.float32))
    canvas[i, :h, :w] = originals[-1][0]
  extent = jnp.asarray([[0, h, 0, w] for h, w in sizes])
  got = np.asarray(ev.slide_logits(window_model, VARS, jnp.asarray(canvas), window=window,
                                   stride=stride, extent=extent))
  for i, (h, w) in enumerate(sizes):
    want, _ = _mmseg_slide(originals[i], window, stride)
    np.testing.assert_allclose(got[i, :h, :w], want[0], atol=1e-5, err_msg=f"image {i}")
  # predict_probabilities derives the extents from the sizes, flipped views included: at scale
  # 1 with flip the probabilities are those of the unpadded images.
  probs = np.asarray(predict(
      window_model, VARS, jnp.asarray(canvas), flip=True, mode="slide", window=window,
      stride=stride, sizes=jnp.asarray(sizes)))
  for i, (h, w) in enumerate(sizes):
    alone = np.asarray(predict(
        window_model, VARS, jnp.asarray(originals[i]), flip=True, mode="slide", window=window,
        stride=stride))
    np.testing.assert_allclose(probs[i, :h, :w], alone[0], atol=1e-5, err_msg=f"image {i}")


def test_eval_step_slide_compiles_once_per_shape_and_equals_whole():
  calls = []

  def counted(variables, images, train=False):
    calls.append(images.shape)
    return conv1x1(variables, images, train)

  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator(C)
  kwargs = dict(scales=(1.0, 0.5), flip=True)
  slide = ev.make_eval_step(mesh, counted, acc, mode="slide", window=(8, 8), stride=(4, 4),
                            **kwargs)
  whole = ev.make_eval_step(mesh, conv1x1, acc, **kwargs)
  batches = []
  for _ in range(2):
    labels = RNG.integers(0, C, size=(2, 24, 32)).astype(np.int32)
    labels[:, :2] = 255
    batches.append({"image": RNG.normal(size=(2, 24, 32, 3)).astype(np.float32),
                    "label": labels, "example_mask": np.array([True, True]),
                    "size": np.array([[24, 32], [24, 32]], np.int32)})
  want = ev.evaluate(whole, VARS, batches, mesh, acc)
  got = ev.evaluate(slide, VARS, batches, mesh, acc)
  assert got["confusion_matrix"] == want["confusion_matrix"]
  assert slide._cache_size() == 1           # one compilation for both batches
  # The model is traced a fixed number of times per view (shape inference + the scan body),
  # never once per window: 4 views here, 5 x 7 windows at scale 1.
  assert len(calls) == 2 * 4 and {s[1:3] for s in calls} == {(8, 8)}
  small = [{k: (v[:, :16, :16] if k in ("image", "label") else v) for k, v in b.items()}
           for b in batches]
  ev.evaluate(slide, VARS, small, mesh, acc)
  assert slide._cache_size() == 2           # a new shape compiles once more


def test_window_and_stride_are_checked():
  images = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="stride <= window"):
    ev.predict_probabilities(conv1x1, VARS, images, mode="slide", window=(4, 4), stride=(5, 4))
  with pytest.raises(ValueError, match="eval mode"):
    ev.predict_probabilities(conv1x1, VARS, images, mode="tiles")
  assert ev.check_window(6, 4) == ((6, 6), (4, 4))
  assert [ev.num_windows(n, 512, 341) for n in (300, 512, 513, 1024)] == [1, 1, 2, 3]


def test_config_overrides_parse():
  """``--config.eval.window=512,1024`` (the README's form) sets a pair of ints."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, "configs", "default.py")
  argv = ["train.py", "--config", path, "--config.eval.mode=slide",
          "--config.eval.window=512,1024", "--config.eval.stride=341,683",
          "--config.eval.crf=True", "--config.eval.crf_params.bi_w=5"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=path, flag_values=values, sys_argv=argv,
                                  lock_config=True)
  values(argv)
  e = values.config.eval
  assert (e.mode, e.window, e.stride, e.crf) == ("slide", (512, 1024), (341, 683), True)
  assert ev.check_window(e.window, e.stride) == ((512, 1024), (341, 683))
  params = ev.CRFParams(**e.crf_params.to_dict(), workers=e.crf_workers)
  assert params == ev.CRFParams(bi_w=5.0)
