"""The evaluation's settings, read from ``config.eval`` once and checked.

:func:`view_arguments` gives the keyword arguments of :func:`jaxseg.evaluate.predict_probabilities`
(and of the steps built on it: evaluation, prediction, figures): ``scales``, ``flip``, ``mode``,
``window``, ``stride``; :func:`crf_params` the dense CRF's :class:`jaxseg.evaluate.CRFParams`
(``None`` when ``eval.crf`` is off).
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections

from jaxseg import evaluate as eval_lib
from jaxseg.training.initialization import ConfigError, to_dict


def _eval(config: Any) -> ml_collections.ConfigDict:
  return config.get("eval", None) or ml_collections.ConfigDict()


def view_arguments(config: Any) -> dict:
  """``scales``, ``flip``, ``mode``, ``window``, ``stride`` of ``config.eval`` (ConfigError for a
  mode that is not one of ``jaxseg.evaluate.MODES`` or a window / stride that cannot slide)."""
  ev = _eval(config)
  scales = tuple(float(s) for s in ev.get("scales", (1.0,)))
  if not scales or min(scales) <= 0:
    raise ConfigError(f"config.eval.scales must be positive scales, got {scales}.")
  mode = str(ev.get("mode", "whole"))
  if mode not in eval_lib.MODES:
    raise ConfigError(f"config.eval.mode={mode!r}: one of {eval_lib.MODES}.")
  window, stride = tuple(ev.get("window", (512, 512))), tuple(ev.get("stride", (341, 341)))
  if mode == "slide":
    try:
      window, stride = eval_lib.check_window(window, stride)
    except ValueError as e:
      raise ConfigError(f"config.eval.window / stride: {e}") from e
  return dict(scales=scales, flip=bool(ev.get("flip", False)), mode=mode, window=window,
              stride=stride)


def crf_params(config: Any) -> Optional[eval_lib.CRFParams]:
  """The dense CRF of ``config.eval.crf_params`` / ``crf_workers`` when ``config.eval.crf``."""
  ev = _eval(config)
  if not ev.get("crf", False):
    return None
  try:
    return eval_lib.CRFParams(**to_dict(ev.get("crf_params", {})),
                              workers=int(ev.get("crf_workers", 0)))
  except TypeError as e:
    raise ConfigError(f"config.eval.crf_params: {e}") from e
