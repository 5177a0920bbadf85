"""Why NeuroIoU fine-tuning loses mIoU on the loss study's data, and what changes that.

    python -m experiments.neuroiou_study [--study_dir runs/loss_study] \
        [--report_dir docs/loss_study]

Runs after ``experiments/loss_study.py`` (same ``--workdir``): it reuses each seed's
cross-entropy run, its step ``N - K`` checkpoint (the fine-tuning start) and the NeuroIoU
surrogate fitted there (Nagendar et al., BMVC 2018, Sec. 3.1: 6 probability features, MLP of 4
x 100), and the study's ``neuroiou`` run. Each variant fine-tunes ``K`` steps from the same start
(cached per (variant, seed) like the study). Writes ``neuroiou_study.md`` and
``neuroiou_study.json`` under ``--report_dir``.

Variants (``VARIANTS``), all from the same start for ``K`` steps:

* ``study``: the loss study's fine-tuning protocol (Adam, cosine decay from the CE schedule's
  learning rate at ``N - K``, 7e-4), the study's ``neuroiou`` run itself;
* ``paper_sgd``: the paper's optimiser (Sec. 4.1): SGD, momentum 0.99, weight decay 5e-4, fixed
  learning rate 1e-5;
* ``adam_1e-5``, ``adam_3e-5``, ``adam_1e-4``: the study's Adam at a fixed learning rate;
* ``refit_1e-4`` (an extension beyond the paper): ``adam_1e-4`` with the surrogate refitted on
  the fine-tuned network's own predictions every ``K / 3`` steps (each chunk starts a fresh Adam
  state from the last chunk's weights);
* ``plus_ce`` (an extension beyond the paper): the study's protocol with cross-entropy added to
  the NeuroIoU loss (its training loss column is then the sum).

Diagnostics, per variant and seed (and :func:`single_batch_descent` on the first seed): the
validation mIoU and its change from the start; the training loss (the surrogate's value) over
the first and last logged windows; the start surrogate's error on the fine-tuned network's own
training pairs (clean, no perturbation), against its error on the start network's pairs: if the
network had moved to where the surrogate is wrong (exploited it off the data it was fitted on),
the first would be much larger.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import loss_study  # noqa: E402
from jaxseg._files import write_json  # noqa: E402

# name -> (description, fixed learning rate (None: the study's schedule), changes).
VARIANTS: dict[str, tuple[str, float | None, dict]] = {
    "study": ("the loss study's protocol: Adam, cosine from the CE schedule's rate at N - K",
              None, {}),
    "paper_sgd": ("the paper's SGD: momentum 0.99, weight decay 5e-4, fixed lr 1e-5", 1e-5,
                  {"sgd": True}),
    "adam_1e-5": ("Adam, fixed lr 1e-5", 1e-5, {}),
    "adam_3e-5": ("Adam, fixed lr 3e-5", 3e-5, {}),
    "adam_1e-4": ("Adam, fixed lr 1e-4", 1e-4, {}),
    "refit_1e-4": ("Adam, fixed lr 1e-4, surrogate refitted every K/3 steps (extension)", 1e-4,
                   {"refit": True}),
    "plus_ce": ("the study's protocol, loss NeuroIoU + CE (extension)", None, {"plus_ce": True}),
}
REFIT_CHUNKS = 3


def variant_config(variant: str, seed: int, settings: dict, root: str, *, steps=None,
                   init_checkpoint=None, surrogate_path=None):
  """The fine-tuning config of ``variant`` (the study's ``neuroiou`` recipe, changed)."""
  _, learning_rate, changes = VARIANTS[variant]
  c = loss_study.recipe_config("neuroiou", seed, settings, root)
  if learning_rate is not None:
    c.schedule.name = "constant"
    c.schedule.base_lr = learning_rate
  if changes.get("sgd"):
    c.optim.name = "sgd"
    c.optim.momentum = 0.99
    c.optim.weight_decay = 5e-4
  if changes.get("plus_ce"):
    c.loss = {"terms": [c.loss.to_dict(), loss_study.CE]}
  if steps is not None:
    c.num_train_steps = c.checkpoint_every_steps = steps
  if init_checkpoint is not None:
    c.init_from.checkpoint = init_checkpoint
    c.init_from.step = -1
  if surrogate_path is not None:
    c.loss.kwargs.surrogate_path = surrogate_path
  return c


def surrogate_error(surrogate, config, workdir: str, step: int, max_batches: int) -> dict:
  """The surrogate's mean prediction, the mean true IoU loss and the MSE between them on the
  clean (image, class) pairs of a checkpoint's network over the training images."""
  from jaxseg.training import surrogate as surrogate_lib  # pylint: disable=g-import-not-at-top
  net = surrogate_lib.checkpoint_network(config, workdir, step=step)
  features, targets = surrogate_lib.generate_pairs(
      net.logits, net.batches(), num_perturbations=0, max_batches=max_batches,
      ignore_index=net.ignore_index)
  predicted = np.asarray(jax.device_get(surrogate(jax.numpy.asarray(features))), np.float64)
  return {"true_loss": float(np.mean(targets)), "predicted_loss": float(np.mean(predicted)),
          "mse": float(np.mean((predicted - targets) ** 2))}


DESCENT_RATES = (7e-4, 1e-4, 1e-5)
LOGIT_RATE = 0.05


def single_batch_descent(seed: int, settings: dict, root: str, *, steps: int = 40,
                         every: int = 10) -> dict:
  """Descends the start surrogate's NeuroIoU loss on one fixed batch of training images.

  From the seed's start network (CE at ``N - K``), on the first batch of the evaluation
  pipeline over the training split: Adam on the logits themselves (every pixel free; rate
  ``LOGIT_RATE``), and Adam on the network's parameters (evaluation mode, BatchNorm statistics
  fixed) at each rate of ``DESCENT_RATES``. Every ``every`` steps: the surrogate's value (the
  loss descended) and the true IoU loss of the arg-max (mean over the kept (image, class)
  pairs, Nagendar et al., Sec. 3.1) and the pixel accuracy.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxseg.losses import neuroiou  # pylint: disable=g-import-not-at-top
  from jaxseg.training import surrogate as surrogate_lib  # pylint: disable=g-import-not-at-top
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  ce_dir = loss_study.ce_workdir(root, seed)
  surrogate = neuroiou.load_surrogate(os.path.join(ce_dir, loss_study.SURROGATE_FILE))
  net = surrogate_lib.checkpoint_network(loss_study.recipe_config("ce", seed, settings, root),
                                         ce_dir, step=n - k)
  batch = next(iter(net.batches()))
  images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"]).astype(jnp.int32)

  def loss(logits):
    return neuroiou.neuroiou_loss(logits.astype(jnp.float32), labels, surrogate=surrogate,
                                  ignore_index=net.ignore_index)

  @jax.jit
  def measure(logits):
    _, targets, keep = neuroiou.neuroiou_statistics(logits, labels, kind=surrogate.kind,
                                                    num_inputs=surrogate.num_inputs,
                                                    ignore_index=net.ignore_index)
    valid = labels != net.ignore_index
    return {"surrogate": loss(logits),
            "true_iou_loss": jnp.sum(jnp.where(keep, targets, 0.0)) / jnp.sum(keep),
            "accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) & valid) / jnp.sum(valid)}

  def descend(x, fn, rate):
    tx = optax.adam(rate)
    update = jax.jit(lambda x, s: tx.update(jax.grad(lambda y: loss(fn(y)))(x), s, x))
    state, trace = tx.init(x), []
    for i in range(steps + 1):
      if i % every == 0:
        trace.append({"step": i, **{key: float(v) for key, v in measure(fn(x)).items()}})
      updates, state = update(x, state)
      x = optax.apply_updates(x, updates)
    return trace

  params, rest = net.variables["params"], {k: v for k, v in net.variables.items() if k != "params"}
  out = {"logits": descend(net.logits(images).astype(jnp.float32), lambda x: x, LOGIT_RATE)}
  for rate in DESCENT_RATES:
    out[f"params_{rate:g}"] = descend(params, lambda p: net.apply({"params": p, **rest}, images),
                                      rate)
  return out


def training_loss_ends(workdir: str) -> tuple[float, float]:
  """The logged training loss of the first and last windows of a run."""
  from jaxseg.viz import read_metrics  # pylint: disable=g-import-not-at-top
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  losses = [r["loss"] for r in rows if r.get("split") == "train"]
  return losses[0], losses[-1]


def run_variant(variant: str, seed: int, settings: dict, root: str, *, start_miou: float,
                start_error: Callable[[], dict]) -> dict:
  """Fine-tunes one (variant, seed) (cached in ``variant.json``) and measures it.

  ``start_miou`` is the start network's mIoU; ``start_error()`` the start surrogate's error on
  the start network's pairs (:func:`surrogate_error`, the same for every variant of a seed).
  """
  from jaxseg.losses import neuroiou  # pylint: disable=g-import-not-at-top
  from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
  k = settings["finetune_steps"]
  if variant == "study":  # the loss study's own run
    workdir = loss_study.run_workdir(root, "neuroiou", seed)
    loss_study.run_recipe("neuroiou", seed, settings, root)
  else:
    workdir = loss_study.run_workdir(root, f"neuroiou_{variant}", seed)
  result_path = os.path.join(workdir, "variant.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  start_surrogate = neuroiou.load_surrogate(
      os.path.join(loss_study.ce_workdir(root, seed), loss_study.SURROGATE_FILE))
  losses = []
  if VARIANTS[variant][2].get("refit"):  # chunks: the last one's weights, a surrogate refitted
    chunk_steps = k // REFIT_CHUNKS
    init, path = None, None
    for j in range(REFIT_CHUNKS):
      chunk = os.path.join(workdir, f"chunk{j}")
      config = variant_config(variant, seed, settings, root, steps=chunk_steps,
                              init_checkpoint=init, surrogate_path=path)
      summary = loop.train_and_evaluate(config, chunk)
      losses.append(training_loss_ends(chunk))
      init = os.path.join(chunk, "checkpoints")
      if j + 1 < REFIT_CHUNKS:
        path = loss_study.fit_neuroiou_surrogate(config, chunk, None, seed, settings)
    final_dir, final_step = chunk, chunk_steps
  else:
    config = variant_config(variant, seed, settings, root)
    summary = loop.train_and_evaluate(config, workdir)
    losses.append(training_loss_ends(workdir))
    final_dir, final_step = workdir, k
  result = {
      "variant": variant, "seed": seed, "miou": summary["miou"], "start_miou": start_miou,
      "image_miou": summary["image_miou"], "training_loss": losses,
      "surrogate_at_start": start_error(),
      "surrogate_at_end": surrogate_error(start_surrogate, config, final_dir, final_step,
                                          error_batches(settings)),
  }
  write_json(result_path, result)
  return result


def error_batches(settings: dict) -> int:
  """Batches of training images that :func:`surrogate_error` reads."""
  return 4 if settings["num_train_steps"] < 50 else 16


def markdown_report(results: list[dict], controls: list[dict]) -> str:
  """One row per variant: mean ± std over seeds (in %) and the diagnostics' means; then the
  study's ``ce_restart`` runs (``controls``), the same restart with cross-entropy."""
  lines = ["| fine-tuning | mIoU | change from the start | training loss, first → last window | "
           "start surrogate's MSE: start net → fine-tuned net | true IoU loss (predicted): "
           "fine-tuned net |", "|---|---|---|---|---|---|"]

  def scores(runs):
    miou = loss_study.mean_std([r["miou"] for r in runs])
    change = loss_study.mean_std([r["miou"] - r["start_miou"] for r in runs])
    return (f"{100 * miou[0]:.1f} ± {100 * miou[1]:.1f} | "
            f"{100 * change[0]:+.1f} ± {100 * change[1]:.1f}")

  for variant in dict.fromkeys(r["variant"] for r in results):
    runs = [r for r in results if r["variant"] == variant]
    first = np.mean([r["training_loss"][0][0] for r in runs])
    last = np.mean([r["training_loss"][-1][1] for r in runs])
    mse0 = np.mean([r["surrogate_at_start"]["mse"] for r in runs])
    mse1 = np.mean([r["surrogate_at_end"]["mse"] for r in runs])
    true1 = np.mean([r["surrogate_at_end"]["true_loss"] for r in runs])
    pred1 = np.mean([r["surrogate_at_end"]["predicted_loss"] for r in runs])
    lines.append(f"| {VARIANTS[variant][0]} | {scores(runs)} | {first:.3f} → {last:.3f} | "
                 f"{mse0:.4f} → {mse1:.4f} | {true1:.3f} ({pred1:.3f}) |")
  if controls:
    lines.append(f"| control: cross-entropy instead of NeuroIoU, the study's protocol "
                 f"(`ce_restart`) | {scores(controls)} | | | |")
  return "\n".join(lines) + "\n"


def descent_report(descent: dict) -> str:
  """The single-batch descents as a table: surrogate value / true IoU loss / accuracy."""
  steps = [t["step"] for t in descent["logits"]]
  lines = ["| descent on one batch (surrogate / true IoU loss / accuracy) | " +
           " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
  for key, trace in descent.items():
    what = (f"Adam on the logits, lr {LOGIT_RATE:g}" if key == "logits" else
            f"Adam on the parameters, lr {key.split('_', 1)[1]}")
    lines.append(f"| {what} | " + " | ".join(
        f"{t['surrogate']:.3f} / {t['true_iou_loss']:.3f} / {t['accuracy']:.3f}"
        for t in trace) + " |")
  return "\n".join(lines) + "\n"


def run_study(*, root: str, report_dir: str, seeds, variants, smoke: bool) -> list[dict]:
  settings = loss_study.study_settings(smoke)
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f"variants: unknown {unknown}; known: {list(VARIANTS)}")
  from jaxseg.losses import neuroiou  # pylint: disable=g-import-not-at-top
  n, k = settings["num_train_steps"], settings["finetune_steps"]
  results, controls = [], []
  for seed in seeds:
    start = loss_study.run_recipe("ce", seed, settings, root)["start"]
    ce_dir = loss_study.ce_workdir(root, seed)

    @functools.cache
    def start_error(seed=seed, ce_dir=ce_dir):  # once per seed, if a variant is not cached
      surrogate = neuroiou.load_surrogate(os.path.join(ce_dir, loss_study.SURROGATE_FILE))
      return surrogate_error(surrogate, loss_study.recipe_config("ce", seed, settings, root),
                             ce_dir, n - k, error_batches(settings))

    for variant in variants:
      print(f"NeuroIoU variant {variant}, seed {seed}", flush=True)
      results.append(run_variant(variant, seed, settings, root, start_miou=start["miou"],
                                 start_error=start_error))
    control = loss_study.run_recipe("ce_restart", seed, settings, root)
    controls.append({"seed": seed, "miou": control["miou"], "start_miou": start["miou"]})
  print(f"Single-batch descent, seed {seeds[0]}", flush=True)
  descent = single_batch_descent(seeds[0], settings, root)
  write_json(os.path.join(report_dir, "neuroiou_study.json"),
             {"settings": settings, "runs": results, "controls": controls,
              "single_batch_descent": {"seed": seeds[0], **descent}})
  text = markdown_report(results, controls) + "\n" + descent_report(descent)
  with open(os.path.join(report_dir, "neuroiou_study.md"), "w") as f:
    f.write(text)
  print(text, flush=True)
  return results


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--study_dir", default="runs/loss_study",
                      help="the loss study's --workdir (its CE runs and surrogates)")
  parser.add_argument("--report_dir", default="docs/loss_study")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--smoke", action="store_true", help="the loss study's --smoke settings")
  args = parser.parse_args(argv)
  unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
  if unknown:
    parser.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
  if not all(s.strip().isdigit() for s in args.seeds.split(",") if s):
    parser.error(f"--seeds takes non-negative integers separated by commas, got {args.seeds!r}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  loss_study.enable_compilation_cache(args.study_dir)
  return run_study(root=args.study_dir, report_dir=args.report_dir,
                   seeds=[int(s) for s in args.seeds.split(",") if s],
                   variants=[v for v in args.variants.split(",") if v], smoke=args.smoke)


if __name__ == "__main__":
  main()
