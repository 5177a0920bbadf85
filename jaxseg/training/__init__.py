"""The trainer: ``train.py`` runs :func:`jaxseg.training.loop.train_and_evaluate`.

Modules (import the one you need; this package imports none of them):

* :mod:`~jaxseg.training.loop`: ``train_and_evaluate`` and ``evaluate_checkpoint``, the run
  built from a config (``Run``) and the train loop;
* :mod:`~jaxseg.training.initialization`: ``create_train_state``, and starting from another
  run or from PyTorch weights (``initial_variables``, ``transfer_weights``); ``ConfigError``;
* :mod:`~jaxseg.training.loss_setup`: ``create_loss``: class weights and margin-calibration pixel
  counts from the data, the all-to-all batch Lovász-Softmax on a sharded batch;
* :mod:`~jaxseg.training.metric_writer`: ``MetricLogger`` (``metrics.jsonl`` and TensorBoard);
* :mod:`~jaxseg.training.figures`: training curves and prediction grids;
* :mod:`~jaxseg.training.steps`: the jitted, data-parallel train step;
* :mod:`~jaxseg.training.state`: ``TrainState``;
* :mod:`~jaxseg.training.optim`: optax chains and learning-rate schedules;
* :mod:`~jaxseg.training.checkpoint`: orbax checkpoints, resume and their safety checks;
* :mod:`~jaxseg.training.surrogate`: fitting the NeuroIoU surrogate from a trained model.
* :mod:`~jaxseg.training.data_setup`, :mod:`~jaxseg.training.eval_setup`: ``config.data`` and
  ``config.eval`` read once into the pipelines' and the evaluation's keyword arguments;
* :mod:`~jaxseg.training.preemption`: SIGTERM / Ctrl-C and multi-host preemption;
* :mod:`~jaxseg.training.prediction`: ``train.py --mode=predict``;
* :mod:`~jaxseg.training.cli`: the programs' ``--config`` flag and one-line errors.
"""

from jaxseg import _extras

_extras.require("train", "jaxseg.training (the trainer)", "ml_collections", "absl", "orbax",
                "tensorboardX", "tqdm", "matplotlib")
