"""The loss study (experiments/loss_study.py): every recipe's config and loss build, the recipes
share model, optimiser and budget, the statistics over seeds, and the --smoke run end to end
(cached on a second call)."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import loss_study

pytestmark = pytest.mark.usefixtures("compilation_cache")

ALL = [*loss_study.RECIPES, *loss_study.BINARY_RECIPES]


@pytest.fixture(scope="module")
def settings():
  return loss_study.study_settings(smoke=False)


@pytest.fixture(scope="module")
def surrogate_root(tmp_path_factory):
  """A study root whose seed-0 CE run has a NeuroIoU surrogate file (an untrained one)."""
  from jaxseg.losses import neuroiou
  root = tmp_path_factory.mktemp("study")
  os.makedirs(loss_study.ce_workdir(str(root), 0))
  path = os.path.join(loss_study.ce_workdir(str(root), 0), "neuroiou_prob6.msgpack")
  neuroiou.save_surrogate(path, neuroiou.init_surrogate(jax.random.key(0)))
  return str(root)


@pytest.mark.parametrize("name", ALL)
def test_every_recipe_builds_its_config_and_loss(name, settings, surrogate_root):
  from jaxseg.training import loop
  from jaxseg.training.loss_setup import create_loss
  from jaxseg.sharding import create_mesh
  import jax.numpy as jnp
  binary = name in loss_study.BINARY_RECIPES
  config = loss_study.recipe_config(name, 0, settings, surrogate_root, "car" if binary else None)
  loop.validate_config(config)
  num_classes = 1 if binary else 9
  if binary:
    assert config.binary_class == config.init_from.binary_head.class_index == 4  # car
  loss = create_loss(config, create_mesh(), num_classes=num_classes)
  logits = jnp.linspace(-2, 2, 2 * 8 * 8 * num_classes).reshape(2, 8, 8, num_classes)
  labels = (jnp.arange(2 * 8 * 8).reshape(2, 8, 8) % (2 if num_classes == 1 else 9))
  assert jax.eval_shape(loss, logits, labels).shape == ()  # traced, not compiled


def test_recipes_share_model_optimiser_and_budget(settings, surrogate_root):
  """Same model, optimiser and batch everywhere; N steps from scratch, or N - K of the seed's
  CE run then K: every recipe sees N updates."""
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  ce = loss_study.recipe_config("ce", 0, settings, surrogate_root)
  lr_at_start = loss_study.finetune_learning_rate(settings)
  assert 0 < lr_at_start < ce.schedule.base_lr
  for name in ALL:
    c = loss_study.recipe_config(name, 1, settings, surrogate_root,
                                 "wire" if name in loss_study.BINARY_RECIPES else None)
    assert (c.model.name, c.batch_size, c.optim.to_dict(), c.data.name, c.seed) == (
        ce.model.name, ce.batch_size, ce.optim.to_dict(), ce.data.name, 1)
    if c.init_from.checkpoint:
      assert c.init_from.checkpoint.startswith(loss_study.ce_workdir(surrogate_root, 1))
      assert (c.init_from.step, c.num_train_steps) == (n - k, k)
      assert c.schedule.base_lr == pytest.approx(lr_at_start)
    else:
      assert (c.num_train_steps, c.schedule.to_dict()) == (n, ce.schedule.to_dict())
  # the CE run keeps the checkpoint every fine-tuning recipe starts from
  assert (n - k) % ce.checkpoint_every_steps == 0 and ce.keep_checkpoints >= 2


def test_study_data_is_imbalanced_with_rare_classes(settings):
  names, freq = loss_study.class_frequencies(settings)
  assert len(names) == freq.size and freq.sum() == pytest.approx(1.0)
  assert freq.max() >= 100 * freq.min()
  for fg in settings["binary_classes"]:
    assert 0 < loss_study.class_index(settings, fg) < len(names)
  with pytest.raises(ValueError, match="not a class of streets"):
    loss_study.class_index(settings, "bicycle")


def _fake_result(recipe, seed, miou, names, foreground=None):
  per_class = {n: miou + 0.01 * i for i, n in enumerate(names)}
  return {"recipe": recipe, "seed": seed, "miou": miou, "image_miou": miou / 2,
          "per_class_iou": per_class, "per_class_image_iou": per_class, "foreground": foreground}


def test_aggregate_means_and_sample_std():
  names = ["a", "b", "c", "d"]
  freq = np.array([0.5, 0.3, 0.05, 0.15])
  results = [_fake_result("ce", s, m, names) for s, m in enumerate([0.4, 0.5, 0.6])]
  binary_names = ["not b", "b"]
  results += [_fake_result("binary_ce", s, m, binary_names, "b") for s, m in enumerate([0.2, 0.4])]
  results += [_fake_result("binary_ce", s, m, ["not d", "d"], "d")
              for s, m in enumerate([0.5, 0.5])]
  study = loss_study.aggregate(results, names, freq)
  assert study["rarest"] == ["c", "d", "b"]
  row = study["table"]["ce"]
  assert row["miou"] == pytest.approx((0.5, 0.1))
  assert row["image_miou"] == pytest.approx((0.25, 0.05))
  assert row["iou/c"] == pytest.approx((0.52, 0.1))
  assert study["table"]["binary_ce/b"]["foreground"] == "b"
  assert study["table"]["binary_ce/b"]["image_iou"] == pytest.approx((0.31, np.sqrt(0.02)))
  assert study["table"]["binary_ce/d"]["iou"] == pytest.approx((0.51, 0.0))
  text = loss_study.markdown_report(study, names, freq, loss_study.study_settings(True))
  assert "| cross-entropy | 50.0 ± 10.0 | 25.0 ± 5.0 | 52.0 ± 10.0 |" in text
  assert "10x" in text and "| b | binary cross-entropy | 31.0 ± 14.1 |" in text
  assert "| d | binary cross-entropy | 51.0 ± 0.0 | 51.0 ± 0.0 |" in text


def test_smoke_run_end_to_end_and_cached(tmp_path):
  root, report = str(tmp_path / "runs"), str(tmp_path / "report")
  args = ["--smoke", "--workdir", root, "--report_dir", report]
  study = loss_study.main(args)
  assert set(study["table"]) == {"ce", "ce_start", "binary_lovasz_hinge/car"}
  for name in ("loss_study.md", "loss_study.json", "loss_study.png"):
    assert os.path.getsize(os.path.join(report, name)) > 0
  with open(os.path.join(report, "loss_study.json")) as f:
    saved = json.load(f)
  assert {r["recipe"] for r in saved["runs"]} == {"ce", "binary_lovasz_hinge"}
  assert 0 <= saved["runs"][0]["miou"] <= 1
  # a second call reads every result back instead of training again
  result = os.path.join(root, "ce_seed0", "result.json")
  mtime = os.path.getmtime(result)
  assert loss_study.main(args)["table"]["ce"] == study["table"]["ce"]
  assert os.path.getmtime(result) == mtime


# ----------------------------------------------------------------------------------------------
# The NeuroIoU investigation (experiments/neuroiou_study.py)
# ----------------------------------------------------------------------------------------------


def test_neuroiou_variants_change_only_what_they_name(settings, surrogate_root):
  from experiments import neuroiou_study as ns
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  base = loss_study.recipe_config("neuroiou", 0, settings, surrogate_root)
  for variant in ns.VARIANTS:
    c = ns.variant_config(variant, 0, settings, surrogate_root)
    assert (c.init_from.step, c.num_train_steps, c.model.name) == (n - k, k, base.model.name)
  sgd = ns.variant_config("paper_sgd", 0, settings, surrogate_root)
  assert (sgd.optim.name, sgd.optim.momentum, sgd.optim.weight_decay) == ("sgd", 0.99, 5e-4)
  assert (sgd.schedule.name, sgd.schedule.base_lr) == ("constant", 1e-5)
  for variant, lr in (("adam_1e-5", 1e-5), ("adam_3e-5", 3e-5), ("adam_1e-4", 1e-4),
                      ("refit_1e-4", 1e-4)):
    c = ns.variant_config(variant, 0, settings, surrogate_root)
    assert c.optim.to_dict() == base.optim.to_dict()
    assert (c.schedule.name, c.schedule.base_lr) == ("constant", lr)
  assert ns.variant_config("study", 0, settings, surrogate_root).to_dict() == base.to_dict()
  plus = ns.variant_config("plus_ce", 0, settings, surrogate_root)
  assert [t["name"] for t in plus.loss.terms] == ["neuroiou", "cross_entropy"]
  chunk = ns.variant_config("refit_1e-4", 0, settings, surrogate_root, steps=k // 3,
                            init_checkpoint="/x/checkpoints", surrogate_path="/x/s.msgpack")
  assert (chunk.num_train_steps, chunk.init_from.checkpoint, chunk.init_from.step) == (
      k // 3, "/x/checkpoints", -1)
  assert chunk.loss.kwargs.surrogate_path == "/x/s.msgpack"


def test_neuroiou_report_changes_from_the_start():
  from experiments import neuroiou_study as ns
  def run(seed, miou, start):
    error = {"true_loss": 0.5, "predicted_loss": 0.45, "mse": 0.01}
    return {"variant": "paper_sgd", "seed": seed, "miou": miou, "start_miou": start,
            "image_miou": miou, "training_loss": [[0.6, 0.7]], "surrogate_at_start": error,
            "surrogate_at_end": error}
  control = [{"seed": 0, "miou": 0.5, "start_miou": 0.4},
             {"seed": 1, "miou": 0.6, "start_miou": 0.4}]
  text = ns.markdown_report([run(0, 0.50, 0.45), run(1, 0.40, 0.45)], control)
  assert ("| 45.0 ± 7.1 | +0.0 ± 7.1 | 0.600 → 0.700 | 0.0100 → 0.0100 | 0.500 (0.450) |"
          in text)
  assert "(`ce_restart`) | 55.0 ± 7.1 | +15.0 ± 7.1 |" in text


def test_neuroiou_descent_report_rows():
  from experiments import neuroiou_study as ns
  point = {"step": 0, "surrogate": 0.5, "true_iou_loss": 0.52, "accuracy": 0.87}
  text = ns.descent_report({"logits": [point], "params_0.0007": [point, {**point, "step": 10}]})
  assert "| Adam on the logits, lr 0.05 | 0.500 / 0.520 / 0.870 |" in text
  assert "| Adam on the parameters, lr 0.0007 |" in text and "step 0" in text


@pytest.mark.parametrize("argv, message", [
    (["--recipes", "ce,nope"], "--recipes: unknown ['nope']"),
    (["--seeds", "0,x"], "--seeds takes non-negative integers"),
])
def test_bad_flags_stop_with_one_usage_error(argv, message, capsys):
  with pytest.raises(SystemExit) as info:
    loss_study.parse_args(argv)
  assert info.value.code == 2 and message in capsys.readouterr().err
