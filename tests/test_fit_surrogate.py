"""fit_surrogate.py end to end: a tiny cross-entropy run of train.py on the ``shapes`` data, the
NeuroIoU surrogate fitted from its checkpoint by the program and read back as the loss reads it;
a bad flag is one ``ERROR:`` line and exit status 1, as in train.py.

Subprocesses, as a user runs them. The bad-flag runs start next to the training run (they only
parse flags) and both programs share one JAX compilation cache, to keep the file short.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import build_loss
from jaxseg.losses import neuroiou
from test_train_cli import _error_line  # tests/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
FIT = os.path.join(ROOT, "fit_surrogate.py")

# A cross-entropy run small enough to train in seconds (16 x 16 shapes, a 2-level U-Net of width
# 4); the command line below shrinks it further with --config.<field> overrides.
TINY_CE_CONFIG = textwrap.dedent('''
    import ml_collections

    from configs import common


    def get_config() -> ml_collections.ConfigDict:
      c = common.shapes_unet_config({"name": "cross_entropy", "kwargs": {}})
      c.data.crop_size = (16, 16)
      c.data.options = {"image_size": 16, "num_train": 8, "num_validation": 4, "seed": 0}
      c.model.options = {"base_channels": 4, "depth": 2}
      c.eval_batch_size = 4
      c.schedule.warmup_steps = 0
      c.log_every_steps = 1
      c.checkpoint_every_steps = 2
      c.progress_bar = False
      c.tensorboard = False
      c.figures = False
      return c
''')

BAD_FLAGS = {
    "misspelt_override": (["--config.num_train_stepz=3"], "num_train_stepz"),
    "train_py_flag": (["--workdir=somewhere"], "workdir"),  # train.py's, not this program's
}


def _start(program, args, cache_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, program, *map(str, args)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(popen, timeout=300):
  out, err = popen.communicate(timeout=timeout)
  return subprocess.CompletedProcess(popen.args, popen.returncode, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The CE run, the surrogate fitted from it, and the bad-flag runs."""
  tmp = tmp_path_factory.mktemp("fit_surrogate")
  config = tmp / "tiny_ce.py"
  config.write_text(TINY_CE_CONFIG)
  cache = tmp / "jit_cache"
  common = ["--config", config]
  train = _start(TRAIN, common + ["--workdir", tmp / "ce", "--config.num_train_steps=2",
                                  "--config.batch_size=2"], cache)
  bad = {name: _start(FIT, common + ["--checkpoint_dir", tmp / "ce", "--output", tmp / "bad"]
                      + args, cache) for name, (args, _) in BAD_FLAGS.items()}
  bad = {name: _finish(p) for name, p in bad.items()}
  trained = _finish(train)
  assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
  output = tmp / "surrogates" / "hinge3.msgpack"  # a directory the program creates
  fit = _finish(_start(FIT, common + [
      "--checkpoint_dir", tmp / "ce", "--output", output, "--config.eval_batch_size=2",
      "--kind=hinge", "--num_inputs=3", "--max_batches=2", "--num_perturbations=2",
      "--hidden=8,8", "--steps=20", "--batch_size=32", "--val_fraction=0.25"], cache))
  return {"fit": fit, "output": output, "bad": bad, "tmp": tmp}


def test_fits_from_the_ce_checkpoint_and_writes_a_surrogate_the_loss_loads(runs):
  fit = runs["fit"]
  assert fit.returncode == 0, fit.stdout[-2000:] + fit.stderr[-3000:]
  assert "Traceback" not in fit.stderr, fit.stderr[-3000:]
  summary = [l for l in fit.stdout.splitlines() if l.startswith("NeuroIoU surrogate")]
  assert len(summary) == 1 and f"Saved to {runs['output']}" in summary[0], fit.stdout[-2000:]
  surrogate = neuroiou.load_surrogate(runs["output"])
  # The fitting flags reached the library.
  assert (surrogate.kind, surrogate.num_inputs, tuple(surrogate.hidden)) == ("hinge", 3, (8, 8))
  m = surrogate.metrics
  assert m["checkpoint_step"] == 2, m
  assert m["num_pairs"] > 0 and m["num_val"] == round(0.25 * m["num_pairs"]), m
  assert np.isfinite(m["val_mse"]) and np.isfinite(m["train_mse"]), m
  for key in ("grad_fn_agreement", "grad_fp_agreement"):  # NaN: no mispredicted pixel
    assert np.isnan(m[key]) or 0.0 <= m[key] <= 1.0, m
  # As a NeuroIoU fine-tuning run reads it (loss.kwargs.surrogate_path).
  loss_fn = build_loss({"name": "neuroiou", "kwargs": {"surrogate_path": str(runs["output"])}})
  logits = jax.random.normal(jax.random.key(0), (2, 16, 16, 4))
  labels = jax.random.randint(jax.random.key(1), (2, 16, 16), 0, 4)
  value, grad = jax.jit(jax.value_and_grad(loss_fn))(logits, labels)
  assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("name", sorted(BAD_FLAGS))
def test_bad_flag_is_one_line(runs, name):
  line = _error_line(runs["bad"][name])
  assert BAD_FLAGS[name][1] in line, line
  assert not os.path.exists(runs["tmp"] / "bad")
