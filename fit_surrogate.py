"""jaxseg's NeuroIoU surrogate fitting program (Nagendar et al., BMVC 2018, Sec. 3.1).

    python fit_surrogate.py --config configs/<ce config>.py --checkpoint_dir <workdir> \\
        --output <surrogate.msgpack> [--kind hinge] [--config.<field>=<value> ...]

``--config`` and ``--checkpoint_dir`` are the ``--config`` and ``--workdir`` the cross-entropy
run was trained with (``python train.py --config ... --workdir ...``). The program restores the
run's latest checkpoint (``--step`` for another), runs the model over whole images of the
config's training split (``--split`` for another), makes (features, true IoU loss) pairs of the
clean and randomly perturbed logits (:mod:`jaxseg.training.surrogate`), fits the MLP, prints the
held-out error and how often the surrogate's gradient moves mispredicted pixels the right way,
and writes the surrogate for ``--config.loss.kwargs.surrogate_path`` of a NeuroIoU fine-tuning
run (``configs/voc_neuroiou.py``). Single process. A bad flag or config field stops the program
with one ``ERROR:`` line, as in ``train.py``.
"""

import os
import sys

# Quiet TensorFlow's C++ start-up logs (the input pipelines run on TensorFlow), as train.py does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from jaxseg.losses.neuroiou import ACTIVATIONS  # noqa: E402
from jaxseg.training import cli  # noqa: E402

FLAGS = flags.FLAGS

cli.define_config_flag(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
    "Config of the trained cross-entropy run (a Python file with get_config()).")
flags.DEFINE_string("checkpoint_dir", None,
                    "Workdir of the trained cross-entropy run (train.py's --workdir).")
flags.DEFINE_string("output", None, "Where to write the surrogate (.msgpack).")
flags.DEFINE_integer("step", -1, "Checkpoint step to restore (-1: the latest).", lower_bound=-1)
flags.DEFINE_string("split", "", "Split to run the model over (default: config.data.train_split).")
flags.DEFINE_integer("max_batches", 200, "Batches (config.eval_batch_size images) to use.",
                     lower_bound=1)
flags.DEFINE_enum("kind", "prob", ["prob", "hinge"],
                  "Features: soft sums of probabilities or of one-vs-rest hinge losses.")
flags.DEFINE_enum("num_inputs", "6", ["3", "6"], "Features per (image, class) pair.")
flags.DEFINE_integer("num_perturbations", 4, "Random logit perturbations of each batch.",
                     lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the perturbations, the held-out split and the fit.")
flags.DEFINE_list("hidden", ["100", "100", "100", "100"], "Hidden layer widths of the MLP.")
flags.DEFINE_enum("activation", "softplus", sorted(ACTIVATIONS), "Activation of the MLP.")
flags.DEFINE_integer("steps", 5000, "Adam steps of the fit.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Pairs per Adam step (not config.batch_size).",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate of the fit (cosine decay).",
                   lower_bound=0.0)
flags.DEFINE_float("val_fraction", 0.1, "Held-out fraction of the pairs, in [0, 1).",
                   lower_bound=0.0, upper_bound=0.99)
flags.register_validator("hidden", lambda widths: all(w.isdigit() and int(w) > 0 for w in widths),
                         "--hidden takes positive integers separated by commas, e.g. 100,100")
flags.mark_flags_as_required(["checkpoint_dir", "output"])


def main(argv):
  cli.start(argv)
  from jaxseg.training import checkpoint  # pylint: disable=g-import-not-at-top
  from jaxseg.training import surrogate as surrogate_lib  # pylint: disable=g-import-not-at-top
  from jaxseg.training.initialization import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    surrogate = surrogate_lib.fit_from_checkpoint(
        FLAGS.config, FLAGS.checkpoint_dir, FLAGS.output,
        step=None if FLAGS.step < 0 else FLAGS.step, split=FLAGS.split or None,
        max_batches=FLAGS.max_batches, kind=FLAGS.kind, num_inputs=int(FLAGS.num_inputs),
        num_perturbations=FLAGS.num_perturbations, seed=FLAGS.seed,
        hidden=tuple(int(h) for h in FLAGS.hidden), activation=FLAGS.activation,
        steps=FLAGS.steps, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        val_fraction=FLAGS.val_fraction)
  except (ConfigError, checkpoint.IncompatibleCheckpointError, FileNotFoundError) as e:
    print(file=sys.stderr)
    cli.exit_with_error(e)
  m = surrogate.metrics
  nan = float("nan")
  print(f"NeuroIoU surrogate ({surrogate.kind}, {surrogate.num_inputs} inputs) fitted on "
        f"{int(m['num_pairs'])} pairs from step {int(m['checkpoint_step'])}: train MSE "
        f"{m['train_mse']:.5f}, held-out MSE {m.get('val_mse', nan):.5f} (MAE "
        f"{m.get('val_mae', nan):.4f}; predicting the mean: {m.get('val_baseline_mse', nan):.5f})."
        f" Gradient direction on mispredicted pixels (1 = all right, 0.5 = chance): false "
        f"negatives {m['grad_fn_agreement']:.2f}, false positives {m['grad_fp_agreement']:.2f}. "
        f"Saved to {FLAGS.output}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
