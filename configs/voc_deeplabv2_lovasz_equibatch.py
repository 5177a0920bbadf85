"""VOC 2012, DeepLab-v2 ResNet-101, Lovász-Softmax with equibatch, 30K iterations (Lovász-Softmax
paper Table 3: 77.41 single-scale, 78.22 multi-scale). ``--config.num_train_steps=20000`` gives
the 20K variant."""

from configs import common


def get_config():
  return common.deeplabv2_voc_config({"name": "lovasz_softmax",
                               "kwargs": {"classes": "present", "per_image": False}},
                              equibatch=True, num_train_steps=30000)
