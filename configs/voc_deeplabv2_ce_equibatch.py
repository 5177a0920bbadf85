"""VOC 2012, DeepLab-v2 ResNet-101, cross-entropy with equibatch sampling (every class visited at
least once every |C| patches; Lovász-Softmax paper Sec. 3.1 and Table 3: 75.53 / 76.70)."""

from configs import common


def get_config():
  return common.deeplabv2_voc_config({"name": "cross_entropy", "kwargs": {}}, equibatch=True)
