"""Cityscapes, ENet trained with class-weighted cross-entropy, ``w_c = 1 / ln(1.02 + p_c)``
(Paszke et al. 2016): the starting point of the Lovász-Softmax fine-tuning
(``configs/cityscapes_enet_lovasz.py``). Adam, 512 x 1024 inputs (frames at half resolution),
batch 10, no augmentation, as in the Lovász-Softmax paper's Cityscapes setting (Sec. 4)."""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(common.data_config("cityscapes"))
  c.model.name = "enet"
  c.loss = ml_collections.ConfigDict({"name": "cross_entropy", "kwargs": {}})
  c.class_weighting = "enet"
  c.batch_size = 10
  c.eval_batch_size = 2
  c.num_train_steps = 30000
  c.optim.name = "adam"
  c.optim.weight_decay = 2e-4
  c.schedule.name = "poly"
  c.schedule.base_lr = 5e-4
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  return c
