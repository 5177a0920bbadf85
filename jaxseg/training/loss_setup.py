"""The training loss of a config: ``create_loss(config, mesh, num_classes)``.

What the loss registry (:func:`jaxseg.losses.build_loss`) cannot know, the trainer adds here:

* class weights from the data (``config.class_weighting = "enet"``: the training split's pixel
  frequencies, :func:`class_weights_from_data`), written into the weighted terms' kwargs;
* per-class pixel counts for margin calibration: a term whose kwargs hold ``statistics =
  {"name", "split"[, "data_dir", "manual_dir", "options"]}`` (configs/voc_margin.py) gets
  ``class_pixel_counts`` read from :func:`jaxseg.data.split_statistics` instead
  (:func:`class_pixel_counts_from_data`), so the losses never read data;
* on a sharded batch, batch-level Lovász-Softmax terms spliced in as the all-to-all loss of
  :mod:`jaxseg.losses.sharded_lovasz` (``config.global_lovasz_impl``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxseg import data as data_lib
from jaxseg.losses import build_loss, enet_class_weights, sharded_lovasz
from jaxseg.training.initialization import ConfigError, to_dict


_ALL_TO_ALL_OPTIONS = ("per_image", "classes", "ignore_index", "class_weights", "sort")


def _lovasz_all_to_all_kwargs(entry: dict) -> Optional[dict]:
  """kwargs of the all-to-all Lovász if ``entry`` is a batch-level Lovász-Softmax it supports."""
  if entry.get("name") != "lovasz_softmax" or set(entry) - {"name", "kwargs", "weight"}:
    return None
  kwargs = to_dict(entry.get("kwargs", {}) or {})
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
  return [to_dict(t) for t in loss_config["terms"]]


def create_loss(config, mesh, num_classes: int = -1) -> Callable[[jax.Array, jax.Array],
                                                                jax.Array]:
  """The training loss ``loss(logits, labels) -> scalar`` of ``config.loss``.

  Class weights come from the data with ``config.class_weighting``, per-class pixel counts
  from the data for terms that name ``statistics`` (margin calibration); one-logit models give the
  binary losses scores ``[B, H, W]``. ``config.global_lovasz_impl`` chooses how batch-level
  Lovász-Softmax terms (options ``classes``, ``ignore_index``, ``class_weights``, ``sort``) run
  on a sharded batch: ``'all_to_all'`` (:mod:`jaxseg.losses.sharded_lovasz`: classes spread
  over the devices), ``'plain'`` (the loss as is), or ``'auto'`` (all-to-all when the mesh has
  several devices). Each term is built once (``jaxseg.losses.build_loss``).
  """
  check_aux_loss(config)
  impl = config.get("global_lovasz_impl", "auto")
  if impl not in GLOBAL_LOVASZ_IMPLS:
    raise ConfigError(f"config.global_lovasz_impl must be one of {GLOBAL_LOVASZ_IMPLS}, got "
                      f"{impl!r}.")
  loss_config = _with_class_pixel_counts(to_dict(config.loss))
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


def check_aux_loss(config) -> float:
  """``config.aux_loss_weight``, checked against the model's ``aux_head`` option: a weight without
  an auxiliary head, or an auxiliary head that no loss trains (computed for nothing), is a
  ConfigError."""
  weight = float(config.get("aux_loss_weight", 0.0) or 0.0)
  model = config.get("model", None) or {}  # (a loss-only config, e.g. a test's, has no model)
  aux_head = bool(to_dict(model.get("options", {}) or {}).get("aux_head", False))
  if weight < 0:
    raise ConfigError(f"config.aux_loss_weight must be >= 0, got {weight}.")
  if weight > 0 and not aux_head:
    raise ConfigError(f"config.aux_loss_weight={weight} needs a model with an auxiliary head: "
                      "set config.model.options.aux_head=True (torchvision's DeepLab-v3 / FCN).")
  if aux_head and weight == 0:
    raise ConfigError("config.model.options.aux_head=True but config.aux_loss_weight is 0: the "
                      "auxiliary head would be computed and trained by nothing (0.5 in "
                      "torchvision's recipe).")
  return weight


def class_weights_from_data(config, weighting: str) -> list[float]:
  """Per-class loss weights from the training split's pixel frequencies ``p_c``.

  ``"enet"``: ``w_c = 1 / ln(1.02 + p_c)`` (Paszke et al. 2016, the weighted cross-entropy the
  Cityscapes ENet of the Lovász-Softmax paper was first trained with).
  """
  if weighting != "enet":
    raise ConfigError(f"config.class_weighting must be '' or 'enet', got {weighting!r}.")
  d = config.data
  stats = _split_statistics({"name": d.name, "split": d.train_split, "data_dir": d.get("data_dir"),
                             "manual_dir": d.get("manual_dir"), "options": d.get("options", {})})
  return [float(w) for w in enet_class_weights(stats.class_frequencies)]


STATISTICS_FIELDS = ("name", "split", "data_dir", "manual_dir", "options")


def class_pixel_counts_from_data(statistics: Any) -> list[int]:
  """Per-class pixel counts of the split ``statistics = {"name", "split"[, "data_dir",
  "manual_dir", "options"]}`` (:func:`jaxseg.data.split_statistics`, computed once and cached)."""
  spec = to_dict(statistics)
  if "name" not in spec or "split" not in spec or set(spec) - set(STATISTICS_FIELDS):
    raise ConfigError("config.loss is invalid: statistics must be {'name', 'split'[, "
                      f"'data_dir', 'manual_dir', 'options']}}, got {sorted(spec)}.")
  return [int(n) for n in _split_statistics(spec).class_pixel_counts]


def _split_statistics(spec: dict):
  # An unset location is None or "" (a command-line override to nothing): not given.
  return data_lib.split_statistics(spec["name"], spec["split"],
                                   data_dir=spec.get("data_dir") or None,
                                   manual_dir=spec.get("manual_dir") or None,
                                   **to_dict(spec.get("options") or {}))


def _entry_terms(entry: dict) -> list[dict]:
  return entry["terms"] if "terms" in entry else [entry]


def _with_class_weights(entry: dict, weights: list[float]) -> dict:
  entry = json.loads(json.dumps(entry))
  for t in _entry_terms(entry):
    if t.get("name") in ("cross_entropy", "focal", "lovasz_softmax", "soft_dice", "tversky",
                         "soft_jaccard"):
      t.setdefault("kwargs", {})["class_weights"] = weights
  return entry


def _with_class_pixel_counts(entry: dict) -> dict:
  """Each term's ``kwargs.statistics`` replaced by the ``class_pixel_counts`` it names."""
  entry = json.loads(json.dumps(entry))
  for t in _entry_terms(entry):
    kwargs = t.get("kwargs") or {}
    if kwargs.get("statistics") is not None:
      kwargs["class_pixel_counts"] = class_pixel_counts_from_data(kwargs.pop("statistics"))
  return entry


def describe_loss(config) -> str:
  """``config.loss`` in one line: ``1.0 * cross_entropy + 0.5 * lovasz_softmax``."""
  entry = to_dict(config.loss)
  if "terms" in entry:
    return " + ".join(f"{t.get('weight', 1.0)} * {t['name']}" for t in entry["terms"])
  return str(entry.get("name"))
