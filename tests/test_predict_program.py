"""``train.py --mode=predict`` end to end, on tiny datasets in the official layouts.

* Cityscapes: a checkpoint of an initialised model predicts a generated val split; its labelIds
  PNGs are found by cityscapesScripts' ``getPrediction`` and scored by its
  ``evaluateImgLists``, which must give the numbers of jaxseg's own evaluation of the same
  checkpoint (``evaluate_checkpoint``): class and category IoU and iIoU; the image-only test split
  is predicted too.
* VOC: the test split of a ``VOC2012test.tar`` in the server's layout with ``results.tgz``; a
  folder of mixed-size images (one compilation per size bucket, files at the images' sizes).
* The command line: ``--mode=predict`` with an unreadable image is one ``ERROR:`` line naming it.
"""

import copy
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
from PIL import Image

from configs import common
from jaxseg.data import testing
from jaxseg.training import loop, prediction

official = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

# Each Run compiles the same initialisation again: share the compiled programs.
pytestmark = pytest.mark.usefixtures("compilation_cache")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (32, 64)
VAL = ["frankfurt_000000_000294", "frankfurt_000001_000019", "lindau_000000_000019"]
TEST = ["berlin_000000_000019", "bonn_000001_000019"]


def _config(dataset, data_dir, manual_dir, pad):
  c = common.base_config(common.data_config(dataset))
  c.model.name = "unet_small"
  c.model.options = {"base_channels": 4, "depth": 2}
  c.loss.name = "cross_entropy"
  c.data.data_dir, c.data.manual_dir = data_dir, manual_dir
  c.data.crop_size = pad
  c.data.eval_pad_size = pad
  c.batch_size = c.eval_batch_size = 2
  c.progress_bar = c.tensorboard = c.figures = False
  return c


def _checkpoint(config, workdir):
  """The initialised model saved as the workdir's checkpoint (step 0)."""
  run = loop.Run(config, workdir)
  run.checkpointer.save(run.initial_state(), force=True)
  run.checkpointer.close()


def _official_scores(preds, gts):
  args = copy.deepcopy(official.args)
  args.quiet, args.JSONOutput, args.evalPixelAccuracy, args.evalInstLevelScore = True, False, False, True
  if hasattr(np, "in1d"):
    return official.evaluateImgLists(preds, gts, args), args
  np.in1d = np.isin  # cityscapesScripts 2.3 calls np.in1d, which NumPy 2.4 removed
  try:
    return official.evaluateImgLists(preds, gts, args), args
  finally:
    del np.in1d


def test_cityscapes_predictions_score_as_jaxseg_evaluates_them(tmp_path):
  manual, data_dir = str(tmp_path / "manual"), str(tmp_path / "data")
  testing.write_cityscapes(manual, frames={"train": ["aachen_000000_000019"], "val": VAL, "test": TEST},
                           size=SIZE, archive=True)
  config = _config("cityscapes", data_dir, manual, SIZE)
  workdir = str(tmp_path / "run")
  _checkpoint(config, workdir)
  config.predict.output_dir = str(tmp_path / "out")
  summary = prediction.predict_checkpoint(config, workdir)
  assert (summary["layout"], summary["num_images"], summary["written"]) == ("cityscapes", 3, 3)
  assert summary["compilations"] == 1 and summary["folder"] == str(tmp_path / "out" / "labelIds")
  gts = []
  for stem in VAL:
    city = stem.split("_")[0]
    gts.append(os.path.join(manual, "gt", "gtFine", "val", city, f"{stem}_gtFine_labelIds.png"))
  # the ground truth as cityscapesScripts reads it: extracted from the zip
  import zipfile

  with zipfile.ZipFile(os.path.join(manual, "gtFine_trainvaltest.zip")) as z:
    z.extractall(os.path.join(manual, "gt"))
  args = copy.deepcopy(official.args)
  args.predictionPath, args.predictionWalk = summary["folder"], None
  preds = [official.getPrediction(args, gt) for gt in gts]  # the benchmark's file lookup
  assert preds == [os.path.join(summary["folder"], f"{stem}.png") for stem in VAL]
  for p in preds:
    with Image.open(p) as img:
      assert img.mode == "L" and img.size == (SIZE[1], SIZE[0])
  want, _ = _official_scores(preds, gts)
  got = loop.evaluate_checkpoint(config, workdir)
  names = list(got["per_class_iou"])
  for mine, theirs in [("per_class_iou", "classScores"), ("per_class_iiou", "classInstScores"),
                       ("per_category_iou", "categoryScores"), ("per_category_iiou", "categoryInstScores")]:
    for name, value in got[mine].items():
      ref = want[theirs][name]
      assert (value is None and np.isnan(ref)) or abs(value - ref) < 1e-6, (mine, name, value, ref)
  for mine, theirs in [("miou", "averageScoreClasses"), ("iiou", "averageScoreInstClasses"),
                       ("category_miou", "averageScoreCategories"),
                       ("category_iiou", "averageScoreInstCategories")]:
    assert abs(got[mine] - want[theirs]) < 1e-6, (mine, got[mine], want[theirs])
  assert sum(v is not None and v > 0 for v in got["per_class_iou"].values()) >= 3, got  # not vacuous
  assert len(names) == 19

  config.predict.split = "test"
  summary = prediction.predict_checkpoint(config, workdir)
  assert summary["num_images"] == 2 and summary["archive"] is None
  written = sorted(f for f in os.listdir(summary["folder"]) if f.startswith(("berlin", "bonn")))
  assert written == [f"{stem}.png" for stem in TEST]


VOC_TEST = ["2008_000001", "2008_000004", "2009_000012"]


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
  """A VOC run (step-0 checkpoint) and the config file train.py reads."""
  tmp = tmp_path_factory.mktemp("voc_predict")
  manual, data_dir = str(tmp / "manual"), str(tmp / "data")
  testing.write_voc_sbd(manual, voc_train=["a1"], voc_val=["b1"], sbd_train=[], sbd_val=[], size=(20, 24))
  testing.write_voc_test(manual, ids=VOC_TEST, size=[(20, 30), (30, 20)])
  config = _config("voc2012_segmentation", data_dir, manual, (32, 32))
  _checkpoint(config, str(tmp / "run"))
  # The command-line run starts now and runs next to the in-process tests.
  broken = tmp / "broken"
  broken.mkdir()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(broken / "fine.png")
  (broken / "scan.jpg").write_bytes(b"this is no JPEG")
  config_file = tmp / "voc_tiny.py"
  config_file.write_text(textwrap.dedent(f'''
      from configs import common
      def get_config():
        c = common.base_config(common.data_config("voc2012_segmentation"))
        c.model.name = "unet_small"
        c.model.options = {{"base_channels": 4, "depth": 2}}
        c.loss.name = "cross_entropy"
        c.data.data_dir, c.data.manual_dir = {data_dir!r}, {manual!r}
        c.data.crop_size = c.data.eval_pad_size = (32, 32)
        c.batch_size = c.eval_batch_size = 2
        c.tensorboard = c.figures = False
        return c
  '''))
  cli = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), "--mode=predict", "--config", str(config_file),
       "--workdir", str(tmp / "run"), f"--config.predict.input_dir={broken}",
       f"--config.predict.output_dir={tmp / 'out_broken'}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  yield dict(tmp=tmp, config=config, workdir=str(tmp / "run"), cli=cli, broken=broken)
  if cli.poll() is None:
    cli.kill()
    cli.wait()


def test_voc_test_split_in_the_servers_layout(voc_run):
  config = copy.deepcopy(voc_run["config"])
  out = voc_run["tmp"] / "out"
  config.predict.split, config.predict.output_dir = "test", str(out)
  config.predict.overlays = config.predict.probabilities = True
  summary = prediction.predict_checkpoint(config, voc_run["workdir"])
  assert summary["layout"] == "voc" and summary["archive"] == str(out / "results.tgz")
  folder = out / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
  sizes = dict(zip(VOC_TEST, [(20, 30), (30, 20), (20, 30)]))
  for i, (h, w) in sizes.items():
    with Image.open(folder / f"{i}.png") as img:
      assert img.mode == "P" and img.size == (w, h) and np.asarray(img).max() < 21
    assert Image.open(out / "overlays" / f"{i}.png").size == (w, h)
    with np.load(out / "probabilities" / f"{i}.npz") as z:
      assert z["probabilities"].shape == (h, w, 21) and z["probabilities"].dtype == np.float16
  with tarfile.open(summary["archive"]) as tar:
    assert sorted(tar.getnames()) == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in VOC_TEST]


def test_folder_of_mixed_sizes_compiles_once_per_bucket(voc_run):
  config = copy.deepcopy(voc_run["config"])
  folder = voc_run["tmp"] / "photos"
  sizes = {"a": (20, 30), "b": (50, 60), "c": (70, 50), "d": (64, 64), "e": (100, 120), "f": (30, 20),
           "g/h": (47, 33), "g/i": (90, 90)}
  rng = np.random.default_rng(0)
  for name, (h, w) in sizes.items():
    os.makedirs(os.path.dirname(folder / name), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
  config.predict.input_dir = config.predict.output_dir = str(folder)  # outputs never read back
  summary = prediction.predict_checkpoint(config, voc_run["workdir"])
  # 8 images of 8 sizes in 4 buckets (64x64, 96x64, 96x96, 128x128): 4 compilations
  assert summary["layout"] == "indexed" and summary["num_images"] == 8
  assert summary["compilations"] == 4
  assert sorted(s[1:3] for s in summary["shapes"]) == [(64, 64), (96, 64), (96, 96), (128, 128)]
  for name, (h, w) in sizes.items():
    with Image.open(folder / "predictions" / f"{name}.png") as img:
      assert img.size == (w, h) and img.mode == "P"
  run = loop.Run(config, voc_run["workdir"])
  assert prediction.open_inputs(run, "", str(folder), str(folder)).num_examples == 8  # a second run
  with pytest.raises(prediction.ConfigError, match="config.predict.split: Unknown split 'tset'"):
    prediction.open_inputs(run, "tset", "", str(folder))
  run.checkpointer.close()


def test_predict_command_line_names_an_unreadable_image(voc_run):
  out, err = voc_run["cli"].communicate(timeout=300)
  assert voc_run["cli"].returncode == 1, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and f"{voc_run['broken']}/scan.jpg" in errors[0], err[-3000:]
  assert not (voc_run["tmp"] / "out_broken").exists()  # nothing written before the error
