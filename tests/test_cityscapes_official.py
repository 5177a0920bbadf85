"""jaxseg's Cityscapes scores against cityscapesScripts' own evaluation.

Frames are generated in the official layout (``gtFine/val/<city>/*_gtFine_labelIds.png`` and
``*_gtFine_instanceIds.png``, predictions as labelId PNGs) with random instances of every class
with instances (caravan and trailer too, which the benchmark ignores), crowd regions (an instance
class with an id below 1000), stuff, and void labels. cityscapesScripts'
``evalPixelLevelSemanticLabeling.evaluateImgLists`` scores the PNGs; jaxseg scores the same frames
through its evaluation path (:func:`jaxseg.evaluate.make_eval_step` and
:func:`jaxseg.evaluate.evaluate` into a :class:`jaxseg.metrics.MetricAccumulator`), with the
labelIds mapped to train ids by the official table and the frames padded to one static shape as
the input pipeline pads them. Class IoU, class iIoU, category IoU and category iIoU (Cordts et
al., CVPR 2016, Sec. 3.2) must agree to 1e-6, on small frames and on full 1024 x 2048 ones.
"""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxseg import evaluate as ev
from jaxseg import metrics as m
from jaxseg import sharding

official = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels")

EVAL_IDS = [lb.id for lb in cs_labels.labels if lb.id >= 0 and not lb.ignoreInEval]
INSTANCE_IDS = [lb.id for lb in cs_labels.labels if lb.hasInstances and lb.id >= 0]
STUFF_IDS = [i for i in EVAL_IDS if i not in INSTANCE_IDS]
VOID_IDS = [lb.id for lb in cs_labels.labels if lb.id >= 0 and lb.ignoreInEval
            and not lb.hasInstances]
TRAIN_ID = np.full(256, 255, np.int32)
for _lb in cs_labels.labels:
  if 0 <= _lb.id and 0 <= _lb.trainId < 255:
    TRAIN_ID[_lb.id] = _lb.trainId


def _blob(rng, h, w, max_side):
  """A random ellipse or rectangle: (row slice, column slice, mask of the box)."""
  bh, bw = (int(np.clip(np.exp(rng.uniform(0, np.log(max_side))), 1, s)) for s in (h, w))
  y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
  if rng.random() < 0.5 or min(bh, bw) < 3:
    box = np.ones((bh, bw), bool)
  else:
    yy, xx = np.ogrid[:bh, :bw]
    box = ((yy + 0.5 - bh / 2) / (bh / 2)) ** 2 + ((xx + 0.5 - bw / 2) / (bw / 2)) ** 2 <= 1
  return slice(y0, y0 + bh), slice(x0, x0 + bw), box


def make_frame(rng, h, w, num_instances):
  """(labelIds uint8, instanceIds uint16, predicted labelIds uint8) of one frame.

  Stuff and void blobs on a road, then instances (``labelId * 1000 + k``; one in six a crowd
  region with the bare labelId) that may occlude one another; the prediction is the ground truth
  (a random class on void) with blobs of wrong classes, a shifted copy of some instances and
  pixel noise, in the 19 evaluated labelIds only.
  """
  label = np.full((h, w), 7, np.uint8)  # road
  for _ in range(12):
    rows, cols, box = _blob(rng, h, w, max(h, w) // 2)
    label[rows, cols][box] = rng.choice(STUFF_IDS + VOID_IDS)
  instance = label.astype(np.uint16)
  count = {}
  for _ in range(num_instances):
    rows, cols, box = _blob(rng, h, w, max(h, w) // 4)
    lid = int(rng.choice(INSTANCE_IDS))
    label[rows, cols][box] = lid
    if rng.random() < 1 / 6:
      instance[rows, cols][box] = lid  # crowd
    else:
      instance[rows, cols][box] = lid * 1000 + count.get(lid, 0)
      count[lid] = count.get(lid, 0) + 1
  evaluated = np.isin(label, EVAL_IDS)
  pred = np.where(evaluated, label, rng.choice(EVAL_IDS, size=(h, w))).astype(np.uint8)
  for _ in range(num_instances // 2 + 2):
    rows, cols, box = _blob(rng, h, w, max(h, w) // 4)
    pred[rows, cols][box] = rng.choice(EVAL_IDS)
  shift = np.roll(pred, (int(rng.integers(1, 4)), int(rng.integers(1, 4))), axis=(0, 1))
  moved = (instance > 1000) & (rng.random((h, w)) < 0.5)
  pred = np.where(moved, shift, pred)
  noise = rng.random((h, w)) < 0.03
  pred[noise] = rng.choice(EVAL_IDS, size=int(noise.sum()))
  return label, instance, pred


def write_frames(root, frames):
  """Writes the frames in the official layout; returns (prediction paths, ground-truth paths)."""
  preds, gts = [], []
  for i, (label, instance, pred) in enumerate(frames):
    stem = f"frankfurt_{i:06d}_000019"
    folder = os.path.join(root, "gtFine", "val", "frankfurt")
    os.makedirs(folder, exist_ok=True)
    os.makedirs(os.path.join(root, "results"), exist_ok=True)
    gts.append(os.path.join(folder, f"{stem}_gtFine_labelIds.png"))
    Image.fromarray(label).save(gts[-1])
    Image.fromarray(instance).save(os.path.join(folder, f"{stem}_gtFine_instanceIds.png"))
    preds.append(os.path.join(root, "results", f"{stem}_pred.png"))
    Image.fromarray(pred).save(preds[-1])
  return preds, gts


def official_scores(preds, gts):
  """cityscapesScripts' ``evaluateImgLists``: quiet, no JSON file, default avgClassSize."""
  args = copy.deepcopy(official.args)
  args.quiet, args.JSONOutput, args.evalPixelAccuracy = True, False, False
  args.evalInstLevelScore = True
  if hasattr(np, "in1d"):
    return official.evaluateImgLists(preds, gts, args)
  np.in1d = np.isin  # cityscapesScripts 2.3 calls np.in1d, which NumPy 2.4 removed
  try:
    return official.evaluateImgLists(preds, gts, args)
  finally:
    del np.in1d


def oracle_apply_fn(variables, images, train=False):
  """Stand-in model that predicts the train id stored in the image's first channel."""
  return 10.0 * jax.nn.one_hot(images[..., 0].astype(jnp.int32), 19)


def read_batches(preds, gts, pad_to, batch_size):
  """The PNGs as the evaluation pipeline yields them: train ids (255 void), raw instance ids,
  padded to ``pad_to`` (void, instance 0), the last batch filled with masked-out examples."""
  examples = []
  for pred_path, gt_path in zip(preds, gts):
    label = TRAIN_ID[np.array(Image.open(gt_path))]
    instance = np.array(Image.open(gt_path.replace("labelIds", "instanceIds"))).astype(np.int32)
    pred = TRAIN_ID[np.array(Image.open(pred_path))]
    assert np.all(pred < 19)
    pad = ((0, pad_to[0] - label.shape[0]), (0, pad_to[1] - label.shape[1]))
    examples.append((np.pad(label, pad, constant_values=255), np.pad(instance, pad),
                     np.pad(pred, pad)))
  while len(examples) % batch_size:
    examples.append(examples[0])
  batches = []
  for start in range(0, len(examples), batch_size):
    label, instance, pred = (np.stack(x) for x in zip(*examples[start:start + batch_size]))
    index = np.arange(start, start + batch_size)
    batches.append({"image": np.repeat(pred[..., None], 3, axis=-1).astype(np.float32),
                    "label": label, "instance": instance, "example_mask": index < len(preds)})
  return batches


def _official_list(scores, names):
  return np.array([scores[n] for n in names], np.float64)


@pytest.mark.parametrize("shapes,num_instances,pad_to,batch_size", [
    ([(64, 128), (60, 128), (64, 120), (57, 101), (64, 128), (48, 96), (64, 128)], 12,
     (64, 128), 3),
    ([(1024, 2048)] * 2, 60, (1024, 2048), 1),
], ids=["small", "1024x2048"])
def test_scores_match_cityscapes_scripts(tmp_path, shapes, num_instances, pad_to, batch_size):
  rng = np.random.default_rng(len(shapes))
  frames = [make_frame(rng, h, w, num_instances) for h, w in shapes]
  preds, gts = write_frames(str(tmp_path), frames)
  want = official_scores(preds, gts)

  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator.cityscapes()
  summary = ev.evaluate(ev.make_eval_step(mesh, oracle_apply_fn, acc), {},
                        read_batches(preds, gts, pad_to, batch_size), mesh, acc)
  got = acc.result()
  assert got["num_images"] == len(shapes)
  classes, categories = m.CITYSCAPES_CLASS_NAMES, m.CITYSCAPES_CATEGORY_NAMES
  pairs = {
      "class IoU": (got["per_class_iou"], _official_list(want["classScores"], classes)),
      "class iIoU": (got["per_class_iiou"], _official_list(want["classInstScores"], classes)),
      "category IoU": (got["per_category_iou"],
                       _official_list(want["categoryScores"], categories)),
      "category iIoU": (got["per_category_iiou"],
                        _official_list(want["categoryInstScores"], categories)),
      "means": (np.array([got["miou"], got["iiou"], got["category_miou"], got["category_iiou"]]),
                np.array([want["averageScoreClasses"], want["averageScoreInstClasses"],
                          want["averageScoreCategories"], want["averageScoreInstCategories"]])),
  }
  for what, (mine, theirs) in pairs.items():
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6, equal_nan=True, err_msg=what)
  # not vacuous: every instance class and both instance categories are scored
  assert np.sum(~np.isnan(got["per_class_iiou"])) == 8
  assert np.sum(~np.isnan(got["per_category_iiou"])) == 2
  assert np.isnan(want["categoryScores"]["void"])  # the official list has void, jaxseg not
  # what the trainer logs and writes is the same
  assert summary["iiou"] == got["iiou"] and summary["category_iiou"] == got["category_iiou"]
  assert abs(summary["per_class_iiou"]["car"] - want["classInstScores"]["car"]) < 1e-6
