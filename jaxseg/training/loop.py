"""``train_and_evaluate(config, workdir)``: the generic trainer driven by a config.

One run, in order: join the hosts (``config.distributed``), build the ``'data'`` mesh over all
devices, the model (``jaxseg.models.create``), the loss (``jaxseg.losses.build_loss``, or the
all-to-all batch Lovász of :mod:`jaxseg.losses.sharded_lovasz`), the optax chain
(:mod:`jaxseg.training.optim`) and the replicated :class:`TrainState`; resume from the latest
checkpoint of ``workdir`` (or start from another run's weights, ``config.init_from``); then train
with the jitted step on global batches assembled from each host's share of the input pipeline,
logging to ``metrics.jsonl`` and TensorBoard, evaluating every ``eval_every_steps`` and at the end
(per-class IoU table next to the majority-class baseline), saving checkpoints every
``checkpoint_every_steps`` and figures under ``workdir/figures``.

Workdir layout::

    config.json                 the run's config (JSON)
    checkpoints/<step>/         orbax checkpoints (state + meta)
    metrics.jsonl               one JSON object per logged step: step, split, loss, metrics
    tensorboard/                TensorBoard event files (tensorboardX)
    figures/curves.png          training curves; figures/predictions_<step>.png overlays
    eval_<step>.json            evaluation summaries (per-class IoU, mIoU, confusion matrix)
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import sharding
from jaxseg.losses import sharded_lovasz
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import optim as optim_lib
from jaxseg.training import steps as steps_lib
from jaxseg.training.state import TrainState, init_variables  # noqa: F401  (re-exported)


class ConfigError(ValueError):
  """A config field holds a value the trainer cannot use."""


# ----------------------------------------------------------------------------------------------
# Building blocks


def _crop_hw(crop_size) -> tuple[int, int]:
  if isinstance(crop_size, int):
    return int(crop_size), int(crop_size)
  crop = tuple(int(c) for c in crop_size)
  if len(crop) != 2:
    raise ConfigError(f"config.data.crop_size must be an int or (height, width), got {crop_size}.")
  return crop


def _to_dict(x: Any) -> dict:
  if x is None:
    return {}
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return dict(x)


def dataset_info(config):
  """``jaxseg.data.dataset_info`` of the configured dataset, with a clear error if unknown."""
  from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
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


def label_fn_of(config, ignore_index: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
  """For binary runs (``config.binary_class = c``): labels -> ``[y == c]``, void kept."""
  binary = int(config.get("binary_class", -1))
  if binary < 0:
    return None

  def to_binary(labels):
    labels = np.asarray(labels)
    return np.where(labels == ignore_index, ignore_index, (labels == binary)).astype(np.int32)

  return to_binary


def create_model(config, num_classes: int):
  from jaxseg import models  # pylint: disable=g-import-not-at-top
  name = config.model.name
  available = list(models.available())
  if name not in available:
    raise ConfigError(f"config.model.name={name!r} is not a known model; available: "
                      f"{', '.join(sorted(available))}.")
  return models.create(name, num_classes, **_to_dict(config.model.get("options", {})))


_ALL_TO_ALL_OPTIONS = ("per_image", "classes", "ignore_index", "class_weights", "sort")


def _lovasz_all_to_all_kwargs(entry: dict) -> Optional[dict]:
  """kwargs of the all-to-all Lovász if ``entry`` is a batch-level Lovász-Softmax it supports."""
  if entry.get("name") != "lovasz_softmax" or set(entry) - {"name", "kwargs", "weight"}:
    return None
  kwargs = _to_dict(entry.get("kwargs", {}) or {})
  if kwargs.get("per_image", False) or set(kwargs) - set(_ALL_TO_ALL_OPTIONS):
    return None
  kwargs.pop("per_image", None)
  if isinstance(kwargs.get("classes"), (list, tuple)):
    kwargs["classes"] = tuple(int(c) for c in kwargs["classes"])
  if kwargs.get("class_weights") is not None:
    kwargs["class_weights"] = tuple(float(w) for w in kwargs["class_weights"])
  return kwargs


GLOBAL_LOVASZ_IMPLS = ("auto", "plain", "all_to_all")


def _loss_terms(loss_config: dict) -> list[dict]:
  """The terms of a loss entry (a single loss is one term), with the registry's shape checks."""
  if "terms" not in loss_config:
    if "weight" in loss_config:
      raise ConfigError("config.loss is invalid: 'weight' belongs to an entry of 'terms', not "
                        "to a single loss.")
    return [loss_config]
  if set(loss_config) - {"terms"} or not loss_config["terms"]:
    raise ConfigError(f"config.loss is invalid: a loss with 'terms' takes a non-empty list of "
                      f"terms and nothing else, got {sorted(loss_config)}.")
  return [_to_dict(t) for t in loss_config["terms"]]


def create_loss(config, mesh, num_classes: int = -1) -> Callable[[jax.Array, jax.Array],
                                                                jax.Array]:
  """The training loss ``loss(logits, labels) -> scalar`` of ``config.loss``.

  Class weights come from the data with ``config.class_weighting``; one-logit models give the
  binary losses scores ``[B, H, W]``. ``config.global_lovasz_impl`` chooses how batch-level
  Lovász-Softmax terms (options ``classes``, ``ignore_index``, ``class_weights``, ``sort``) run
  on a sharded batch: ``'all_to_all'`` (:mod:`jaxseg.losses.sharded_lovasz`: classes spread
  over the devices), ``'plain'`` (the loss as is), or ``'auto'`` (all-to-all when the mesh has
  several devices). Each term is built once (``jaxseg.losses.build_loss``).
  """
  from jaxseg.losses import build_loss  # pylint: disable=g-import-not-at-top
  impl = config.get("global_lovasz_impl", "auto")
  if impl not in GLOBAL_LOVASZ_IMPLS:
    raise ConfigError(f"config.global_lovasz_impl must be one of {GLOBAL_LOVASZ_IMPLS}, got "
                      f"{impl!r}.")
  loss_config = _to_dict(config.loss)
  weighting = config.get("class_weighting", "")
  if weighting:
    loss_config = _with_class_weights(loss_config, class_weights_from_data(config, weighting))
  a2a_kwargs = []
  if impl == "all_to_all" or (impl == "auto" and mesh.size > 1):
    terms = _loss_terms(loss_config)
    a2a_kwargs = [_lovasz_all_to_all_kwargs(t) for t in terms]
    if impl == "all_to_all" and all(k is None for k in a2a_kwargs):
      raise ConfigError("global_lovasz_impl='all_to_all' needs a batch-level lovasz_softmax term "
                        f"(per_image=False, options {', '.join(_ALL_TO_ALL_OPTIONS[1:])} only) "
                        "in config.loss.")
  try:
    if any(k is not None for k in a2a_kwargs):
      parts = []
      for term, kwargs in zip(terms, a2a_kwargs):
        weight = float(term.get("weight", 1.0))
        if kwargs is not None:
          fn = functools.partial(sharded_lovasz.lovasz_softmax_all_to_all, mesh=mesh, **kwargs)
        else:  # built once, here (never also as part of the whole entry)
          fn = build_loss({k: v for k, v in term.items() if k != "weight"})
        parts.append((weight, fn))

      def loss_fn(logits, labels):
        # The registry's rule for sums of terms: each term in promote_types(logits, float32).
        dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(logits.dtype, jnp.float32))
        total = None
        for weight, fn in parts:
          term = weight * jnp.asarray(fn(logits, labels)).astype(dtype)
          total = term if total is None else total + term
        return total
    else:
      loss_fn = build_loss(loss_config)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.loss is invalid: {e}") from e
  if num_classes == 1:
    # One-logit (binary) models: the binary losses take scores [B, H, W].
    return lambda logits, labels: loss_fn(logits[..., 0], labels)
  return loss_fn


def class_weights_from_data(config, weighting: str) -> list[float]:
  """Per-class loss weights from the training split's pixel frequencies ``p_c``.

  ``"enet"``: ``w_c = 1 / ln(1.02 + p_c)`` (Paszke et al. 2016, the weighted cross-entropy the
  Cityscapes ENet of the Lovász-Softmax paper was first trained with).
  """
  if weighting != "enet":
    raise ConfigError(f"config.class_weighting must be '' or 'enet', got {weighting!r}.")
  from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxseg.losses.classic import enet_class_weights  # pylint: disable=g-import-not-at-top
  d = config.data
  # An unset location is None or "" (a command-line override to nothing): not given.
  stats = data_lib.split_statistics(d.name, d.train_split, data_dir=d.get("data_dir") or None,
                                    manual_dir=d.get("manual_dir") or None,
                                    **_to_dict(d.get("options", {})))
  return [float(w) for w in enet_class_weights(stats.class_frequencies)]


def _with_class_weights(entry: dict, weights: list[float]) -> dict:
  entry = json.loads(json.dumps(entry))
  targets = entry["terms"] if "terms" in entry else [entry]
  for t in targets:
    if t.get("name") in ("cross_entropy", "focal", "lovasz_softmax", "soft_dice", "tversky",
                         "soft_jaccard"):
      t.setdefault("kwargs", {})["class_weights"] = weights
  return entry


# ----------------------------------------------------------------------------------------------
# Initialisation from another run or from PyTorch weights


def _flat(tree) -> dict[str, Any]:
  return {optim_lib.path_to_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def transfer_weights(target: dict, source: dict, *, reinit_pattern: str = "",
                     binary_head: Optional[dict] = None) -> tuple[dict, dict]:
  """Copies ``source`` leaves into ``target`` (both ``{"params", "batch_stats"}`` trees).

  A target leaf takes the source leaf of the same path and shape. Leaves whose path matches
  ``reinit_pattern`` keep their fresh initialisation (a new head). With ``binary_head =
  {"pattern", "class_index", "background_index"}``, a leaf matching ``pattern`` whose source has
  ``C`` entries in the last axis and the target one is initialised as
  ``source[..., c] - source[..., background]``: the binary classifier that scores class ``c``
  against the background with the multi-class model's logits (the binary Lovász hinge recipe).
  Any other mismatch is an error naming the leaf. Returns the new tree and counts.
  """
  src = _flat(source)
  reinit = re.compile(reinit_pattern) if reinit_pattern else None
  head_re = re.compile(binary_head["pattern"]) if binary_head else None
  stats = {"copied": 0, "reinitialised": 0, "binary_head": 0}

  def pick(path, leaf):
    name = optim_lib.path_to_str(path)
    local = name.split("/", 1)[1] if "/" in name else name  # without "params/" / "batch_stats/"
    if reinit is not None and reinit.search(local):
      stats["reinitialised"] += 1
      return leaf
    if name not in src:
      raise ckpt_lib.IncompatibleCheckpointError(
          f"init_from: the source has no weight {name!r} (shape {tuple(leaf.shape)}); set "
          f"config.init_from.reinit_pattern to initialise it afresh.")
    value = np.asarray(src[name])
    if head_re is not None and head_re.search(local) and value.shape != leaf.shape:
      c, bg = int(binary_head["class_index"]), int(binary_head["background_index"])
      if leaf.shape[-1] != 1 or value.shape[:-1] != leaf.shape[:-1] or \
          not (0 <= c < value.shape[-1] and 0 <= bg < value.shape[-1]):
        raise ckpt_lib.IncompatibleCheckpointError(
            f"init_from.binary_head: cannot make {name!r} of shape {tuple(leaf.shape)} from the "
            f"source's {value.shape} with class {c} and background {bg}.")
      stats["binary_head"] += 1
      return jnp.asarray(value[..., c:c + 1] - value[..., bg:bg + 1], leaf.dtype)
    if value.shape != tuple(leaf.shape):
      raise ckpt_lib.IncompatibleCheckpointError(
          f"init_from: weight {name!r} has shape {value.shape} in the source but "
          f"{tuple(leaf.shape)} in the model; set config.init_from.reinit_pattern to "
          f"initialise it afresh.")
    stats["copied"] += 1
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(pick, target), stats


def initial_variables(config, model, rng, mesh) -> dict:
  """Fresh variables (replicated), then ``config.init_from`` applied."""
  crop = _crop_hw(config.data.crop_size)
  rep = sharding.replicated(mesh)
  variables = jax.jit(lambda r: init_variables(model, r, crop), out_shardings=rep)(rng)
  variables.setdefault("batch_stats", {})
  init = config.get("init_from", None)
  if init is None:
    return variables
  source = None
  if init.get("checkpoint", ""):
    step = int(init.get("step", -1))
    tree, src_step = ckpt_lib.restore_raw(init.checkpoint, None if step < 0 else step)
    source = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {}) or {}}
    origin = f"checkpoint {init.checkpoint} (step {src_step})"
  elif init.get("torch_weights", ""):
    from jaxseg import models  # pylint: disable=g-import-not-at-top
    path = init.torch_weights
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.init_from.torch_weights: no file at {path}.")
    try:
      new = models.import_torch_state_dict(jax.device_get(variables), path,
                                           **_to_dict(init.get("torch_options", {})))
    except ValueError as e:
      raise ckpt_lib.IncompatibleCheckpointError(
          f"config.init_from.torch_weights={path!r} does not fit model "
          f"{config.model.name!r}: {e}") from e
    new = {"params": new["params"], "batch_stats": new.get("batch_stats", {}) or {}}
    if jax.process_index() == 0:
      print(f"Initialised from the PyTorch weights {path}.", flush=True)
    return jax.device_put(new, rep)
  if source is None:
    return variables
  bh = init.get("binary_head", None)
  binary_head = None
  if bh is not None and int(bh.get("class_index", -1)) >= 0:
    binary_head = {"pattern": bh.pattern, "class_index": int(bh.class_index),
                   "background_index": int(bh.get("background_index", 0))}
  host = jax.device_get(variables)
  new, stats = transfer_weights(host, source, reinit_pattern=init.get("reinit_pattern", ""),
                                binary_head=binary_head)
  if jax.process_index() == 0:
    print(f"Initialised from {origin}: {stats}", flush=True)
  return jax.device_put(new, rep)


def create_train_state(config, model, mesh, learning_rate_fn, rng) -> TrainState:
  """The replicated train state: fresh or ``init_from`` variables, optax chain, base key."""
  # Parameters are drawn with the "rbg" generator (XLA's RngBitGenerator): compiling the init of a
  # deep model with threefry costs several times longer on CPU (14 s against 3 s for unet_small).
  seed = jax.random.randint(rng, (), 0, 2**31 - 1)
  init_rng = jax.random.key(int(seed), impl="rbg")
  state_rng = jax.random.fold_in(rng, 1)
  variables = initial_variables(config, model, init_rng, mesh)
  try:
    tx = optim_lib.create_optimizer(config.optim, learning_rate_fn, variables["params"])
  except ValueError as e:
    raise ConfigError(f"config.optim: {e}") from e
  rep = sharding.replicated(mesh)

  def make(variables, key):
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx, rng=key)

  return jax.jit(make, out_shardings=rep)(variables, state_rng)


def fingerprint(config, num_classes: int) -> dict:
  """What checkpoints of one run have in common (compared on resume)."""
  return {
      "model": config.model.name,
      "model_options": json.loads(json.dumps(_to_dict(config.model.get("options", {})),
                                             default=str, sort_keys=True)),
      "num_classes": int(num_classes),
      "dataset": config.data.name,
      "optimizer": config.optim.name,
  }


# ----------------------------------------------------------------------------------------------
# Logging


class MetricLogger:
  """metrics.jsonl + TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str, *, truncate_after: Optional[int] = None,
               tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writer = None
    if not self.active:
      return
    if truncate_after is not None and os.path.exists(self.path):
      # A resumed run logs again the steps after its checkpoint: drop the stale records.
      with open(self.path) as f:
        keep = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= truncate_after]
      with open(self.path, "w") as f:
        f.writelines(keep)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), "split": split}
    record.update({k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                   for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.writer is not None:
      for k, v in values.items():
        if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
          self.writer.add_scalar(f"{split}/{k}", float(v), int(step))
      self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


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
    self.label_fn = label_fn_of(config, self.ignore_index)
    self.model = create_model(config, self.num_classes)
    self.loss_fn = create_loss(config, self.mesh, self.num_classes)
    try:
      self.lr_fn = optim_lib.create_learning_rate_schedule(
          config.schedule, config.num_train_steps, int(config.get("steps_per_epoch", -1)))
      # (configured, used) warmup steps: a warmup not shorter than the run is clamped to it.
      self.warmup_steps = (int(config.schedule.get("warmup_steps", 0) or 0),
                           optim_lib.effective_warmup_steps(config.schedule,
                                                            config.num_train_steps))
    except ValueError as e:
      raise ConfigError(f"config.schedule: {e}") from e
    self.checkpointer = ckpt_lib.Checkpointer(
        os.path.join(self.workdir, "checkpoints"), save_every=config.checkpoint_every_steps,
        keep=config.get("keep_checkpoints", 3) or None,
        async_save=config.get("async_checkpoints", True),
        fingerprint=fingerprint(config, self.num_classes))

  def initial_state(self) -> TrainState:
    rng = jax.random.PRNGKey(int(self.config.seed))
    return create_train_state(self.config, self.model, self.mesh, self.lr_fn, rng)

  def restore_or_init(self) -> TrainState:
    """The latest checkpoint of the workdir if any, else a fresh (or ``init_from``) state."""
    latest = self.checkpointer.latest_step()
    if latest is not None:
      self.checkpointer.check_compatible(latest)
    state = self.initial_state()
    if latest is not None:
      state = self.checkpointer.restore(state, latest)
      if jax.process_index() == 0:
        print(f"Resumed from the checkpoint of step {latest} in {self.checkpointer.directory}.",
              flush=True)
    return state

  def eval_iterator(self):
    from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
    return data_lib.create_eval_iterator(
        self.config.data, global_batch_size=self.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())

  def train_iterator(self, start_step: int):
    from jaxseg import data as data_lib  # pylint: disable=g-import-not-at-top
    return data_lib.create_train_iterator(
        self.config.data, global_batch_size=int(self.config.batch_size),
        seed=int(self.config.seed), start_step=int(start_step),
        process_index=jax.process_index(), process_count=jax.process_count())

  def make_eval_step(self):
    ev = self.config.get("eval", ml_collections.ConfigDict())
    from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    loss_fn = self.loss_fn
    return eval_lib.make_eval_step(
        self.mesh, self.model.apply, num_classes=self.eval_classes,
        scales=tuple(ev.get("scales", (1.0,))), flip=bool(ev.get("flip", False)),
        ignore_index=self.ignore_index, loss_fn=loss_fn)

  def run_evaluation(self, state: TrainState, eval_step=None) -> tuple[dict, np.ndarray]:
    from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    eval_step = eval_step or self.make_eval_step()
    ev = self.config.get("eval", ml_collections.ConfigDict())
    cm, loss = eval_lib.evaluate(eval_step, state.variables, self.eval_iterator(), self.mesh,
                                 num_classes=self.eval_classes,
                                 max_batches=int(ev.get("max_batches", -1)),
                                 label_fn=self.label_fn)
    summary = eval_lib.summarize(cm, self.class_names)
    if loss is not None:
      summary["loss"] = loss
    return summary, cm

  def save_figures(self, state: TrainState, step: int, predict_fn=None) -> None:
    """Training curves and a grid of predictions on the first evaluation images."""
    if not self.config.get("figures", True):
      return
    from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    from jaxseg import viz  # pylint: disable=g-import-not-at-top
    fig_dir = os.path.join(self.workdir, "figures")
    metrics_path = os.path.join(self.workdir, "metrics.jsonl")
    batch = next(iter(self.eval_iterator()))
    batch = {k: v for k, v in batch.items() if k in ("image", "label", "example_mask")}
    if self.label_fn is not None:
      batch["label"] = self.label_fn(batch["label"])
    predict_fn = predict_fn or _predict_fn_for_figures(self)
    global_b = sharding.global_batch(batch, self.mesh)
    preds = predict_fn(state.variables, global_b)
    if jax.process_index() != 0:
      return
    os.makedirs(fig_dir, exist_ok=True)
    if os.path.exists(metrics_path):
      try:
        viz.plot_training_curves(metrics_path, os.path.join(fig_dir, "curves.png"))
      except ValueError:
        pass
    n = int(self.config.get("eval", {}).get("num_figure_examples", 4))
    preds = np.asarray(jax.device_get(preds))
    keep = np.flatnonzero(batch.get("example_mask", np.ones(len(preds), bool)))[:n]
    if len(keep) == 0:
      return
    images = np.stack([viz.to_uint8_image(batch["image"][i], self.config.data.get("mean", None),
                                          self.config.data.get("std", None)) for i in keep])
    viz.save_prediction_grid(os.path.join(fig_dir, f"predictions_{step:06d}.png"), images,
                             np.asarray(batch["label"])[keep], preds[keep],
                             ignore_index=self.ignore_index)


def _predict_fn_for_figures(run: Run):
  from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  rep, dat = sharding.replicated(run.mesh), sharding.data_sharded(run.mesh)

  def predict(variables, batch):
    probs = eval_lib.predict_probabilities(run.model.apply, variables, batch["image"])
    return jnp.argmax(probs, -1).astype(jnp.int32)

  return jax.jit(predict, in_shardings=(rep, dat), out_shardings=rep)


def _write_eval(run: Run, step: int, summary: dict, cm: np.ndarray, logger: MetricLogger) -> None:
  from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  values = {"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"],
            "majority_class_miou": summary["majority_class_miou"]}
  if "loss" in summary:
    values["loss"] = summary["loss"]
  for name, v in summary["per_class_iou"].items():
    if v is not None:
      values[f"iou/{name}"] = v
  logger.write(step, "eval", values)
  if jax.process_index() == 0:
    eval_lib.save_summary(os.path.join(run.workdir, f"eval_{step:06d}.json"), summary, cm,
                          step=step)


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
      raise ConfigError(f"config.data needs a {k!r} field (see jaxseg.data.default_data_config).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from ``workdir`` if it holds checkpoints) and evaluates; returns the final
  evaluation summary (``per_class_iou``, ``miou``, ``majority_class_miou``, ...)."""
  t_start = time.time()
  run = Run(config, workdir)
  is_main = jax.process_index() == 0
  if is_main and run.warmup_steps[0] != run.warmup_steps[1]:
    print(f"config.schedule.warmup_steps={run.warmup_steps[0]} is not shorter than the run "
          f"(config.num_train_steps={config.num_train_steps}): warming up over "
          f"{run.warmup_steps[1]} step(s) instead.", flush=True)
  if is_main:
    ckpt_lib.write_json(os.path.join(run.workdir, "config.json"), config.to_dict())
  total_steps = int(config.num_train_steps)
  # Open the input pipeline first: a missing dataset fails before anything is compiled.
  latest = run.checkpointer.latest_step() or 0
  train_iter = run.train_iterator(latest) if latest < total_steps else None
  state = run.restore_or_init()
  start_step = int(jax.device_get(state.step))
  if start_step != latest:
    raise ckpt_lib.IncompatibleCheckpointError(
        f"The checkpoint of step {latest} holds step {start_step}.")
  logger = MetricLogger(run.workdir, truncate_after=start_step,
                        tensorboard=bool(config.get("tensorboard", True)))
  train_step = steps_lib.make_train_step(
      run.mesh, loss_fn=run.loss_fn, learning_rate_fn=run.lr_fn,
      freeze_batch_stats=bool(config.get("freeze_batch_stats", False)),
      ignore_index=run.ignore_index,
      label_stride=getattr(run.model, "feature_stride", None)
      if config.model.get("options", {}).get("logits_stride", False) else None)
  eval_step = run.make_eval_step()
  predict_fn = _predict_fn_for_figures(run)
  eval_every = int(config.eval_every_steps)
  log_every = int(config.log_every_steps)
  summary = None

  if is_main:
    print(f"Training {config.model.name} on {config.data.name} with loss "
          f"{_describe_loss(config)} for {total_steps} steps (global batch "
          f"{config.batch_size}) on {jax.device_count()} device(s) of "
          f"{jax.process_count()} process(es); workdir {run.workdir}", flush=True)

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
             disable=not (is_main and config.get("progress_bar", True)), file=sys.stdout)
  pending: list[tuple[int, dict]] = []   # (step, device metrics) not yet checked / logged
  window: list[dict] = []

  def check(step_metrics: tuple[int, dict]) -> None:
    step, m = step_metrics
    host = jax.device_get(m)
    loss, grad_norm = float(host["loss"]), float(host["grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      latest = run.checkpointer.latest_step()
      raise ckpt_lib.NonFiniteError(
          f"Non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step {step}: "
          f"stopping. Nothing was saved after the "
          f"last good checkpoint (step {latest}) in {run.checkpointer.directory}. Lower "
          f"config.schedule.base_lr, set config.optim.clip_grad_norm, or check the data.")
    window.append({k: float(v) for k, v in host.items()})

  t_window = time.time()
  try:
    for step in range(start_step + 1, total_steps + 1):
      local = next(train_iter)
      local = {k: v for k, v in local.items() if k in ("image", "label")}
      if run.label_fn is not None:
        local["label"] = run.label_fn(local["label"])
      batch = sharding.global_batch(local, run.mesh)
      state, metrics = train_step(state, batch)
      # Check the previous step while this one runs (keeps one step in flight).
      while pending:
        check(pending.pop(0))
      pending.append((step, metrics))
      bar.update(1)
      is_log = step % log_every == 0 or step == total_steps
      is_eval = (eval_every > 0 and step % eval_every == 0) or step == total_steps
      is_ckpt = step % int(config.checkpoint_every_steps) == 0 or step == total_steps
      if is_log or is_eval or is_ckpt:
        while pending:
          check(pending.pop(0))
      if is_log and window:
        values = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        elapsed = time.time() - t_window
        values["steps_per_sec"] = len(window) / max(elapsed, 1e-9)
        logger.write(step, "train", values)
        bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.3f}")
        window.clear()
        t_window = time.time()
      if is_ckpt:
        run.checkpointer.save(state, force=step == total_steps)
      if is_eval:
        summary, cm = run.run_evaluation(state, eval_step)
        _write_eval(run, step, summary, cm, logger)
        bar.write(f"step {step}: eval mIoU {100 * summary['miou']:.2f} "
                  f"(majority-class baseline {100 * summary['majority_class_miou']:.2f})")
        run.save_figures(state, step, predict_fn)
        t_window = time.time()
  finally:
    bar.close()
    run.checkpointer.close()
    logger.close()

  final_step = int(jax.device_get(state.step))
  if summary is None:  # nothing left to train: evaluate the restored state
    summary, cm = run.run_evaluation(state, eval_step)
    _write_eval(run, final_step, summary, cm, logger)
  if is_main:
    from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    print(eval_lib.format_table(summary, f"Evaluation of step {final_step} on "
                                         f"{config.data.name}/{config.data.get('eval_split', '')}"))
    print(f"Total time {time.time() - t_start:.1f} s; outputs in {run.workdir}", flush=True)
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
    summary, cm = run.run_evaluation(state)
  finally:
    run.checkpointer.close()
  if jax.process_index() == 0:
    from jaxseg import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
    ev = config.get("eval", {})
    scales = tuple(ev.get("scales", (1.0,)))
    eval_lib.save_summary(os.path.join(run.workdir, f"eval_{latest:06d}_standalone.json"),
                          summary, cm, step=latest, scales=list(scales),
                          flip=bool(ev.get("flip", False)))
    print(eval_lib.format_table(summary, f"Evaluation of the checkpoint of step {latest} "
                                         f"(scales {scales}, flip {bool(ev.get('flip', False))})"))
  summary["step"] = latest
  return summary


def _describe_loss(config) -> str:
  entry = _to_dict(config.loss)
  if "terms" in entry:
    return " + ".join(f"{t.get('weight', 1.0)} * {t['name']}" for t in entry["terms"])
  return str(entry.get("name"))
