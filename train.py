"""jaxseg's training program.

    python train.py                                   # the default job (configs/default.py)
    python train.py --config configs/<name>.py --workdir <dir> [--config.<field>=<value> ...]
    python train.py --mode=eval --config configs/<name>.py --workdir <dir>   # latest checkpoint

A run started again in the same workdir resumes from its latest checkpoint. Multi-host: start
the same command on every host with ``--config.distributed.enabled=True`` (plus
``--config.distributed.coordinator_address=host0:port``, ``num_processes`` and ``process_id``
where JAX cannot discover the cluster itself).
"""

import os
import sys

# Quiet TensorFlow's C++ start-up logs (the configs import the input pipelines, hence TF).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import logging  # noqa: E402  pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
  # ml_collections applies the --config.<field> overrides here, while defining the flag.
  config_flags.DEFINE_config_file(
      "config", default=os.path.join(_HERE, "configs", "default.py"),
      help_string="Training configuration file (a Python file with get_config()).",
      lock_config=True)
except (AttributeError, KeyError) as e:
  # A --config.<field> override that names no field of the config: say so without a traceback.
  inner = e.args[0] if e.args else e
  text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
  sys.exit(f"ERROR: a --config override names a field the config does not have: {text}")
flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints, logs and figures.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train (resuming from the workdir) and evaluate; eval: evaluate the "
                  "workdir's latest checkpoint with config.eval.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; -v 0 shows them
  # Keep TensorFlow (used by the input pipelines only) off the accelerators.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
  except Exception:  # pragma: no cover - TF without GPU support
    pass
  from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
  from jaxseg.training import checkpoint  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    if FLAGS.mode == "train":
      loop.train_and_evaluate(config, FLAGS.workdir)
    else:
      loop.evaluate_checkpoint(config, FLAGS.workdir)
  except (loop.ConfigError, checkpoint.IncompatibleCheckpointError, checkpoint.NonFiniteError,
          FileNotFoundError) as e:
    print(f"\nERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
