"""What the training configs share: the fields every config has, the datasets' input settings
and the papers' recipes. Plain data: this module imports ``ml_collections`` only, so reading a
config loads neither TensorFlow nor any of jaxseg (``tests/test_layering.py`` checks it).

A config file is ``from configs import common`` plus a ``get_config()`` that starts from
:func:`base_config` and changes fields. Every field can be overridden on the command line
(``--config.num_train_steps=100``); misspelt fields are rejected (the dict is locked). Fields:

* ``seed``; ``model.name`` / ``model.options`` (``jaxseg.models.create``);
  ``num_classes`` (-1: the dataset's); ``binary_class`` (>= 0: train one foreground class
  against the rest, labels ``[y == c]`` made by the input pipeline, for the binary Lovász hinge
  recipe);
* ``loss``: a ``jaxseg.losses.build_loss`` entry; ``aux_loss_weight``: the weight of the same
  loss on the auxiliary head's logits (models built with ``aux_head=True``; torchvision's recipe:
  0.5); ``global_lovasz_impl``: ``'plain'`` (the loss
  as is, XLA gathers the errors), ``'all_to_all'`` (batch-level Lovász-Softmax terms with the
  classes spread over the devices, ``jaxseg.losses.lovasz_softmax_all_to_all``) or ``'auto'``
  (all-to-all on a mesh of several devices, the default);
* ``class_weighting``: ``''`` or ``'enet'`` (class weights ``1 / ln(1.02 + p_c)`` from the training
  split, given to the losses that take ``class_weights``);
* ``data`` (:func:`data_config`): ``name``, ``train_split`` / ``eval_split``, the locations
  ``data_dir`` / ``manual_dir`` (``None`` until given: ``--config.data.manual_dir=<dir>`` is where
  the downloaded archives are), ``crop_size``, ``scale_range``, ``flip``, ``mean`` / ``std``
  (pixel normalisation), ``eval_pad_size`` (static evaluation size; ``None``: the largest image of
  the split), ``equibatch`` or ``class_balanced`` sampling, builder ``options``,
  ``num_parallel_calls``, ``prefetch``;
* ``batch_size`` (global), ``eval_batch_size`` (both multiples of the device count);
* ``num_train_steps``; ``steps_per_epoch`` (for ``schedule.boundaries_epochs``); ``optim``
  (``jaxseg.training.optim.create_optimizer``'s keyword arguments); ``schedule``
  (``jaxseg.training.optim.create_learning_rate_schedule``'s); ``freeze_batch_stats`` (forward
  in inference mode, for models without a ``frozen_batchnorm`` option);
* ``log_every_steps``, ``eval_every_steps`` (0: only at the end), ``checkpoint_every_steps``,
  ``keep_checkpoints``, ``async_checkpoints``;
* ``eval``: ``scales``, ``flip``, ``max_batches`` (-1: the whole split),
  ``num_figure_examples``; ``mode`` (``"whole"``: the model sees the whole padded image;
  ``"slide"``: windows of ``window`` = (h, w) pixels every ``stride`` = (h, w), the last one
  aligned to the image's border, logits averaged where windows overlap, e.g.
  ``--config.eval.mode=slide --config.eval.window=769,769 --config.eval.stride=513,513``;
  ``jaxseg.evaluate.slide_logits``); ``crf`` (dense CRF post-processing on the host, the
  ``crf`` extra), ``crf_workers`` (processes; 0: one per CPU core), ``crf_params``
  (``iterations``, ``pos_w``, ``pos_xy_std``, ``bi_w``, ``bi_xy_std``, ``bi_rgb_std``; default:
  DeepLab-v2 ResNet-101's, ``jaxseg.evaluate.CRFParams``);
* ``predict`` (``train.py --mode=predict``): ``split`` (a split of the dataset, e.g. ``test``;
  ``""``: the evaluation split) or ``input_dir`` (a folder of images), ``output_dir``,
  ``overlays`` (colour overlays too), ``probabilities`` (float16 ``.npz`` class probabilities);
* ``init_from``: ``checkpoint`` (another run's workdir), ``step`` (-1: latest),
  ``torch_weights`` (a ``.pth`` / ``.safetensors`` file), ``torch_options``,
  ``reinit_pattern`` (regex of weights left freshly initialised), ``binary_head``
  (``class_index``, ``background_index``, ``pattern``);
* ``distributed``: ``enabled``, ``coordinator_address``, ``num_processes``, ``process_id``
  (``jax.distributed.initialize``; with ``enabled`` and nothing else JAX auto-detects);
* ``progress_bar``, ``tensorboard``, ``figures``.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# BatchNorm parameters of the jaxseg ResNet backbones and heads (Caffe DeepLab-v2 froze them).
BATCHNORM_PARAMS = r"(^|/)(bn\d*|downsample_1|[a-z_]*bn(_\d+)?)/(scale|bias)$"

# The input settings of each dataset (``data_config``), in the order they are set.
DATASETS: dict[str, dict] = {
    # Pascal VOC 2012 + SBD (Lovász-Softmax paper, Sec. 4, after DeepLab-v2): 321 x 321 crops,
    # scale [0.5, 1.5], flip; evaluation padded to 512 x 512 (VOC images are <= 500 x 500).
    "voc2012_segmentation": dict(
        train_split="train_aug", eval_split="val",
        crop_size=(321, 321), scale_range=(0.5, 1.5), flip=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_pad_size=(512, 512), options={},
    ),
    # Cityscapes fine, the paper's ENet fine-tuning input (Sec. 4): whole frames at half
    # resolution (scale 0.5, 512 x 1024 crop of a 1024 x 2048 frame), no flip; evaluation at
    # native resolution.
    "cityscapes": dict(
        train_split="train", eval_split="val",
        crop_size=(512, 1024), scale_range=(0.5, 0.5), flip=False,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_pad_size=(1024, 2048), options={},
    ),
    # The embedded synthetic data: 64 x 64 images, 256 training / 64 validation.
    "shapes": dict(
        train_split="train", eval_split="validation",
        crop_size=(64, 64), scale_range=(0.75, 1.25), flip=True,
        mean=(127.5, 127.5, 127.5), std=(64.0, 64.0, 64.0), eval_pad_size=None,
        options={"image_size": 64, "num_train": 256, "num_validation": 64, "seed": 0},
    ),
    # Synthetic street scenes for loss studies (imbalanced, thin and co-occurring classes):
    # 64 x 64 images, 256 training / 64 validation, the same input settings as shapes.
    "streets": dict(
        train_split="train", eval_split="validation",
        crop_size=(64, 64), scale_range=(0.75, 1.25), flip=True,
        mean=(127.5, 127.5, 127.5), std=(64.0, 64.0, 64.0), eval_pad_size=None,
        options={"image_size": 64, "num_train": 256, "num_validation": 64, "seed": 0},
    ),
    # Lovász-Softmax paper, Sec. 4.1: 10 images of 50 x 50 circles, no augmentation, one
    # feature per pixel, (x - 127.5) / 31.875.
    "circles": dict(
        train_split="train", eval_split="validation",
        crop_size=(50, 50), scale_range=(1.0, 1.0), flip=False,
        mean=(127.5, 127.5, 127.5), std=(31.875, 31.875, 31.875), eval_pad_size=None,
        options={"image_size": 50, "num_train": 10, "num_validation": 10, "seed": 0},
    ),
}


def data_config(name: str) -> ml_collections.ConfigDict:
  """The ``data`` field of a config for the dataset ``name`` (one of ``DATASETS``).

  Sampling: ``equibatch`` (cycle over the classes, Berman et al., CVPR 2018, Sec. 3.1) or
  ``class_balanced`` with ``class_id >= 0`` (every global batch holds ``fraction * B`` rounded half
  up images containing ``class_id`` and the rest without it; ``class_id = -1``, the default, is
  off); otherwise epoch-wise permutations. ``num_parallel_calls = -1`` is ``tf.data.AUTOTUNE``.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
  c = ml_collections.ConfigDict()
  c.name = name
  c.data_dir = placeholder(str)
  c.manual_dir = placeholder(str)
  c.equibatch = False
  c.class_balanced = ml_collections.ConfigDict({"class_id": -1, "fraction": 0.5})
  c.num_parallel_calls = -1
  c.prefetch = 2
  for key, value in DATASETS[name].items():
    c[key] = value
  return c


def base_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every field of a training config (module docstring) with its default, training on ``data``."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"name": "unet_small", "options": {}})
  c.num_classes = -1
  c.binary_class = -1
  c.loss = ml_collections.ConfigDict({"name": "lovasz_softmax", "kwargs": {}})
  c.aux_loss_weight = 0.0
  c.global_lovasz_impl = "auto"
  c.class_weighting = ""
  c.data = data
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 1000
  c.optim = ml_collections.ConfigDict({
      "name": "sgd", "momentum": 0.9, "nesterov": False, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
      "weight_decay": 0.0, "weight_decay_on": "kernels", "param_groups": [],
      "clip_grad_norm": 0.0,
  })
  c.schedule = ml_collections.ConfigDict({
      "name": "poly", "base_lr": 0.01, "warmup_steps": 0, "power": 0.9, "end_lr": 0.0,
      "boundaries": [], "boundaries_epochs": [], "learning_rates": [],
  })
  c.steps_per_epoch = -1
  c.freeze_batch_stats = False
  c.log_every_steps = 50
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.eval = ml_collections.ConfigDict({
      "scales": (1.0,), "flip": False, "max_batches": -1, "num_figure_examples": 4,
      # Sliding-window inference (jaxseg.evaluate.slide_logits): "whole" or "slide".
      "mode": "whole", "window": (512, 512), "stride": (341, 341),
      # Dense CRF post-processing (jaxseg.evaluate.CRFParams; the 'crf' extra). Defaults:
      # DeepLab-v2 ResNet-101's published VOC settings.
      "crf": False, "crf_workers": 0,
      "crf_params": {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0,
                     "bi_xy_std": 67.0, "bi_rgb_std": 3.0},
  })
  c.predict = ml_collections.ConfigDict({
      "split": "", "input_dir": "", "output_dir": "", "overlays": False,
      "probabilities": False,
  })
  c.init_from = ml_collections.ConfigDict({
      "checkpoint": "", "step": -1, "torch_weights": "", "torch_options": {},
      "reinit_pattern": "",
      "binary_head": {"class_index": -1, "background_index": 0, "pattern": ""},
  })
  c.distributed = ml_collections.ConfigDict({"enabled": False, "coordinator_address": "",
                                             "num_processes": -1, "process_id": -1})
  c.progress_bar = True
  c.tensorboard = True
  c.figures = True
  return c


def shapes_unet_config(loss: dict) -> ml_collections.ConfigDict:
  """A small U-Net trained from scratch on the synthetic ``shapes`` data with ``loss``: Adam with
  a cosine schedule, 600 steps of batch 8 (a few minutes on a 2-core CPU)."""
  c = base_config(data_config("shapes"))
  c.model.name = "unet_small"
  c.loss = ml_collections.ConfigDict(loss)
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 600
  c.optim.name = "adam"
  c.optim.weight_decay = 0.0
  c.schedule.name = "cosine"
  c.schedule.base_lr = 3e-3
  c.schedule.warmup_steps = 30
  c.log_every_steps = 25
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 2
  return c


def deeplabv2_voc_config(loss: dict, *, equibatch: bool = False,
                         num_train_steps: int = 20000) -> ml_collections.ConfigDict:
  """The VOC 2012 DeepLab-v2 experiments of the Lovász-Softmax paper (Sec. 4), only the loss
  swapped between them.

  DeepLab-v2 ResNet-101 (ASPP-L, output stride 8, Caffe strides), from the COCO-pretrained
  initialisation of the DeepLab authors converted to PyTorch format (``init.caffemodel`` ->
  ``--config.init_from.torch_weights=/path/deeplabv2_coco_init.pth``, Caffe key names): 321 x 321
  crops with random scale [0.5, 1.5] and flip, global batch 10, SGD momentum 0.9, weight decay
  5e-4 on the weights (Caffe ``decay_mult``: not the biases), poly learning rate
  ``2.5e-4 (1 - k / K)^0.9``, 10x learning rate on the new head (the ASPP classifiers; 20x on
  their biases, as Caffe's ``lr_mult: 10/20``), frozen BatchNorm (running statistics and affine
  parameters fixed), the loss at stride 8 on the labels shrunk to 41 x 41 as in the original;
  multi-scale evaluation (1, 0.75, 0.5, mean of probabilities).
  """
  data = data_config("voc2012_segmentation")
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


def margin_loss_entry(data: ml_collections.ConfigDict, *, tau: float = 10.0,
                      upsilon: float = 1.0) -> ml_collections.ConfigDict:
  """The margin-calibration loss entry (Yu et al., IJCV 2022), its pixel counts read from the
  training split of ``data``; the split and locations are references, so that overrides of
  ``data.train_split``, ``data.data_dir`` or ``data.manual_dir`` apply to them too."""
  statistics = {
      "name": data.name,
      "split": data.get_ref("train_split"),
      "data_dir": data.get_ref("data_dir"),
      "manual_dir": data.get_ref("manual_dir"),
      "options": dict(data.get("options", {}) or {}),
  }
  return ml_collections.ConfigDict({
      "name": "margin_calibration",
      "kwargs": {"statistics": statistics, "tau": tau, "upsilon": upsilon},
  })


def neuroiou_voc_config(surrogate_file: str) -> ml_collections.ConfigDict:
  """NeuroIoU fine-tuning on VOC 2012 (Nagendar et al., BMVC 2018, Sec. 4.1): FCN-8s from the
  cross-entropy run ``runs/voc_ce`` with the frozen surrogate ``runs/voc_ce/<surrogate_file>``;
  fixed learning rate 1e-5, momentum 0.99, weight decay 5e-4, 15,000 iterations (Fig. 6); batch
  10 (the paper gives none)."""
  c = base_config(data_config("voc2012_segmentation"))
  c.model.name = "fcn8s_vgg16"
  c.loss = ml_collections.ConfigDict({
      "name": "neuroiou",
      "kwargs": {"surrogate_path": f"runs/voc_ce/{surrogate_file}"},
  })
  c.init_from.checkpoint = "runs/voc_ce"
  c.batch_size = 10
  c.eval_batch_size = 8
  c.num_train_steps = 15000
  c.optim.name = "sgd"
  c.optim.momentum = 0.99
  c.optim.weight_decay = 5e-4
  c.schedule.name = "constant"
  c.schedule.base_lr = 1e-5
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  return c
