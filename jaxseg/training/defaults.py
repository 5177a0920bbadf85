"""The fields every training config has, with their defaults (``configs/*.py`` start here).

``base_config(data)`` returns a ``ConfigDict`` whose every field can be overridden on the
command line (``--config.num_train_steps=100``); misspelt fields are rejected by
``ml_collections`` (the dict is locked against new top-level keys). Fields:

* ``seed``; ``model.name`` / ``model.options`` (``jaxseg.models.create``);
  ``num_classes`` (-1: the dataset's); ``binary_class`` (>= 0: train one foreground class
  against the rest, labels ``[y == c]``, for the binary Lovász hinge recipe);
* ``loss``: a ``jaxseg.losses.build_loss`` entry; ``global_lovasz_impl``: ``'plain'`` (the loss
  as is, XLA gathers the errors), ``'all_to_all'`` (:mod:`jaxseg.losses.sharded_lovasz`,
  batch-level Lovász-Softmax terms with the classes spread over the devices) or ``'auto'``
  (all-to-all on a mesh of several devices, the default);
* ``class_weighting``: ``''`` or ``'enet'`` (class weights ``1 / ln(1.02 + p_c)`` from the training
  split, given to the losses that take ``class_weights``);
* ``data``: the data config of ``jaxseg.data.default_data_config``, its unset locations
  ``data_dir`` / ``manual_dir`` made overridable (``placeholder(str)``: ``None`` until given, so
  ``--config.data.manual_dir=<dir>`` works; ``None`` and ``""`` both mean "not given");
  ``batch_size`` (global), ``eval_batch_size`` (both multiples of the device count);
* ``num_train_steps``; ``steps_per_epoch`` (for ``schedule.boundaries_epochs``); ``optim``
  (:func:`jaxseg.training.optim.create_optimizer`); ``schedule``
  (:func:`jaxseg.training.optim.create_learning_rate_schedule`); ``freeze_batch_stats`` (forward
  in inference mode, for models without a ``frozen_batchnorm`` option);
* ``log_every_steps``, ``eval_every_steps`` (0: only at the end), ``checkpoint_every_steps``,
  ``keep_checkpoints``, ``async_checkpoints``;
* ``eval``: ``scales``, ``flip``, ``max_batches`` (-1: the whole split),
  ``num_figure_examples``;
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

# BatchNorm parameters of the jaxseg ResNet backbones and heads (Caffe DeepLab-v2 froze them).
BATCHNORM_PARAMS = r"(^|/)(bn\d*|downsample_1|[a-z_]*bn(_\d+)?)/(scale|bias)$"


# The data config's locations (directories): strings, None (or "") when not given.
PATH_FIELDS = ("data_dir", "manual_dir")


def overridable_paths(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes the unset ``PATH_FIELDS`` of ``data`` overridable on the command line, in place.

  ``ml_collections`` cannot override a field whose value is ``None`` (its type is unknown); a
  ``placeholder(str)`` has the value ``None`` and the type ``str``. Fields already holding a
  string or a reference are left as they are. Returns ``data``.
  """
  for key in PATH_FIELDS:
    if key in data and data.get(key) is None:
      try:
        data.get_ref(key)  # already a reference (a placeholder): keep it, and what points to it
      except ValueError:
        data[key] = placeholder(str)
  return data


def base_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  overridable_paths(data)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"name": "unet_small", "options": {}})
  c.num_classes = -1
  c.binary_class = -1
  c.loss = ml_collections.ConfigDict({"name": "lovasz_softmax", "kwargs": {}})
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
  c.eval = ml_collections.ConfigDict({"scales": (1.0,), "flip": False, "max_batches": -1,
                                      "num_figure_examples": 4})
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
