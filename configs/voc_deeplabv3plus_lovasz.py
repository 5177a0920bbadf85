"""A practical recipe: DeepLab-v3+ ResNet-101 (output stride 16) on VOC 2012 + SBD from ImageNet
weights (``--config.init_from.torch_weights=resnet101.pth``, torchvision names), cross-entropy
plus batch-level Lovász-Softmax (equal weights), synchronised BatchNorm over the global batch,
SGD momentum 0.9, weight decay 1e-4, poly learning rate from 0.01 with a short warmup, 10x on the
ASPP/decoder head, batch 16, 513 crops, 30K steps, multi-scale + flip evaluation. Not a paper
experiment: a strong modern baseline for comparing the losses (change the term weights with
``--config.loss.terms`` entries in a copy of this file).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  data = common.data_config("voc2012_segmentation")
  data.crop_size = (513, 513)
  c = common.base_config(data)
  c.model.name = "deeplabv3plus_resnet101"
  c.model.options = {"output_stride": 16}
  c.loss = ml_collections.ConfigDict({"terms": [
      {"name": "cross_entropy", "weight": 1.0, "kwargs": {}},
      {"name": "lovasz_softmax", "weight": 1.0, "kwargs": {"per_image": False}},
  ]})
  c.batch_size = 16
  c.eval_batch_size = 8
  c.num_train_steps = 30000
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.param_groups = [{"pattern": r"^(aspp|decoder|classifier)", "lr_mult": 10.0}]
  c.schedule.name = "poly"
  c.schedule.base_lr = 0.01
  c.schedule.warmup_steps = 500
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 2000
  c.eval.scales = (0.75, 1.0, 1.25)
  c.eval.flip = True
  return c
