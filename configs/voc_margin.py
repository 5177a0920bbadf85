"""Distribution-aware margin calibration on PASCAL VOC 2012 (Yu et al., IJCV 2022; formulas of
the authors' code, see jaxseg.losses.margin).

Recipe of the paper: initialise from a cross-entropy model and fine-tune with the calibrated
loss. The offsets ``ρ_0i``, ``ρ_i0`` come from the per-class pixel counts of the whole training
split at native resolution, read from the data layer's cached split statistics when the loss is
built (the first run computes and caches them)::

    python train.py --config configs/<voc cross-entropy config>.py --workdir runs/voc_ce
    python train.py --config configs/voc_margin.py --workdir runs/voc_margin \\
        --config.init_from.checkpoint=runs/voc_ce [--config.loss.kwargs.tau=10]

``τ`` (default 10) is the hyper-parameter to tune: ``ρ_0i`` scales like ``1/sqrt(n)``, small on a
dataset of ~1e9 labelled pixels. The paper's optimiser settings could not be recovered (the
stripped text has no numbers); this config uses the DeepLab-v2 fine-tuning settings of the
Lovász-Softmax recipe (SGD 0.9, weight decay 5e-4, poly 2.5e-4, batch 10, 20K steps) with a
DeepLab-v3+ ResNet-101 (the paper's backbone family).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(common.data_config("voc2012_segmentation"))
  c.model.name = "deeplabv3plus_resnet101"
  c.loss = common.margin_loss_entry(c.data)
  c.init_from.checkpoint = "runs/voc_ce"
  c.batch_size = 10
  c.eval_batch_size = 8
  c.num_train_steps = 20000
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.schedule.name = "poly"
  c.schedule.base_lr = 2.5e-4
  c.schedule.power = 0.9
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  return c
