"""The default job: a small U-Net trained with Lovász-Softmax on the synthetic ``shapes`` data.

``python train.py`` with no arguments runs this on a 2-core CPU in a few minutes and ends with
the per-class IoU table of the ``shapes`` validation split next to the majority-class baseline.
Lovász-Softmax over the batch (present classes) as in Berman et al., CVPR 2018, Sec. 3.2; Adam
with a cosine schedule because the model starts from scratch.
"""

import ml_collections

from jaxseg.data import default_data_config
from jaxseg.training.defaults import base_config


def get_config() -> ml_collections.ConfigDict:
  data = default_data_config("shapes")
  c = base_config(data)
  c.model.name = "unet_small"
  c.loss = ml_collections.ConfigDict({"name": "lovasz_softmax",
                                      "kwargs": {"classes": "present", "per_image": False}})
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 600
  c.optim.name = "adam"
  c.optim.weight_decay = 0.0
  c.schedule.name = "cosine"
  c.schedule.base_lr = 3e-3
  c.schedule.warmup_steps = 30
  c.log_every_steps = 25
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 2
  return c
