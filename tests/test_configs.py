"""Every training config of this project (``configs/*.py``, the trainer's own) loads, and runs a
couple of steps, end to end, on tiny data in the official layouts with tiny crops.

The experiment's structure is kept (loss, optimiser, schedule, parameter groups, frozen
BatchNorm, loss at the feature stride, equibatch, class weighting, multi-scale evaluation,
fine-tuning from another run's checkpoint, the binary head); only the sizes shrink: the
ResNet-101 models are swapped for their registered small variants, ENet for a small U-Net (its
compile time), crops and batches are tiny, and runs are 2 steps. Fine-tuning configs start from the checkpoints of the tiny runs of
the configs they follow (binary Lovász hinge from the 21-class cross-entropy run, ENet Lovász
from the weighted cross-entropy run).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxseg.data import testing
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import initialization
from jaxseg.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["default", "voc_deeplabv2_ce", "voc_deeplabv2_ce_equibatch", "voc_deeplabv2_lovasz",
           "voc_deeplabv2_lovasz_equibatch", "voc_binary_lovasz_hinge",
           "cityscapes_enet_weighted_ce", "cityscapes_enet_lovasz", "voc_deeplabv3plus_lovasz",
           "cityscapes_deeplabv3plus_lovasz"]
# Cheaper stand-ins of the same family; ENet (30 bottlenecks, about 50 s to compile per config on
# two cores even at width 1/2, tested by tests/test_models.py) is replaced by a small U-Net.
SMALL = {"deeplabv2_resnet101": ("deeplabv2_resnet18_small", None),
         "deeplabv3plus_resnet101": ("deeplabv3plus_resnet18_small", None),
         "enet": ("unet_small", {"base_channels": 4, "depth": 2}),
         "unet_small": ("unet_small", None)}


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                os.path.join(ROOT, "configs", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  voc_manual = str(root / "voc_manual")
  testing.write_voc_sbd(voc_manual, size=(40, 44), archive=False,
                        voc_train=["2007_000032", "2007_000039", "2008_000002", "2008_000003"],
                        voc_val=["2007_000033", "2007_000042"],
                        sbd_train=["2008_000010", "2008_000011"], sbd_val=["2008_000012"])
  cs_manual = str(root / "cs_manual")
  testing.write_cityscapes(cs_manual, size=(16, 32), archive=False, frames={
      "train": ["aachen_000000_000019", "aachen_000001_000019"],
      "val": ["frankfurt_000000_000294", "lindau_000000_000019"],
      "test": ["berlin_000000_000019"]})
  return {"voc2012_segmentation": (voc_manual, str(root / "voc_data")),
          "cityscapes": (cs_manual, str(root / "cs_data"))}


def shrink(c, datasets, workdir_of=None):
  """Tiny sizes for a config, keeping its structure."""
  c.model.name, options = SMALL[c.model.name]
  if options is not None:
    c.model.options = options
  if c.model.name.startswith("deeplabv3plus"):
    # One view at evaluation (the multi-scale + flip code is covered by tests/test_evaluate.py
    # and by the DeepLab-v2 configs' three scales here).
    c.eval.scales, c.eval.flip = (1.0,), False
  name = c.data.name
  if name in datasets:
    c.data.manual_dir, c.data.data_dir = datasets[name]
    if name == "cityscapes":
      c.data.crop_size = (8, 16)
      c.data.eval_pad_size = (16, 32)
    else:  # DeepLab-v2: 33 -> 5 x 5 logits at stride 8; DeepLab-v3+ (stride 16) smaller still
      c.data.crop_size = (17, 17) if c.model.name.startswith("deeplabv3plus") else (33, 33)
      c.data.eval_pad_size = (40, 44)
  else:  # shapes
    c.data.crop_size = (16, 16)
    c.data.options = {"image_size": 16, "num_train": 8, "num_validation": 4, "seed": 0}
  c.batch_size = 2
  c.eval_batch_size = 2
  c.num_train_steps = 2
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 2
  c.eval.max_batches = 1
  c.progress_bar = False
  c.tensorboard = False
  c.figures = False
  if c.schedule.get("warmup_steps", 0):
    c.schedule.warmup_steps = 1
  return c


def test_every_config_loads_with_the_contract_fields():
  for name in CONFIGS:
    c = load(name)
    for field in loop.REQUIRED_FIELDS + ("eval", "init_from", "distributed"):
      assert field in c, (name, field)
    for field in ("name", "train_split", "eval_split", "crop_size", "scale_range", "flip", "mean",
                  "std", "eval_pad_size", "equibatch", "options"):
      assert field in c.data, (name, field)
    loop.validate_config(c)


def test_paper_recipe_fields():
  c = load("voc_deeplabv2_lovasz")
  assert (c.batch_size, c.data.crop_size, c.num_train_steps) == (10, (321, 321), 20000)
  assert (c.optim.name, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.9, 5e-4)
  assert (c.schedule.name, c.schedule.base_lr, c.schedule.power) == ("poly", 2.5e-4, 0.9)
  assert c.model.options.frozen_batchnorm and c.model.options.logits_stride
  assert c.loss.name == "lovasz_softmax" and not c.loss.kwargs.per_image
  assert c.eval.scales == (1.0, 0.75, 0.5)
  assert load("voc_deeplabv2_lovasz_equibatch").num_train_steps == 30000
  assert load("voc_deeplabv2_lovasz_equibatch").data.equibatch
  assert load("voc_deeplabv2_ce").loss.name == "cross_entropy"
  enet = load("cityscapes_enet_lovasz")
  assert (enet.optim.name, enet.schedule.base_lr, enet.batch_size) == ("adam", 2.5e-4, 10)
  assert (enet.num_train_steps, enet.eval_every_steps, enet.checkpoint_every_steps) == (
      10000, 1000, 1000)
  b = load("voc_binary_lovasz_hinge", "7")
  assert (b.binary_class, b.num_classes, b.init_from.binary_head.class_index) == (7, 1, 7)
  b.steps_per_epoch = 40
  assert b.num_train_steps == 80  # two epochs follow steps_per_epoch
  assert list(b.schedule.learning_rates) == [5e-4, 1e-4]


@pytest.fixture(scope="module")
def runs(datasets, tmp_path_factory):
  return {"dirs": {}, "summaries": {}, "tmp": tmp_path_factory}


# Fine-tuning configs and the run whose last checkpoint each starts from.
SOURCE_RUN = {"voc_binary_lovasz_hinge": "voc_deeplabv2_ce",
              "cityscapes_enet_lovasz": "cityscapes_enet_weighted_ce"}
# The binary run's class: bird, the largest objects of the tiny train images (in 2 of them), so
# that the loss at stride 8 sees foreground pixels (with a smaller class it sees none, the source
# model puts every pixel beyond the background margin, and the loss and its gradient are 0).
BIRD = 3
HEAD = r"^aspp_\d+/"  # DeepLab-v2's classifier: the four ASPP branches (kernel and bias)


def flat(tree):
  """A checkpoint collection as ``{"module/.../leaf": float64 array}``."""
  return {"/".join(str(p.key) for p in path): np.asarray(v, np.float64)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def relative_distance(a, b, keys):
  """``||a - b|| / ||b||`` over the leaves ``keys`` of two :func:`flat` dicts."""
  return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in keys)
                       / sum(np.sum(b[k] ** 2) for k in keys)))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_a_few_steps(name, runs, datasets):
  tmp = runs["tmp"]
  binary = name == "voc_binary_lovasz_hinge"
  c = shrink(load(name, str(BIRD)) if binary else load(name), datasets)
  if binary:
    c.steps_per_epoch = 1
  if name in SOURCE_RUN:
    c.init_from.checkpoint = runs["dirs"][SOURCE_RUN[name]]
    # Not the source run's seed (0): a fresh initialisation is then far from the source's weights.
    c.seed = 1
  workdir = str(tmp.mktemp(name))
  summary = loop.train_and_evaluate(c, workdir)
  runs["dirs"][name] = workdir
  assert summary["step"] == 2
  assert 0.0 <= summary["pixel_accuracy"] <= 1.0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(l) for l in f]
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in train)
  tree, step = ckpt_lib.restore_raw(workdir)
  assert step == 2
  params = flat(tree["params"])
  if name.startswith("cityscapes"):
    # What the Cityscapes benchmark reports, in the summary, eval_<step>.json and metrics.jsonl.
    # (Their values against cityscapesScripts: tests/test_cityscapes_official.py.)
    for key in ("iiou", "category_miou", "category_iiou", "per_class_iiou", "per_category_iou",
                "per_category_iiou"):
      assert key in summary, key
    assert list(summary["per_category_iou"]) == ["flat", "construction", "object", "nature",
                                                 "sky", "human", "vehicle"]
    assert set(summary["per_category_iiou"]) == {"human", "vehicle"}
    with open(os.path.join(workdir, "eval_000002.json")) as f:
      assert set(json.load(f)) >= {"iiou", "category_miou", "category_iiou"}
    logged = [r for r in records if r["split"] == "eval"][-1]
    assert "category_miou" in logged and any(k.startswith("category_iou/") for k in logged)
  if binary:
    assert set(summary["per_class_iou"]) == {"not bird", "bird"}
    assert train[0]["loss"] > 0, "the binary run saw no pixel with a positive hinge: nothing trains"
  if name in SOURCE_RUN:
    # The run started from the source's last weights, the binary head from bird's classifier minus
    # the background's (W_3 - W_0, b_3 - b_0 of each ASPP branch): after two small steps every
    # other weight is within 5% of the source's (measured: 0.04% binary, 0.2% ENet stand-in; with
    # the checkpoint ignored, the fresh seed-1 weights end 111% and 119% away), and the head within
    # 35% of its start (measured: 18%; started from W_3 alone it ends 72% away) but more than 1%
    # away: it moved with the loss's gradient (weight decay alone moves it by 0.0003%).
    src, _ = ckpt_lib.restore_raw(runs["dirs"][SOURCE_RUN[name]])
    start = flat(src["params"])
    head = [k for k in start if binary and re.match(HEAD, k)]
    assert len(head) == (8 if binary else 0)
    for k in head:
      start[k] = start[k][..., BIRD:BIRD + 1] - start[k][..., :1]
    assert {k: v.shape for k, v in params.items()} == {k: v.shape for k, v in start.items()}
    assert relative_distance(params, start, [k for k in start if k not in head]) < 0.05
    if binary:
      assert 0.01 < relative_distance(params, start, head) < 0.35
  if name == "voc_deeplabv2_ce":
    # Frozen BatchNorm: statistics and affine parameters unchanged; the head moved. The initial
    # state is rebuilt as the trainer builds it (same config and seed; its programs are cached).
    run = loop.Run(c, str(tmp.mktemp(name + "_initial")))
    initial = jax.device_get(run.initial_state())
    run.checkpointer.close()
    first, stats, first_stats = flat(initial.params), flat(tree["batch_stats"]), flat(
        initial.batch_stats)
    layers = sorted({k.rsplit("/", 1)[0] for k in first_stats})
    assert len(layers) > 10 and set(stats) == set(first_stats)
    for layer in layers:
      for leaf in ("mean", "var"):
        np.testing.assert_array_equal(stats[f"{layer}/{leaf}"], first_stats[f"{layer}/{leaf}"],
                                      err_msg=layer)
      for leaf in ("scale", "bias"):
        np.testing.assert_array_equal(params[f"{layer}/{leaf}"], first[f"{layer}/{leaf}"],
                                      err_msg=layer)
    # The head moved by 5% (10x learning rate; weight decay alone: 0.0003%), the rest by 0.005%
    # (also the check that ``initial`` is this run's start: another draw is about 110% away).
    head = [k for k in first if re.match(HEAD, k)]
    assert relative_distance(params, first, head) > 0.01
    assert relative_distance(params, first, [k for k in first if k not in head]) < 0.01


def test_missing_dataset_is_a_clear_error(tmp_path):
  c = load("voc_deeplabv2_lovasz")
  c.data.manual_dir = str(tmp_path / "empty")
  c.data.data_dir = str(tmp_path / "data")
  os.makedirs(c.data.manual_dir)
  with pytest.raises(FileNotFoundError, match="VOCtrainval_11-May-2012.tar"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))


def test_binary_head_initialisation_is_class_minus_background():
  from jaxseg.training.initialization import transfer_weights
  rng = np.random.default_rng(0)
  src = {"params": {"aspp_0": {"kernel": rng.normal(size=(3, 3, 4, 21)), "bias": rng.normal(size=21)},
                    "backbone": {"w": rng.normal(size=(2, 2))}}, "batch_stats": {}}
  tgt = {"params": {"aspp_0": {"kernel": np.zeros((3, 3, 4, 1), np.float32),
                               "bias": np.zeros(1, np.float32)},
                    "backbone": {"w": np.zeros((2, 2), np.float32)}}, "batch_stats": {}}
  new, stats = transfer_weights(tgt, src, binary_head={"pattern": r"^aspp_\d+/",
                                                       "class_index": 15, "background_index": 0})
  np.testing.assert_allclose(new["params"]["aspp_0"]["kernel"][..., 0],
                             src["params"]["aspp_0"]["kernel"][..., 15]
                             - src["params"]["aspp_0"]["kernel"][..., 0], rtol=1e-6)
  np.testing.assert_allclose(new["params"]["aspp_0"]["bias"][0],
                             src["params"]["aspp_0"]["bias"][15] - src["params"]["aspp_0"]["bias"][0],
                             rtol=1e-6)
  np.testing.assert_allclose(new["params"]["backbone"]["w"], src["params"]["backbone"]["w"],
                             rtol=1e-6)
  assert stats == {"copied": 1, "reinitialised": 0, "binary_head": 2}
  with pytest.raises(ckpt_lib.IncompatibleCheckpointError, match="reinit_pattern"):
    transfer_weights(tgt, src)


def test_cli_wrong_field_and_eval_mode(runs):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--workdir", "/nonexistent",
                        "--config.num_train_stepz=3"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
  assert bad.returncode != 0
  assert "num_train_stepz" in bad.stderr
  workdir = runs["dirs"].get("default")
  if workdir is None:
    pytest.skip("the default config's run did not happen")
  ok = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--mode=eval", "--workdir", workdir,
       "--config.model.name=unet_small", "--config.data.crop_size=(16, 16)",
       "--config.data.options.image_size=16", "--config.data.options.num_train=8",
       "--config.data.options.num_validation=4", "--config.eval_batch_size=2",
       "--config.eval.max_batches=1"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "mIoU" in ok.stdout and "majority-class baseline" in ok.stdout
  assert os.path.exists(os.path.join(workdir, "eval_000002_standalone.json"))


def test_init_from_torch_weights(tmp_path, datasets):
  """config.init_from.torch_weights loads a torchvision-format backbone (here: written from a
  differently seeded, shifted init of the same model) and leaves the new head fresh."""
  from jaxseg import models
  from jaxseg import sharding as mesh_lib
  c = shrink(load("voc_deeplabv2_lovasz"), datasets)
  model = models.create(c.model.name, 21, **c.model.options.to_dict())
  mesh = mesh_lib.create_mesh()
  # The trainer's own (jitted) initialisation: its program is cached from the runs above (an
  # eager Flax init took about 9 s more).
  donor = jax.device_get(initialization.initial_variables(c, model, jax.random.key(123, impl="rbg"), mesh))
  # Any initialisation has BatchNorm scale 1, bias 0, mean 0, var 1: shift every donor leaf (by
  # 0.1 to 0.5, variances stay positive) so that the comparisons below see what was imported.
  rng = np.random.default_rng(0)
  donor = jax.tree.map(lambda x: np.asarray(x) + rng.uniform(0.1, 0.5, x.shape).astype(x.dtype),
                       donor)
  state = {}
  for collection, suffixes in (("params", {"kernel": "weight", "scale": "weight", "bias": "bias"}),
                               ("batch_stats", {"mean": "running_mean", "var": "running_var"})):
    for path, value in jax.tree_util.tree_leaves_with_path(donor[collection]["backbone"]):
      names = [p.key for p in path]
      module = ".".join(re.sub(r"_(\d+)$", r".\1", n) for n in names[:-1])  # layer1_0 -> layer1.0
      value = np.asarray(value)
      if names[-1] == "kernel":
        value = value.transpose(3, 2, 0, 1)
      state[f"{module}.{suffixes[names[-1]]}"] = value
  path = str(tmp_path / "backbone.npz")
  np.savez(path, **state)
  c.init_from.torch_weights = path
  c.init_from.torch_options = {}
  got = jax.device_get(initialization.initial_variables(c, model, jax.random.key(0, impl="rbg"), mesh))
  for a, b in ((got["params"]["backbone"], donor["params"]["backbone"]),
               (got["batch_stats"], donor["batch_stats"])):
    assert jax.tree.leaves(a) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-6)
  assert np.abs(got["params"]["aspp_0"]["kernel"] - donor["params"]["aspp_0"]["kernel"]).max() > 0
  c.init_from.torch_weights = str(tmp_path / "missing.pth")
  with pytest.raises(FileNotFoundError, match="torch_weights"):
    initialization.initial_variables(c, model, jax.random.key(0, impl="rbg"), mesh)
