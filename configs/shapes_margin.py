"""Margin calibration on the synthetic ``shapes`` data: a quick CPU run of the calibrated loss.

``python train.py --config configs/shapes_margin.py --workdir runs/shapes_margin`` trains the
small U-Net of ``configs/default.py`` from scratch with the distribution-aware calibrated loss
(Yu et al., IJCV 2022; see :mod:`jaxseg.losses.margin`) instead of Lovász-Softmax; the offsets come from the pixel counts of the synthetic
training split (computed in memory).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.shapes_unet_config({"name": "lovasz_softmax", "kwargs": {}})
  c.loss = common.margin_loss_entry(c.data, tau=10.0)
  return c
