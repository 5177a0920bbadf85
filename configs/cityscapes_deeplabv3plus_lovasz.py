"""A practical recipe: DeepLab-v3+ ResNet-101 on Cityscapes fine (ImageNet weights via
``--config.init_from.torch_weights``), 768 x 768 crops of the full-resolution frames with random
scale [0.5, 2.0] and flip, cross-entropy + batch-level Lovász-Softmax, SGD momentum 0.9, weight
decay 1e-4, poly from 0.01, batch 8, 40K steps, evaluation on whole 1024 x 2048 frames.
Batch-level Lovász over 8 x 768 x 768 pixels: on several devices its per-class sorts are spread
over the devices (``global_lovasz_impl='auto'``, :mod:`jaxseg.losses.sharded_lovasz`)."""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  data = common.data_config("cityscapes")
  data.crop_size = (768, 768)
  data.scale_range = (0.5, 2.0)
  data.flip = True
  c = common.base_config(data)
  c.model.name = "deeplabv3plus_resnet101"
  c.loss = ml_collections.ConfigDict({"terms": [
      {"name": "cross_entropy", "weight": 1.0, "kwargs": {}},
      {"name": "lovasz_softmax", "weight": 1.0, "kwargs": {"per_image": False}},
  ]})
  c.batch_size = 8
  c.eval_batch_size = 2
  c.num_train_steps = 40000
  c.optim.name = "sgd"
  c.optim.weight_decay = 1e-4
  c.optim.param_groups = [{"pattern": r"^(aspp|decoder|classifier)", "lr_mult": 10.0}]
  c.schedule.name = "poly"
  c.schedule.base_lr = 0.01
  c.schedule.warmup_steps = 1000
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 2000
  return c
