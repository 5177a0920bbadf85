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
from absl import logging  # noqa: E402  pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS

_HERE = os.path.dirname(os.path.abspath(__file__))


def _one_line(text) -> str:
  text = str(text)
  # A config file's own error comes with its traceback: keep that one as it is.
  return text if "Traceback (most recent call last)" in text else " ".join(text.split())


def _raised_by_ml_collections(e: BaseException) -> bool:
  tb = e.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and "ml_collections" in tb.tb_frame.f_code.co_filename


def _exit_config_error(e: BaseException) -> None:
  """One line (``ERROR: ...``, exit status 1) for a bad ``--config`` or ``--config.<field>``."""
  if isinstance(e, (KeyError, AttributeError)):
    if not _raised_by_ml_collections(e):
      raise e  # a bug in the config file itself: its traceback says where
    # A --config.<field> override that names no field of the config (ml_collections wraps the
    # KeyError of the locked ConfigDict in an AttributeError).
    inner = e.args[0] if e.args else e
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    message = f"a --config override names a field the config does not have: {_one_line(text)}"
  else:
    message = _one_line(e)
  print(f"ERROR: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


try:
  # Without --config, ml_collections loads the default config and checks the --config.<field>
  # overrides here, while defining the flag; with --config <file>, when the flags are parsed
  # (_parse_flags).
  config_flags.DEFINE_config_file(
      "config", default=os.path.join(_HERE, "configs", "default.py"),
      help_string="Training configuration file (a Python file with get_config()).",
      lock_config=True)
except (AttributeError, KeyError, flags.Error) as e:
  _exit_config_error(e)
flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints, logs and figures.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train (resuming from the workdir) and evaluate; eval: evaluate the "
                  "workdir's latest checkpoint with config.eval.")


def _parse_flags(argv):
  """``FLAGS(argv)``, with one line instead of a traceback (or absl's usage text) on an error."""
  try:
    args = FLAGS(argv)
    FLAGS.config.get("seed")  # a --config file that could not be loaded raises OSError here
    return args
  except (AttributeError, KeyError, OSError, flags.Error) as e:
    _exit_config_error(e)


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
  from jaxseg.training.initialization import ConfigError  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    if FLAGS.mode == "train":
      loop.train_and_evaluate(config, FLAGS.workdir)
    else:
      loop.evaluate_checkpoint(config, FLAGS.workdir)
  except (ConfigError, checkpoint.IncompatibleCheckpointError, checkpoint.NonFiniteError,
          FileNotFoundError) as e:
    print(f"\nERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
