"""Shared recipe of the VOC 2012 DeepLab-v2 experiments of the Lovász-Softmax paper (Sec. 4).

Used by ``configs/voc_deeplabv2_*.py`` (:func:`deeplabv2_voc_config`).
DeepLab-v2 ResNet-101 (ASPP-L, output stride 8, Caffe strides), from the COCO-pretrained
initialisation of the DeepLab authors converted to PyTorch format (``init.caffemodel`` ->
``--config.init_from.torch_weights=/path/deeplabv2_coco_init.pth``, Caffe key names), only the
loss swapped between experiments: 321 x 321 crops with random scale [0.5, 1.5] and flip, global
batch 10, SGD momentum 0.9, weight decay 5e-4 on the weights (Caffe ``decay_mult``: not the
biases), poly learning rate ``2.5e-4 (1 - k / K)^0.9``, 10x learning rate on the new head (the
ASPP classifiers; 20x on their biases, as Caffe's ``lr_mult: 10/20``), frozen BatchNorm (running
statistics and affine parameters fixed), the loss at stride 8 on the labels shrunk to 41 x 41 as
in the original; multi-scale evaluation (1, 0.75, 0.5, mean of probabilities).
"""

import ml_collections

from jaxseg.data import default_data_config
from jaxseg.training.defaults import BATCHNORM_PARAMS, base_config


def deeplabv2_voc_config(loss: dict, *, equibatch: bool = False,
                     num_train_steps: int = 20000) -> ml_collections.ConfigDict:
  data = default_data_config("voc2012_segmentation")
  data.equibatch = equibatch
  c = base_config(data)
  c.model.name = "deeplabv2_resnet101"
  c.model.options = {"frozen_batchnorm": True, "logits_stride": True}
  c.loss = ml_collections.ConfigDict(loss)
  c.batch_size = 10
  c.eval_batch_size = 10
  c.num_train_steps = num_train_steps
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.weight_decay_on = "kernels"
  c.optim.param_groups = [
      {"pattern": r"^aspp_\d+/kernel$", "lr_mult": 10.0},
      {"pattern": r"^aspp_\d+/bias$", "lr_mult": 20.0},
      {"pattern": BATCHNORM_PARAMS, "lr_mult": 0.0},
  ]
  c.schedule.name = "poly"
  c.schedule.base_lr = 2.5e-4
  c.schedule.power = 0.9
  c.log_every_steps = 20
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.eval.scales = (1.0, 0.75, 0.5)
  c.init_from.torch_options = {"key_map": "caffe_resnet"}
  return c
