"""VOC 2012, DeepLab-v2 ResNet-101, cross-entropy: the baseline of the Lovász-Softmax paper
(Table 3, "cross-entropy": 74.64 single-scale, 76.23 multi-scale on val). See
``configs/common.py`` (``deeplabv2_voc_config``) for the recipe; set ``--config.init_from.torch_weights``."""

from configs import common


def get_config():
  return common.deeplabv2_voc_config({"name": "cross_entropy", "kwargs": {}})
