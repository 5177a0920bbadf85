"""NeuroIoU-Hinge fine-tuning on PASCAL VOC 2012 (Nagendar et al., BMVC 2018, Sec. 3.3, Table 1).

Same recipe as ``configs/voc_neuroiou.py`` with a surrogate fitted on one-vs-rest hinge counts
(the paper's best variant, 69.46 mean IoU vs 67.90 for probabilities with FCN on VOC)::

    python fit_surrogate.py --config configs/<voc cross-entropy config>.py \\
        --checkpoint_dir runs/voc_ce --kind hinge --output runs/voc_ce/neuroiou_hinge6.msgpack
    python train.py --config configs/voc_neuroiou_hinge.py --workdir runs/voc_neuroiou_hinge \\
        --config.init_from.checkpoint=runs/voc_ce
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  return common.neuroiou_voc_config("neuroiou_hinge6.msgpack")
