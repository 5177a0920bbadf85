"""VOC 2012 + SBD: torchvision's pretrained DeepLab-v3 ResNet-101 fine-tuned with batch-level
Lovász-Softmax, the Lovász-Softmax paper's "swap the loss" recipe (Berman et al., CVPR 2018,
Sec. 4: a network trained with cross-entropy, fine-tuned with the Lovász loss in its place).

The initialisation is torchvision's ``DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1``
(cross-entropy plus a 0.5-weighted auxiliary loss, on the COCO images of the 20 VOC classes), a
file you download yourself; jaxseg imports its whole state dict (backbone, head and auxiliary
head):

    python train.py --config configs/voc_deeplabv3_resnet101_lovasz.py --workdir runs/dlv3_lovasz \\
        --config.init_from.torch_weights=$HOME/weights/deeplabv3_resnet101_coco-586e9e4e.pth \\
        --config.data.manual_dir=$HOME/datasets/voc_manual \\
        --config.data.data_dir=$HOME/datasets/tfds

(``deeplabv3_resnet50`` and its ``deeplabv3_resnet50_coco-cd0a2569.pth``:
``--config.model.name=deeplabv3_resnet50``.) The auxiliary FCN head on ``layer3`` is kept and
trained as torchvision trains it: the same loss on its logits, weighted 0.5
(``aux_loss_weight``); evaluation uses the main head only.

Recipe: torchvision's training input (crops of 480 x 480 after a random rescale in [0.5, 2.0],
flip, ImageNet normalisation), global batch 16, SGD momentum 0.9, weight decay 1e-4 on the
weights, poly learning rate 0.9 from 1e-3 (a twentieth of torchvision's training rate: the
network is already trained), 10,000 steps (15 epochs of ``train_aug``); the BatchNorm statistics
stay those of the pretrained network (``frozen_batchnorm``), as in the paper's DeepLab-v2
fine-tuning; evaluation on ``val`` at one scale, padded to 512 x 512.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  data = common.data_config("voc2012_segmentation")
  data.crop_size = (480, 480)
  data.scale_range = (0.5, 2.0)
  c = common.base_config(data)
  c.model.name = "deeplabv3_resnet101"
  c.model.options = {"frozen_batchnorm": True, "aux_head": True}
  c.aux_loss_weight = 0.5
  c.loss = ml_collections.ConfigDict({"name": "lovasz_softmax",
                                      "kwargs": {"classes": "present", "per_image": False}})
  c.batch_size = 16
  c.eval_batch_size = 8
  c.num_train_steps = 10000
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.weight_decay_on = "kernels"
  c.schedule.name = "poly"
  c.schedule.base_lr = 1e-3
  c.schedule.power = 0.9
  c.log_every_steps = 50
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  return c
