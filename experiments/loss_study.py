"""The loss study: every training loss of jaxseg on the same model, data, schedule and budget.

    python -m experiments.loss_study [--workdir runs/loss_study] [--report_dir docs/loss_study]
    python -m experiments.loss_study --smoke     # a small subset, tiny budget (< 1 minute)

Run from the repository root (it imports ``configs`` from there). Every (recipe, seed) trains
with ``jaxseg.training.loop.train_and_evaluate`` in its own workdir under
``--workdir``; a finished run leaves ``result.json`` there and is not run again, so an
interrupted study resumes where it stopped (a run cut mid-way resumes from its last checkpoint).
Once every run is done the program writes ``loss_study.md`` (the tables), ``loss_study.json``
(every number) and ``loss_study.png`` (the plot) under ``--report_dir``.

Design (the recipes of Berman et al., CVPR 2018, Sec. 4, Nagendar et al., BMVC 2018, Sec. 3.2,
and Yu et al., IJCV 2022, on data that runs anywhere):

* data: the embedded ``streets`` scenes (:mod:`jaxseg.data.synthetic`): strong class imbalance,
  small objects, thin structures, co-occurring classes;
* model, optimiser, budget: the small U-Net of ``configs/default.py``, Adam, batch 8, ``N`` steps
  in all for every recipe; a cosine schedule (``configs.common.shapes_unet_config``);
* recipes trained from scratch run ``N`` steps of their loss;
* fine-tuning recipes (the papers' "start from a cross-entropy network") start from the same
  seed's cross-entropy run at step ``N - K`` (the ``ce`` recipe's checkpoint) and train ``K``
  steps with a fresh Adam state and a cosine decay from the cross-entropy schedule's learning
  rate at ``N - K`` to 0; ``ce_restart`` is that protocol with cross-entropy itself (the control
  that separates the loss's effect from the restart's);
* the binary experiment (ibid. Sec. 4.2, Table 1): the ``ce`` network at ``N - K`` becomes a
  one-logit network for a foreground class (``BINARY_CLASSES``; its classifier ``W_c - W_0``,
  class 0 being the sky), fine-tuned ``K`` steps with binary cross-entropy, the hinge or the
  Lovász hinge (per image) on batches of which half contain the class; scored by the class's
  image-IoU (its IoU averaged over the validation images whose ground truth or prediction
  holds it);
* NeuroIoU: the surrogate is fitted on the seed's ``N - K`` cross-entropy network over the
  training images (``jaxseg.training.surrogate.fit_from_checkpoint`` with ``fit_surrogate.py``'s
  defaults), then frozen.

Reported per recipe, mean ± standard deviation over the seeds (ddof 1): the dataset mIoU, the
per-image mIoU and the IoU of the three rarest classes by training pixel frequency.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Quiet TensorFlow's C++ start-up logs (the input pipelines run on TensorFlow), as train.py does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from jaxseg._files import write_json  # noqa: E402

CE = {"name": "cross_entropy", "kwargs": {}}
LOVASZ_BATCH = {"name": "lovasz_softmax", "kwargs": {"classes": "present", "per_image": False}}
LOVASZ_IMAGE = {"name": "lovasz_softmax", "kwargs": {"classes": "present", "per_image": True}}

# name -> (label, loss entry, options). Options: finetune (start from the seed's CE run at
# N - K), equibatch, class_weighting, surrogate (fit a NeuroIoU surrogate first), margin.
RECIPES: dict[str, tuple[str, dict, dict]] = {
    "ce": ("cross-entropy", CE, {}),
    "weighted_ce": ("weighted cross-entropy (ENet weights)", CE, {"class_weighting": "enet"}),
    "focal": ("focal (gamma 2)", {"name": "focal", "kwargs": {"gamma": 2.0}}, {}),
    "soft_dice": ("soft Dice", {"name": "soft_dice", "kwargs": {}}, {}),
    "soft_jaccard": ("soft Jaccard", {"name": "soft_jaccard", "kwargs": {}}, {}),
    "lovasz_batch": ("Lovász-Softmax over the batch", LOVASZ_BATCH, {}),
    "lovasz_image": ("Lovász-Softmax per image", LOVASZ_IMAGE, {}),
    "ce_plus_lovasz": ("CE + Lovász-Softmax", {"terms": [CE, LOVASZ_BATCH]}, {}),
    "ce_equibatch": ("CE, equibatch", CE, {"equibatch": True}),
    "lovasz_equibatch": ("Lovász-Softmax, equibatch", LOVASZ_BATCH, {"equibatch": True}),
    "ce_restart": ("CE, restarted at N - K (control)", CE, {"finetune": True}),
    "ce_then_lovasz": ("CE, then Lovász-Softmax fine-tuning", LOVASZ_BATCH, {"finetune": True}),
    "neuroiou": ("CE, then NeuroIoU fine-tuning", {"name": "neuroiou", "kwargs": {}},
                 {"finetune": True, "surrogate": True}),
    "margin": ("CE, then margin-calibration fine-tuning", None, {"finetune": True, "margin": True}),
    "pixiou": ("CE, then PixIoU (reconstruction) fine-tuning",
               {"name": "pixiou", "kwargs": {}}, {"finetune": True}),
}
BINARY_RECIPES: dict[str, tuple[str, dict, dict]] = {
    "binary_ce": ("binary cross-entropy", {"name": "binary_cross_entropy", "kwargs": {}}, {}),
    "binary_hinge": ("hinge", {"name": "binary_hinge", "kwargs": {}}, {}),
    "binary_lovasz_hinge": ("Lovász hinge (per image)",
                            {"name": "lovasz_hinge", "kwargs": {"per_image": True}}, {}),
}
SMOKE_RECIPES = ("ce", "binary_lovasz_hinge")
# The binary experiment's foregrounds: a thin structure (the median-frequency object class, the
# first choice) and a compact object like the paper's VOC classes.
BINARY_CLASSES = ("wire", "car")


def study_settings(smoke: bool) -> dict:
  """The budget and data of the study (``smoke``: tiny, to check the program end to end)."""
  if smoke:
    return {"dataset": "streets", "num_train_steps": 6, "finetune_steps": 3,
            "options": {"num_train": 16, "num_validation": 8}, "binary_classes": ("car",),
            "surrogate_steps": 20}
  return {"dataset": "streets", "num_train_steps": 500, "finetune_steps": 150,
          "options": {}, "binary_classes": BINARY_CLASSES, "surrogate_steps": 5000}


def base_config(settings: dict, seed: int, loss) -> ml_collections.ConfigDict:
  """The config every recipe shares: ``configs.common.shapes_unet_config`` on the study's data,
  ``N`` steps, quiet (no progress bar, figures or TensorBoard), one final evaluation."""
  c = common.shapes_unet_config(loss or CE)
  c.data = common.data_config(settings["dataset"])
  c.data.options = {**c.data.options, **settings["options"]}
  c.seed = seed
  c.num_train_steps = settings["num_train_steps"]
  c.schedule.warmup_steps = min(c.schedule.warmup_steps, c.num_train_steps // 10)
  c.eval_every_steps = 0
  c.checkpoint_every_steps = c.num_train_steps
  c.keep_checkpoints = 1
  c.progress_bar = False
  c.figures = False
  c.tensorboard = False
  return c


def ce_workdir(root: str, seed: int) -> str:
  return os.path.join(root, f"ce_seed{seed}")


def finetune_learning_rate(settings: dict) -> float:
  """The cross-entropy schedule's learning rate at step ``N - K``: where fine-tuning starts."""
  from jaxseg.training import optim  # pylint: disable=g-import-not-at-top
  c = base_config(settings, 0, CE)
  schedule = optim.create_learning_rate_schedule(num_train_steps=c.num_train_steps,
                                                 **c.schedule.to_dict())
  return float(schedule(settings["num_train_steps"] - settings["finetune_steps"]))


def recipe_config(name: str, seed: int, settings: dict, root: str,
                  foreground: str | None = None) -> ml_collections.ConfigDict:
  """The full training config of recipe ``name`` (``RECIPES`` or ``BINARY_RECIPES``, those with
  the ``foreground`` class name) for ``seed``; fine-tuning recipes read the seed's CE run under
  ``root``."""
  binary = name in BINARY_RECIPES
  _, loss, options = (BINARY_RECIPES if binary else RECIPES)[name]
  c = base_config(settings, seed, loss)
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  if options.get("margin"):
    c.loss = common.margin_loss_entry(c.data)
  if options.get("class_weighting"):
    c.class_weighting = options["class_weighting"]
  c.data.equibatch = bool(options.get("equibatch", False))
  if name == "ce":  # keep the N - K checkpoint: the start of every fine-tuning recipe
    c.checkpoint_every_steps = n - k
    c.keep_checkpoints = 2
  if options.get("finetune") or binary:
    c.init_from.checkpoint = os.path.join(ce_workdir(root, seed), "checkpoints")
    c.init_from.step = n - k
    c.num_train_steps = k
    c.checkpoint_every_steps = k
    c.schedule.name = "cosine"
    c.schedule.base_lr = finetune_learning_rate(settings)
    c.schedule.warmup_steps = 0
  if options.get("surrogate"):
    c.loss.kwargs.surrogate_path = os.path.join(ce_workdir(root, seed), SURROGATE_FILE)
  if binary:
    fg = class_index(settings, foreground)
    c.num_classes = 1
    c.binary_class = fg
    c.data.class_balanced.class_id = fg
    c.data.class_balanced.fraction = 0.5
    c.init_from.binary_head.class_index = fg
    c.init_from.binary_head.background_index = 0
    c.init_from.binary_head.pattern = r"^classifier/(kernel|bias)$"
  return c


def class_frequencies(settings: dict) -> tuple[list[str], np.ndarray]:
  """Class names and training pixel frequencies of the study's data."""
  from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
  info = data_lib.dataset_info(settings["dataset"])
  options = base_config(settings, 0, CE).data.options.to_dict()
  stats = data_lib.split_statistics(settings["dataset"], "train", **options)
  return list(info.class_names), np.asarray(stats.class_frequencies, np.float64)


def class_index(settings: dict, name: str | None) -> int:
  """The index of the class ``name`` of the study's data."""
  from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
  names = list(data_lib.dataset_info(settings["dataset"]).class_names)
  if name not in names:
    raise ValueError(f"foreground {name!r} is not a class of {settings['dataset']}: {names}")
  return names.index(name)


SURROGATE_FILE = "neuroiou_prob6.msgpack"


def fit_neuroiou_surrogate(config, checkpoint_dir: str, step: int | None, seed: int,
                           settings: dict) -> str:
  """Fits a NeuroIoU surrogate on the network of a run's checkpoint (``None``: the latest) over
  the training images, unless the run already has one; returns its path. The defaults of
  :func:`jaxseg.training.surrogate.fit_from_checkpoint` (``fit_surrogate.py``'s: 6 probability
  features, 4 perturbations of each batch), ``settings["surrogate_steps"]`` Adam steps."""
  path = os.path.join(checkpoint_dir, SURROGATE_FILE)
  if os.path.exists(path):  # (written whole or not at all)
    return path
  from jaxseg.training import surrogate as surrogate_lib  # pylint: disable=g-import-not-at-top
  surrogate = surrogate_lib.fit_from_checkpoint(config, checkpoint_dir, path, step=step, seed=seed,
                                                steps=settings["surrogate_steps"])
  m = surrogate.metrics
  print(f"  NeuroIoU surrogate: {int(m['num_pairs'])} pairs, held-out MSE {m['val_mse']:.4f} "
        f"(mean predictor {m['val_baseline_mse']:.4f}), gradient agreement FN "
        f"{m['grad_fn_agreement']:.2f} FP {m['grad_fp_agreement']:.2f}", flush=True)
  return path


def run_workdir(root: str, name: str, seed: int, foreground: str | None = None) -> str:
  return os.path.join(root, f"{name}_{foreground}_seed{seed}" if foreground else
                      f"{name}_seed{seed}")


def run_recipe(name: str, seed: int, settings: dict, root: str,
               foreground: str | None = None) -> dict:
  """Trains and evaluates one (recipe, seed[, foreground]), or reads its cached
  ``result.json``."""
  workdir = run_workdir(root, name, seed, foreground)
  result_path = os.path.join(workdir, "result.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  from jaxseg.training.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  options = (BINARY_RECIPES.get(name) or RECIPES[name])[2]
  if options.get("surrogate"):
    fit_neuroiou_surrogate(recipe_config("ce", seed, settings, root), ce_workdir(root, seed),
                           settings["num_train_steps"] - settings["finetune_steps"], seed,
                           settings)
  config = recipe_config(name, seed, settings, root, foreground)
  start = time.time()
  summary = train_and_evaluate(config, workdir)
  result = {
      "recipe": name, "seed": seed, "foreground": foreground, "seconds": time.time() - start,
      "miou": summary["miou"], "image_miou": summary["image_miou"],
      "per_class_iou": summary["per_class_iou"],
      "per_class_image_iou": summary["per_class_image_iou"],
  }
  if name == "ce":  # the starting point of the fine-tuning recipes, scored too
    result["start"] = evaluate_start(config, workdir, settings)
  write_json(result_path, result)
  return result


def evaluate_start(config, workdir: str, settings: dict) -> dict:
  """The CE run's evaluation at step ``N - K`` (the fine-tuning recipes' starting point)."""
  from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
  step = settings["num_train_steps"] - settings["finetune_steps"]
  summary = loop.evaluate_checkpoint(config, workdir, step=step)
  return {"miou": summary["miou"], "image_miou": summary["image_miou"],
          "per_class_iou": summary["per_class_iou"]}


def mean_std(values) -> tuple[float, float]:
  v = np.asarray([np.nan if x is None else x for x in values], np.float64)
  std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
  return float(np.mean(v)), std


def aggregate(results: list[dict], names: list[str], freq: np.ndarray) -> dict:
  """Per recipe: mean and std over seeds of mIoU, per-image mIoU, the rarest classes' IoU;
  binary recipes: the foreground class's image-IoU and IoU."""
  rarest = [names[c] for c in np.argsort(freq)[:3]]
  table: dict[str, dict] = {}
  def key(r):
    return f"{r['recipe']}/{r['foreground']}" if r.get("foreground") else r["recipe"]

  for recipe in dict.fromkeys(key(r) for r in results):
    runs = [r for r in results if key(r) == recipe]
    row = {"recipe": runs[0]["recipe"], "seeds": [r["seed"] for r in runs]}
    if runs[0]["recipe"] in BINARY_RECIPES:
      fg = runs[0]["foreground"]
      row["foreground"] = fg
      row["image_iou"] = mean_std([r["per_class_image_iou"][fg] for r in runs])
      row["iou"] = mean_std([r["per_class_iou"][fg] for r in runs])
    else:
      row["miou"] = mean_std([r["miou"] for r in runs])
      row["image_miou"] = mean_std([r["image_miou"] for r in runs])
      for cls in rarest:
        row[f"iou/{cls}"] = mean_std([r["per_class_iou"][cls] for r in runs])
    table[recipe] = row
  starts = [r["start"] for r in results if r["recipe"] == "ce" and "start" in r]
  if starts:
    table["ce_start"] = {"seeds": [r["seed"] for r in results if r["recipe"] == "ce"],
                         "miou": mean_std([s["miou"] for s in starts]),
                         "image_miou": mean_std([s["image_miou"] for s in starts]),
                         **{f"iou/{c}": mean_std([s["per_class_iou"][c] for s in starts])
                            for c in rarest}}
  return {"rarest": rarest, "table": table}


def _pm(value: tuple[float, float]) -> str:
  return f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}"


def markdown_report(study: dict, names: list[str], freq: np.ndarray, settings: dict) -> str:
  """The study's tables as Markdown."""
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  rarest, table = study["rarest"], study["table"]
  lines = [f"Data `{settings['dataset']}`; {n} steps per recipe (fine-tuning: {n - k} of "
           f"cross-entropy, then {k}); mean ± std over seeds, in %.", "",
           "Training pixel frequencies: " + ", ".join(
               f"{name} {100 * f:.3g}%" for name, f in zip(names, freq)) +
           f" (most / least frequent: {freq.max() / max(freq.min(), 1e-12):.0f}x).", "",
           "| recipe | mIoU | per-image mIoU | " + " | ".join(f"IoU {c}" for c in rarest) + " |",
           "|---|---|---|" + "---|" * len(rarest)]
  labels = {**{k: v[0] for k, v in RECIPES.items()}, "ce_start": f"CE at step {n - k} "
            "(the fine-tuning start)"}
  for recipe, row in table.items():
    if "foreground" in row:
      continue
    lines.append(f"| {labels[recipe]} | {_pm(row['miou'])} | {_pm(row['image_miou'])} | " +
                 " | ".join(_pm(row[f"iou/{c}"]) for c in rarest) + " |")
  binary = [row for row in table.values() if "foreground" in row]
  if binary:
    lines += ["", f"Binary experiment ({k} fine-tuning steps from CE at step {n - k}; image-IoU: "
              "the foreground's IoU averaged over the validation images whose ground truth or "
              "prediction holds it):", "",
              "| foreground | fine-tuning loss | image-IoU | IoU |", "|---|---|---|---|"]
    for row in binary:
      lines.append(f"| {row['foreground']} | {BINARY_RECIPES[row['recipe']][0]} | "
                   f"{_pm(row['image_iou'])} | {_pm(row['iou'])} |")
  return "\n".join(lines) + "\n"


def plot_report(study: dict, path: str) -> None:
  """Bars with error bars: mIoU, per-image mIoU and the rarest classes' IoU per recipe."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  table = {k: v for k, v in study["table"].items() if "miou" in v}
  keys = ["miou", "image_miou"] + [f"iou/{c}" for c in study["rarest"]]
  fig, ax = plt.subplots(figsize=(12, 5), dpi=90)
  width = 0.8 / len(keys)
  x = np.arange(len(table))
  for i, key in enumerate(keys):
    means = [100 * row[key][0] for row in table.values()]
    stds = [100 * row[key][1] for row in table.values()]
    ax.bar(x + (i - (len(keys) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
           label=key.replace("iou/", "IoU "))
  ax.set_xticks(x, list(table), rotation=35, ha="right")
  ax.set_ylabel("%")
  ax.set_title("Loss study: mean ± std over seeds")
  ax.legend(fontsize=8, ncol=len(keys))
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def run_study(*, root: str, report_dir: str, seeds, recipes, smoke: bool) -> dict:
  """Runs every (recipe, seed) not yet cached under ``root``, then writes the report."""
  settings = study_settings(smoke)
  names, freq = class_frequencies(settings)
  print("Training pixel frequencies: " + ", ".join(
      f"{name} {100 * f:.3g}%" for name, f in zip(names, freq)), flush=True)
  recipes = list(recipes or (SMOKE_RECIPES if smoke else [*RECIPES, *BINARY_RECIPES]))
  unknown = [r for r in recipes if r not in RECIPES and r not in BINARY_RECIPES]
  if unknown:
    raise ValueError(f"recipes: unknown {unknown}; known: {[*RECIPES, *BINARY_RECIPES]}")
  if "ce" not in recipes:
    recipes.insert(0, "ce")  # every fine-tuning recipe starts from it
  results = []
  for seed in seeds:
    for name in recipes:
      for foreground in settings["binary_classes"] if name in BINARY_RECIPES else (None,):
        print(f"[{time.strftime('%H:%M:%S')}] {name}{f' ({foreground})' if foreground else ''}, "
              f"seed {seed}", flush=True)
        results.append(run_recipe(name, int(seed), settings, root, foreground))
  study = aggregate(results, names, freq)
  write_json(os.path.join(report_dir, "loss_study.json"),
             {"settings": settings, "class_names": names, "train_frequencies": freq.tolist(),
              "study": study, "runs": results})
  text = markdown_report(study, names, freq, settings)
  with open(os.path.join(report_dir, "loss_study.md"), "w") as f:
    f.write(text)
  plot_report(study, os.path.join(report_dir, "loss_study.png"))
  print(text, flush=True)
  return study


def enable_compilation_cache(root: str) -> None:
  """The seeds of a recipe compile the same programs: JAX's persistent cache under ``root``
  compiles them once."""
  jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jit_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/loss_study",
                      help="where each (recipe, seed) run trains (its cache)")
  parser.add_argument("--report_dir", default="docs/loss_study",
                      help="where loss_study.md, loss_study.json and loss_study.png are written")
  parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
  parser.add_argument("--recipes", default="",
                      help="recipes to run, comma-separated (default: all; see RECIPES and "
                      "BINARY_RECIPES)")
  parser.add_argument("--smoke", action="store_true",
                      help="two recipes, one seed, a tiny budget: checks the program end to end")
  args = parser.parse_args(argv)
  known = [*RECIPES, *BINARY_RECIPES]
  unknown = [r for r in args.recipes.split(",") if r and r not in known]
  if unknown:
    parser.error(f"--recipes: unknown {unknown}; known: {known}")
  if not all(s.strip().isdigit() for s in args.seeds.split(",") if s):
    parser.error(f"--seeds takes non-negative integers separated by commas, got {args.seeds!r}")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save and restore at INFO
  enable_compilation_cache(args.workdir)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  return run_study(root=args.workdir, report_dir=args.report_dir,
                   seeds=seeds[:1] if args.smoke else seeds,
                   recipes=[r for r in args.recipes.split(",") if r], smoke=args.smoke)


if __name__ == "__main__":
  main()
