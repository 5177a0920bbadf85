"""Margin calibration on the synthetic ``shapes`` data: a quick CPU run of the calibrated loss.

``python train.py --config configs/shapes_margin.py --workdir runs/shapes_margin`` trains the
small U-Net of ``configs/default.py`` from scratch with the distribution-aware calibrated loss
(Yu et al., IJCV 2022; see :mod:`jaxseg.losses.margin`) instead of Lovász-Softmax; the offsets come from the pixel counts of the synthetic
training split (computed in memory).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import default  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import voc_margin  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  c = default.get_config()
  c.loss = voc_margin.margin_loss_entry(c.data, tau=10.0)
  return c
