"""Figures of a run under ``workdir/figures``: the training curves (``curves.png``, from
``metrics.jsonl``) and a grid of predictions on the first evaluation images
(``predictions_<step>.png``).

The predictions are those of ``--mode=predict`` (:func:`jaxseg.predict.make_predict_step` with the
config's ``eval`` views, arg-max), on the first batch of the evaluation that
has just run: no pipeline is opened for the figures.
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import numpy as np

from jaxseg import predict as predict_lib
from jaxseg import sharding
from jaxseg import viz


def make_predict_fn(mesh, apply_fn, **views) -> predict_lib.PredictStep:
  """The prediction of ``--mode=predict`` (:func:`jaxseg.predict.make_predict_step` with the
  evaluation's ``views``: ``scales``, ``flip``, ``mode``, ``window``, ``stride``), for the
  figures."""
  return predict_lib.make_predict_step(mesh, apply_fn, **views)


def save_figures(workdir: str, step: int, predict_fn, variables, batch: Optional[dict], mesh, *,
                 config, ignore_index: int = 255) -> None:
  """Training curves and the prediction grid of ``batch`` (this host's share of an evaluation
  batch). Every process takes part in the prediction; process 0 draws."""
  if batch is None:
    return
  batch = {k: v for k, v in batch.items() if k in ("image", "label", "example_mask", "size")}
  global_batch = sharding.global_batch(batch, mesh)
  preds = predict_fn(variables, global_batch["image"], global_batch["size"])["prediction"]
  if jax.process_index() != 0:
    return
  fig_dir = os.path.join(workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics_path):
    try:
      viz.plot_training_curves(metrics_path, os.path.join(fig_dir, "curves.png"))
    except ValueError:
      pass
  n = int(config.get("eval", {}).get("num_figure_examples", 4))
  preds = predict_lib.host_rows(preds).astype(np.int32)  # this process's own examples
  keep = np.flatnonzero(batch.get("example_mask", np.ones(len(preds), bool)))[:n]
  if len(keep) == 0:
    return
  images = np.stack([viz.to_uint8_image(batch["image"][i], config.data.get("mean", None),
                                        config.data.get("std", None)) for i in keep])
  viz.save_prediction_grid(os.path.join(fig_dir, f"predictions_{step:06d}.png"), images,
                           np.asarray(batch["label"])[keep], preds[keep],
                           ignore_index=ignore_index)
