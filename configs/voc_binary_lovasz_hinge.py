"""Binary per-class fine-tuning on VOC 2012 with the Lovász hinge (Lovász-Softmax paper, Sec. 4,
Table 1: image-IoU 77.14 cross-entropy, 75.8 hinge, 80.5 Lovász hinge).

One network per class ``c`` (``--config configs/voc_binary_lovasz_hinge.py:<c>``, default 15,
person): start from the 21-class cross-entropy DeepLab-v2 (``--config.init_from.checkpoint=
runs/voc_ce``); its 21-way ASPP classifier becomes a one-logit head initialised as the class's
classifier minus the background's (``W_c - W_0``, ``b_c - b_0`` in each of the four ASPP
branches, so the initial binary score equals the multi-class logit margin ``F_c - F_0``); labels
are ``[y == c]`` (void kept; the trainer maps them, ``config.binary_class``); loss: the per-image
Lovász hinge; SGD with learning rate 5e-4 for one epoch, then 1e-4 for the second. An epoch is
``config.steps_per_epoch`` steps: set it to ``ceil(2 n_c / batch_size)`` with ``n_c`` the training
images that contain class ``c``.

Batches as in the paper, "half of the images contain the class": ``data.class_balanced``
(:mod:`jaxseg.data.class_balanced`) makes every global batch of 10 hold exactly 5 images that
contain ``c``, each cropped around a pixel of ``c``, and 5 images without ``c``. The positives
follow epoch-wise permutations of the ``n_c`` images with ``c``, so one epoch of
``ceil(2 n_c / 10)`` steps shows each of them once.
"""

import ml_collections

from configs import common


def get_config(class_index: str = "15") -> ml_collections.ConfigDict:
  c_idx = int(class_index)
  if not 1 <= c_idx <= 20:
    raise ValueError(f"class index must be a VOC foreground class in [1, 20], got {c_idx}.")
  c = common.deeplabv2_voc_config({"name": "lovasz_hinge", "kwargs": {"per_image": True}})
  c.data.class_balanced.class_id = c_idx
  c.data.class_balanced.fraction = 0.5
  c.num_classes = 1
  c.binary_class = c_idx
  c.steps_per_epoch = 1000
  c.num_train_steps = c.get_ref("steps_per_epoch") * 2
  c.schedule.name = "piecewise"
  c.schedule.boundaries_epochs = [1.0]
  c.schedule.learning_rates = [5e-4, 1e-4]
  c.init_from.binary_head.class_index = c_idx
  c.init_from.binary_head.background_index = 0
  c.init_from.binary_head.pattern = r"^aspp_\d+/(kernel|bias)$"
  c.eval.scales = (1.0,)
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 500
  return c
