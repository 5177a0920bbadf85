"""``train_and_evaluate(config, workdir)``: the generic trainer driven by a config.

One run, in order: join the hosts (``config.distributed``), build the ``'data'`` mesh over all
devices, the model (``jaxseg.models.create``), the loss (:mod:`jaxseg.training.loss_setup`), the
optax chain (:mod:`jaxseg.training.optim`) and the replicated :class:`TrainState`
(:mod:`jaxseg.training.initialization`); resume from the latest checkpoint of ``workdir`` (or
start from another run's weights, ``config.init_from``); then train
with the jitted step on global batches assembled from each host's share of the input pipeline,
logging to ``metrics.jsonl`` and TensorBoard (:mod:`jaxseg.training.metric_writer`), evaluating every ``eval_every_steps`` and at the end
(per-class IoU table next to the majority-class baseline), saving checkpoints every
``checkpoint_every_steps`` and figures under ``workdir/figures``
(:mod:`jaxseg.training.figures`, from the first evaluation batch). A SIGTERM or Ctrl-C stops
it at a step with that step saved (:mod:`jaxseg.training.preemption`); faults: ``RELIABILITY.md``.

Workdir layout::

    config.json                 the run's config (JSON)
    checkpoints/<step>/         orbax checkpoints (state + meta)
    checkpoints.damaged/<step>/ damaged checkpoints moved aside on resume
    metrics.jsonl               one JSON object per logged step: step, split, loss, metrics
    tensorboard/                TensorBoard event files (tensorboardX)
    figures/curves.png          training curves; figures/predictions_<step>.png overlays
    eval_<step>.json            evaluation summaries (per-class IoU, mIoU, confusion matrix;
                                Cityscapes: class and category IoU and iIoU)
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
from typing import Optional

import jax
import ml_collections
from tqdm import tqdm

from jaxseg import data as data_lib
from jaxseg import evaluate as eval_lib
from jaxseg import metrics as metrics_lib
from jaxseg import models
from jaxseg import sharding
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import data_setup
from jaxseg.training import eval_setup
from jaxseg.training import figures
from jaxseg.training import optim as optim_lib
from jaxseg.training import preemption
from jaxseg.training import steps as steps_lib
from jaxseg.training.initialization import ConfigError, create_train_state, to_dict
from jaxseg.training.loss_setup import create_loss, describe_loss
from jaxseg.training.metric_writer import (MetricLogger, TrainWindow, read_evaluation,
                                           write_evaluation)
from jaxseg.training.state import TrainState

# ----------------------------------------------------------------------------------------------
# Building blocks


def dataset_info(config):
  """``jaxseg.data.dataset_info`` of the configured dataset, with a clear error if unknown."""
  try:
    return data_lib.dataset_info(config.data.name)
  except (KeyError, ValueError) as e:
    raise ConfigError(f"config.data.name={config.data.name!r} is not a known dataset: {e}") from e


def num_classes_of(config, info) -> int:
  n = int(config.get("num_classes", -1) or -1)
  return n if n > 0 else int(info.num_classes)


def class_names_of(config, info, num_classes: int) -> list[str]:
  binary = int(config.get("binary_class", -1))
  names = list(getattr(info, "class_names", []) or [])
  if binary >= 0:
    fg = names[binary] if binary < len(names) else str(binary)
    return ["not " + fg, fg]
  if len(names) != num_classes:
    return [str(c) for c in range(num_classes)]
  return names


def create_model(config, num_classes: int):
  name = config.model.name
  available = list(models.available())
  if name not in available:
    raise ConfigError(f"config.model.name={name!r} is not a known model; available: "
                      f"{', '.join(sorted(available))}.")
  return models.create(name, num_classes, **to_dict(config.model.get("options", {})))


def fingerprint(config, num_classes: int) -> dict:
  """What checkpoints of one run have in common (compared on resume)."""
  return {
      "model": config.model.name,
      "model_options": json.loads(json.dumps(to_dict(config.model.get("options", {})),
                                             default=str, sort_keys=True)),
      "num_classes": int(num_classes),
      "dataset": config.data.name,
      "optimizer": config.optim.name,
  }


def check_batch_sizes(config, mesh) -> tuple[int, int]:
  """``(per-process train batch, global eval batch)``; a ConfigError naming every field whose
  global batch does not split evenly over the mesh's devices."""
  sizes = {"batch_size": int(config.batch_size),
           "eval_batch_size": int(config.get("eval_batch_size", config.batch_size))}
  errors, local = [], {}
  for field, size in sizes.items():
    try:
      local[field] = sharding.check_global_batch_size(size, mesh, field=f"config.{field}")
    except ValueError as e:
      errors.append(str(e))
  if errors:
    raise ConfigError(" ".join(errors))
  return local["batch_size"], sizes["eval_batch_size"]


REQUIRED_FIELDS = ("seed", "model", "loss", "data", "batch_size", "num_train_steps", "optim",
                   "schedule", "log_every_steps", "eval_every_steps", "checkpoint_every_steps")


def validate_config(config) -> None:
  """Clear errors for missing or ill-typed fields before anything is built."""
  missing = [k for k in REQUIRED_FIELDS if k not in config]
  if missing:
    raise ConfigError(f"the config lacks the field(s) {missing}; see configs/default.py.")
  for k in ("batch_size", "num_train_steps", "log_every_steps", "checkpoint_every_steps"):
    if int(config[k]) <= 0:
      raise ConfigError(f"config.{k} must be positive, got {config[k]}.")
  if "name" not in config.model:
    raise ConfigError("config.model needs a 'name'.")
  for k in ("name", "crop_size"):
    if k not in config.data:
      raise ConfigError(f"config.data needs a {k!r} field (see configs/common.py).")


# ----------------------------------------------------------------------------------------------
# The run


class Run:
  """Everything built from a config once (shared by training and stand-alone evaluation)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    dist = config.get("distributed", None)
    if dist is not None and dist.get("enabled", False):
      sharding.initialize_distributed(dist.get("coordinator_address", "") or None,
                                      dist.get("num_processes", -1), dist.get("process_id", -1))
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.mesh = sharding.create_mesh()
    # The batch sizes first: a run that cannot start says so before anything reads the data.
    self.local_batch, self.eval_batch_size = check_batch_sizes(config, self.mesh)
    self.info = dataset_info(config)
    self.ignore_index = int(getattr(self.info, "ignore_index", 255))
    self.num_classes = num_classes_of(config, self.info)
    # Binary one-logit models are evaluated as two classes (background, foreground).
    self.eval_classes = 2 if self.num_classes == 1 else self.num_classes
    self.class_names = class_names_of(config, self.info, self.eval_classes)
    self.train_data = data_setup.train_arguments(config)
    self.eval_data = data_setup.eval_arguments(config)
    self.model = create_model(config, self.num_classes)
    self.loss_fn = create_loss(config, self.mesh, self.num_classes)
    self.eval_views = eval_setup.view_arguments(config)  # scales, flip, mode, window, stride
    self.eval_scales, self.eval_flip = self.eval_views["scales"], self.eval_views["flip"]
    self.eval_crf = eval_setup.crf_params(config)
    schedule = to_dict(config.schedule)
    try:
      self.lr_fn = optim_lib.create_learning_rate_schedule(
          num_train_steps=int(config.num_train_steps),
          steps_per_epoch=int(config.get("steps_per_epoch", -1)), **schedule)
      # (configured, used) warmup steps: a warmup not shorter than the run is clamped to it.
      self.warmup_steps = (int(schedule.get("warmup_steps", 0) or 0),
                           optim_lib.effective_warmup_steps(
                               warmup_steps=schedule.get("warmup_steps", 0),
                               num_train_steps=int(config.num_train_steps)))
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.schedule: {e}") from e
    self.checkpointer = ckpt_lib.Checkpointer(
        os.path.join(self.workdir, "checkpoints"), save_every=config.checkpoint_every_steps,
        keep=config.get("keep_checkpoints", 3) or None,
        async_save=config.get("async_checkpoints", True),
        fingerprint=fingerprint(config, self.num_classes))

  def initial_state(self) -> TrainState:
    rng = jax.random.PRNGKey(int(self.config.seed))
    return create_train_state(self.config, self.model, self.mesh, self.lr_fn, rng)

  def eval_iterator(self):
    return data_lib.create_eval_iterator(
        **self.eval_data, global_batch_size=self.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())

  def train_iterator(self, start_step: int):
    return data_lib.create_train_iterator(
        **self.train_data, global_batch_size=int(self.config.batch_size),
        seed=int(self.config.seed), start_step=int(start_step),
        process_index=jax.process_index(), process_count=jax.process_count())

  @functools.cached_property
  def eval_metrics(self) -> metrics_lib.MetricAccumulator:
    """The evaluation's accumulator (it holds the latest evaluation): what the Cityscapes
    benchmark reports (class and category IoU and iIoU, from the instance ids the pipeline reads)
    for a run on Cityscapes' 19 classes, per-class IoU otherwise."""
    if self.info.has_instances and tuple(self.class_names) == metrics_lib.CITYSCAPES_CLASS_NAMES:
      return metrics_lib.MetricAccumulator.cityscapes(ignore_index=self.ignore_index)
    return metrics_lib.MetricAccumulator(self.eval_classes, ignore_index=self.ignore_index,
                                         class_names=self.class_names)

  def make_eval_step(self):
    return eval_lib.make_eval_step(self.mesh, self.model.apply, self.eval_metrics,
                                   **self.eval_views, loss_fn=self.loss_fn,
                                   probabilities=self.eval_crf is not None)

  def run_evaluation(self, state: TrainState, eval_step=None, wrap=None) -> tuple[dict, dict]:
    """The evaluation summary (:meth:`jaxseg.metrics.MetricAccumulator.summary`, + ``loss``)
    and the first evaluation batch (figures); ``self.eval_metrics`` holds the evaluation
    (``.table()``). ``wrap`` wraps the batch iterator (a signal abandons the evaluation)."""
    eval_step = eval_step or self.make_eval_step()
    ev = self.config.get("eval", ml_collections.ConfigDict())
    batches = iter((wrap or iter)(self.eval_iterator()))
    first = next(batches, None)
    summary = eval_lib.evaluate(eval_step, state.variables,
                                itertools.chain([] if first is None else [first], batches),
                                self.mesh, self.eval_metrics,
                                max_batches=int(ev.get("max_batches", -1)), crf=self.eval_crf,
                                pixel_mean=self.eval_data["mean"], pixel_std=self.eval_data["std"])
    return summary, first


def _percent(value) -> str:
  return "n/a" if value is None else f"{100 * value:.2f}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from ``workdir`` if it holds checkpoints) and evaluates; returns the final
  evaluation summary (``per_class_iou``, ``miou``, ``majority_class_miou``, ...).

  A SIGTERM or Ctrl-C during the run stops it after the current step, with that step's checkpoint
  written, by raising :class:`~jaxseg.training.preemption.Preempted`; a second one raises
  ``KeyboardInterrupt`` without waiting for a save in flight (:mod:`jaxseg.training.preemption`).
  """
  t_start = time.time()
  run = Run(config, workdir)
  with preemption.PreemptionWatch(run.checkpointer.reached_preemption) as watch:
    try:
      summary = _train(run, watch)
    finally:  # wait for the last save, unless a second signal asked to abort
      run.checkpointer.close(wait=not isinstance(sys.exc_info()[1], KeyboardInterrupt))
  if jax.process_index() == 0:
    print(f"Total time {time.time() - t_start:.1f} s; outputs in {run.workdir}", flush=True)
  return summary


def _train(run: Run, watch: preemption.PreemptionWatch) -> dict:
  config, is_main = run.config, jax.process_index() == 0
  if is_main:
    if run.warmup_steps[0] != run.warmup_steps[1]:
      print(f"config.schedule.warmup_steps={run.warmup_steps[0]} is not shorter than the run "
            f"(config.num_train_steps={config.num_train_steps}): warming up over "
            f"{run.warmup_steps[1]} step(s) instead.", flush=True)
    ckpt_lib.write_json(os.path.join(run.workdir, "config.json"), config.to_dict())
  total_steps = int(config.num_train_steps)
  # Open the input pipeline first: a missing dataset fails before anything is compiled.
  latest = run.checkpointer.latest_step() or 0
  train_iter = run.train_iterator(latest) if latest < total_steps else None
  # The newest checkpoint that reads whole (damaged newer ones are moved aside), or a fresh state.
  state, start_step = run.checkpointer.restore_latest(run.initial_state())
  if start_step != latest and start_step < total_steps:  # a damaged checkpoint was moved aside
    train_iter = run.train_iterator(start_step)
  eval_every = int(config.eval_every_steps)
  log_every = int(config.log_every_steps)

  def eval_due(step: int) -> bool:
    return (eval_every > 0 and step % eval_every == 0) or step >= total_steps

  # The evaluation due at the checkpoint's step, if a stopped or killed run did not write it.
  redo_eval = (start_step > 0 and eval_due(start_step)
               and read_evaluation(run.workdir, start_step) is None)
  logger = MetricLogger(run.workdir, truncate_after=start_step,
                        tensorboard=bool(config.get("tensorboard", True)),
                        redo_eval_at=start_step if redo_eval else None)
  train_step = steps_lib.make_train_step(
      run.mesh, loss_fn=run.loss_fn, learning_rate_fn=run.lr_fn,
      freeze_batch_stats=bool(config.get("freeze_batch_stats", False)),
      ignore_index=run.ignore_index,
      label_stride=getattr(run.model, "feature_stride", None)
      if config.model.get("options", {}).get("logits_stride", False) else None,
      aux_loss_weight=float(config.get("aux_loss_weight", 0.0) or 0.0))
  eval_step = run.make_eval_step()
  predict_fn = figures.make_predict_fn(run.mesh, run.model.apply, **run.eval_views)
  summary = None

  if is_main:
    print(f"Training {config.model.name} on {config.data.name} with loss "
          f"{describe_loss(config)} for {total_steps} steps (global batch "
          f"{config.batch_size}) on {jax.device_count()} device(s) of "
          f"{jax.process_count()} process(es); workdir {run.workdir}", flush=True)

  bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
             disable=not (is_main and config.get("progress_bar", True)), file=sys.stdout)

  def non_finite(step: int, loss: float, grad_norm: float) -> Exception:
    return ckpt_lib.NonFiniteError(
        f"Non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step {step}: "
        f"stopping. Nothing was saved after the last good checkpoint (step "
        f"{run.checkpointer.latest_step()}) in {run.checkpointer.directory}. Lower "
        f"config.schedule.base_lr, set config.optim.clip_grad_norm, or check the data.")

  window = TrainWindow(non_finite)

  def evaluate(state: TrainState, step: int) -> bool:
    """Evaluates, logs and draws ``state``; False if a signal abandoned the evaluation."""
    nonlocal summary
    try:
      summary, eval_batch = run.run_evaluation(state, eval_step, wrap=watch.interruptible)
    except preemption.EvaluationAbandoned:
      return False
    write_evaluation(logger, run.workdir, step, summary)
    bar.write(f"step {step}: eval mIoU {_percent(summary['miou'])} "
              f"(majority-class baseline {_percent(summary['majority_class_miou'])})")
    if config.get("figures", True):
      figures.save_figures(run.workdir, step, predict_fn, state.variables, eval_batch,
                           run.mesh, config=config, ignore_index=run.ignore_index)
    return True

  try:
    if redo_eval and not evaluate(state, start_step):
      raise watch.preempted(start_step, run.checkpointer.directory)
    for step in range(start_step + 1, total_steps + 1):
      batch = sharding.global_batch(next(train_iter), run.mesh)
      state, metrics = train_step(state, batch)
      window.add(step, metrics)   # checks the previous step while this one runs
      bar.update(1)
      stop = watch.should_stop(step)   # every process asks, every step
      is_log = step % log_every == 0 or step == total_steps or stop
      is_eval = eval_due(step) and not stop   # (a stopped run evaluates on its next start)
      is_ckpt = step % int(config.checkpoint_every_steps) == 0 or step == total_steps or stop
      if is_log or is_eval or is_ckpt:
        window.check()
      values = window.mean() if is_log else None
      if values:
        logger.write(step, "train", values)
        bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.3f}")
      if is_ckpt:
        run.checkpointer.save(state, force=step == total_steps or stop)
      if is_eval:
        if not evaluate(state, step):   # a signal: abandon the evaluation, not the save
          run.checkpointer.save(state, force=True)
          stop = True
        window.restart_clock()
      if stop:
        raise watch.preempted(step, run.checkpointer.directory)
  finally:
    bar.close()
    logger.close()

  final_step = int(jax.device_get(state.step))
  if summary is None:  # a finished run started again: its final evaluation is on disk
    summary = read_evaluation(run.workdir, final_step)
    if is_main:
      print(f"The run is complete: the evaluation of step {final_step} is in "
            f"{run.workdir}/eval_{final_step:06d}.json (mIoU {_percent(summary['miou'])}).")
  elif is_main:
    print(run.eval_metrics.table(f"Evaluation of step {final_step} on "
                                 f"{config.data.name}/{config.data.get('eval_split', '')}"))
  summary["step"] = final_step
  return summary


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> dict:
  """Evaluates a checkpoint of ``workdir`` (default: latest) with ``config.eval``; prints and
  saves the per-class table (``eval_<step>.json``)."""
  run = Run(config, workdir)
  try:
    latest = run.checkpointer.latest_step() if step is None else step
    if latest is None:
      raise FileNotFoundError(f"No checkpoint to evaluate in {run.checkpointer.directory}; "
                              f"train first (python train.py --workdir {workdir}).")
    state = run.checkpointer.restore(run.initial_state(), latest)
    summary, _ = run.run_evaluation(state)
  finally:
    run.checkpointer.close()
  if jax.process_index() == 0:
    eval_lib.save_summary(os.path.join(run.workdir, f"eval_{latest:06d}_standalone.json"),
                          summary, step=latest, scales=list(run.eval_scales), flip=run.eval_flip)
    print(run.eval_metrics.table(f"Evaluation of the checkpoint of step {latest} "
                                 f"(scales {run.eval_scales}, flip {run.eval_flip})"))
  summary["step"] = latest
  return summary

