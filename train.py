"""jaxseg's training program.

    python train.py                                   # the default job (configs/default.py)
    python train.py --config configs/<name>.py --workdir <dir> [--config.<field>=<value> ...]
    python train.py --mode=eval --config configs/<name>.py --workdir <dir>   # latest checkpoint
    python train.py --mode=predict --config configs/<name>.py --workdir <dir> \
        --config.predict.output_dir=<dir> [--config.predict.split=test | --config.predict.input_dir=<dir>]

A run started again in the same workdir resumes from its latest checkpoint. Multi-host: start
the same command on every host with ``--config.distributed.enabled=True`` (plus
``--config.distributed.coordinator_address=host0:port``, ``num_processes`` and ``process_id``
where JAX cannot discover the cluster itself).

Exit status:

* 0: trained (or evaluated) to the end.
* 1: an error, said in one ``ERROR: ...`` line (a config mistake, a workdir of another run, a
  non-finite loss, every checkpoint damaged, a checkpoint that could not be written).
* 75 (``EX_TEMPFAIL``): stopped by SIGTERM (a preemption notice) or Ctrl-C, after writing the
  checkpoint of the current step; one ``PREEMPTED: ...`` line says which. Start the same command
  again to resume there: a job scheduler can requeue on this status.
* 130: aborted by a second SIGTERM or Ctrl-C, without waiting for a checkpoint being written;
  the next start resumes from the latest complete checkpoint.
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
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"],
                  "train: train (resuming from the workdir) and evaluate; eval: evaluate the "
                  "workdir's latest checkpoint with config.eval; predict: write its predictions "
                  "as config.predict asks.")


def main(argv):
  cli.start(argv)
  # The trainer (JAX, TensorFlow for the input pipelines) is imported once the flags are good:
  # a mistyped flag is reported in a second, without TensorFlow's start-up messages.
  from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
  from jaxseg.training import checkpoint  # pylint: disable=g-import-not-at-top
  from jaxseg.training import preemption  # pylint: disable=g-import-not-at-top
  from jaxseg.training.initialization import ConfigError  # pylint: disable=g-import-not-at-top
  from jaxseg.data import DataError  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    if FLAGS.mode == "train":
      loop.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == "predict":
      from jaxseg.training import prediction  # pylint: disable=g-import-not-at-top
      prediction.predict_checkpoint(config, FLAGS.workdir)
    else:
      loop.evaluate_checkpoint(config, FLAGS.workdir)
  except (ConfigError, checkpoint.IncompatibleCheckpointError, checkpoint.NonFiniteError,
          checkpoint.DamagedCheckpointError, checkpoint.CheckpointWriteError,
          FileNotFoundError, DataError) as e:
    print(file=sys.stderr)
    cli.exit_with_error(e, at_once=True)
  except preemption.Preempted as e:
    print(f"PREEMPTED: {e}", file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_PREEMPTED)
  except KeyboardInterrupt as e:
    print(f"\nABORTED: {e or 'interrupted'}; the next start resumes from the latest complete "
          f"checkpoint (exit status {preemption.EXIT_ABORTED}).", file=sys.stderr, flush=True)
    # At once: no wait for the checkpoint writer's threads (a step left half-written is a
    # temporary directory that the next start removes).
    os._exit(preemption.EXIT_ABORTED)  # pylint: disable=protected-access


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
