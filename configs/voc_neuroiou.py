"""NeuroIoU fine-tuning on PASCAL VOC 2012 (Nagendar et al., BMVC 2018, Sec. 3.2 and 4.1).

The paper's recipe, in three runs:

1. Train FCN with cross-entropy (any cross-entropy VOC config with ``model.name = fcn8s_vgg16``)::

       python train.py --config configs/<voc cross-entropy config>.py --workdir runs/voc_ce

2. Fit the surrogate on (features, true IoU loss) pairs of that model over the training images,
   with logit perturbations so that the pairs cover the IoU range (held-out MSE is printed)::

       python fit_surrogate.py --config configs/<voc cross-entropy config>.py \\
           --checkpoint_dir runs/voc_ce --output runs/voc_ce/neuroiou_prob6.msgpack
           [--kind hinge --output runs/voc_ce/neuroiou_hinge6.msgpack]   # NeuroIoU-Hinge

3. Fine-tune the cross-entropy model with the frozen surrogate as the loss (this config)::

       python train.py --config configs/voc_neuroiou.py --workdir runs/voc_neuroiou \\
           --config.init_from.checkpoint=runs/voc_ce \\
           --config.loss.kwargs.surrogate_path=runs/voc_ce/neuroiou_prob6.msgpack

Paper settings (Sec. 4.1): fixed learning rate 1e-5, momentum 0.99, weight decay 5e-4; FCN;
15,000 iterations (Fig. 6); 6-input features (better than 3 inputs, Fig. 6). The paper trains on
VOC 2011 images resized to 375 x 500 and does not give a batch size; this config keeps the data
layer's VOC 2012 (train_aug) pipeline and a batch of 10. The feature variant (probabilities or
hinge, 3 or 6 inputs) is the surrogate file's: ``configs/voc_neuroiou_hinge.py`` is the same run
with a hinge surrogate.
"""

import ml_collections

from configs import common


def get_config(surrogate_file: str = "neuroiou_prob6.msgpack") -> ml_collections.ConfigDict:
  # surrogate_path is required: the surrogate fitted in step 2.
  return common.neuroiou_voc_config(surrogate_file)
