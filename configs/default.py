"""The default job: a small U-Net trained with Lovász-Softmax on the synthetic ``shapes`` data.

``python train.py`` with no arguments runs this on a 2-core CPU in a few minutes and ends with
the per-class IoU table of the ``shapes`` validation split next to the majority-class baseline.
Lovász-Softmax over the batch (present classes) as in Berman et al., CVPR 2018, Sec. 3.2; Adam
with a cosine schedule because the model starts from scratch.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  return common.shapes_unet_config({"name": "lovasz_softmax",
                                    "kwargs": {"classes": "present", "per_image": False}})
