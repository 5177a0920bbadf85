"""Cityscapes, ENet fine-tuned with Lovász-Softmax from a weighted cross-entropy ENet
(Lovász-Softmax paper, Sec. 4: test class IoU 58.29 -> 63.06).

    python train.py --config configs/cityscapes_enet_weighted_ce.py --workdir runs/enet_ce
    python train.py --config configs/cityscapes_enet_lovasz.py --workdir runs/enet_lovasz \\
        --config.init_from.checkpoint=runs/enet_ce

Adam, poly learning rate from 2.5e-4, 512 x 1024 inputs (frames at half resolution, no
augmentation), batch 10, 10K iterations with a checkpoint and an evaluation every 1K.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(common.data_config("cityscapes"))
  c.model.name = "enet"
  c.loss = ml_collections.ConfigDict({"name": "lovasz_softmax",
                                      "kwargs": {"classes": "present", "per_image": False}})
  c.batch_size = 10
  c.eval_batch_size = 2
  c.num_train_steps = 10000
  c.optim.name = "adam"
  c.optim.weight_decay = 0.0
  c.schedule.name = "poly"
  c.schedule.base_lr = 2.5e-4
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 10
  return c
