"""VOC 2012, DeepLab-v2 ResNet-101, batch-level Lovász-Softmax over the classes present in the
batch (Lovász-Softmax paper Sec. 3.2 and Table 3: 76.56 single-scale, 77.24 multi-scale)."""

from configs import common


def get_config():
  return common.deeplabv2_voc_config({"name": "lovasz_softmax",
                               "kwargs": {"classes": "present", "per_image": False}})
