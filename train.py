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

# Quiet TensorFlow's C++ start-up logs (the input pipelines run on TensorFlow).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top

from jaxseg.training import cli  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS

cli.define_config_flag(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
    "Training configuration file (a Python file with get_config()).")
flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints, logs and figures.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train (resuming from the workdir) and evaluate; eval: evaluate the "
                  "workdir's latest checkpoint with config.eval.")


def main(argv):
  cli.start(argv)
  # The trainer (JAX, TensorFlow for the input pipelines) is imported once the flags are good:
  # a mistyped flag is reported in a second, without TensorFlow's start-up messages.
  from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
  from jaxseg.training import checkpoint  # pylint: disable=g-import-not-at-top
  from jaxseg.training.initialization import ConfigError  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    if FLAGS.mode == "train":
      loop.train_and_evaluate(config, FLAGS.workdir)
    else:
      loop.evaluate_checkpoint(config, FLAGS.workdir)
  except (ConfigError, checkpoint.IncompatibleCheckpointError, checkpoint.NonFiniteError,
          FileNotFoundError) as e:
    print(file=sys.stderr)
    cli.exit_with_error(e)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
