"""Checkpoints and resumption of ``train_and_evaluate`` on tiny synthetic data.

* 2N steps straight == N steps, a crash, and N resumed: same parameters, same batches, same
  logged losses (and ``metrics.jsonl`` holds each step once).
* A non-finite loss stops the run with a clear message and leaves the last good checkpoint.
* A workdir holding another model's checkpoints gives a clear error.
* ``--mode=eval`` (``evaluate_checkpoint``) scores the latest checkpoint like the end of training.
"""

import hashlib
import json
import os

import jax
import numpy as np
import pytest

from configs import common
from jaxseg import data as data_lib
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import loop

N = 3
_ORIGINAL_TRAIN_ITERATOR = data_lib.create_train_iterator


pytestmark = pytest.mark.usefixtures("compilation_cache")


def tiny_config(**overrides):
  data = common.data_config("shapes")
  data.crop_size = (16, 16)
  data.scale_range = (0.75, 1.25)
  data.options = {"image_size": 16, "num_train": 12, "num_validation": 4, "seed": 0}
  c = common.base_config(data)
  c.model.name = "unet_small"
  c.model.options = {"base_channels": 4, "depth": 2}
  c.loss = {"name": "lovasz_softmax", "kwargs": {"per_image": False}}
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_train_steps = 2 * N
  c.optim.name = "adam"
  c.optim.weight_decay = 1e-4
  c.schedule.name = "poly"
  c.schedule.base_lr = 1e-2
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint_every_steps = N
  c.keep_checkpoints = 5
  c.progress_bar = False
  c.tensorboard = False
  c.figures = False
  for k, v in overrides.items():
    c[k] = v
  return c


class Preempted(Exception):
  """A simulated crash of the training process."""


class Recorder:
  """Wraps create_train_iterator: records a digest of every batch; can crash or poison one."""

  def __init__(self, monkeypatch, crash_after=None, nan_at=None):
    self.seen = []
    original = _ORIGINAL_TRAIN_ITERATOR

    def wrapped(*, start_step=0, **kw):
      def gen():
        step = start_step
        for batch in original(start_step=start_step, **kw):
          step += 1
          if crash_after is not None and len(self.seen) >= crash_after:
            raise Preempted("simulated preemption")
          if nan_at is not None and step == nan_at:
            batch = dict(batch, image=np.full_like(batch["image"], np.nan))
          self.seen.append((step, hashlib.sha1(batch["image"].tobytes()
                                               + batch["label"].tobytes()).hexdigest()))
          yield batch
      return gen()

    monkeypatch.setattr(data_lib, "create_train_iterator", wrapped)


def _records(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  mp = pytest.MonkeyPatch()
  try:
    straight_dir = str(tmp_path_factory.mktemp("straight"))
    rec_a = Recorder(mp)
    summary_a = loop.train_and_evaluate(tiny_config(), straight_dir)
    resumed_dir = str(tmp_path_factory.mktemp("resumed"))
    rec_b1 = Recorder(mp, crash_after=N)
    with pytest.raises(Preempted):
      loop.train_and_evaluate(tiny_config(), resumed_dir)
    steps_after_crash = ckpt_lib.Checkpointer(os.path.join(resumed_dir, "checkpoints"),
                                              save_every=N).all_steps()
    rec_b2 = Recorder(mp)
    summary_b = loop.train_and_evaluate(tiny_config(), resumed_dir)
  finally:
    mp.undo()
  return dict(straight_dir=straight_dir, resumed_dir=resumed_dir, a=rec_a.seen, b1=rec_b1.seen,
              b2=rec_b2.seen, summary_a=summary_a, summary_b=summary_b,
              steps_after_crash=steps_after_crash)


def test_resume_follows_the_same_trajectory(runs):
  assert runs["steps_after_crash"] == [N]
  assert [s for s, _ in runs["a"]] == list(range(1, 2 * N + 1))
  assert runs["b1"] == runs["a"][:N]           # the same first N batches
  assert runs["b2"] == runs["a"][N:]           # resumed at the data position N
  tree_a, step_a = ckpt_lib.restore_raw(runs["straight_dir"])
  tree_b, step_b = ckpt_lib.restore_raw(runs["resumed_dir"])
  assert step_a == step_b == 2 * N
  leaves_a = jax.tree_util.tree_leaves_with_path(tree_a)
  leaves_b = jax.tree.leaves(tree_b)
  assert len(leaves_a) == len(leaves_b)
  for (path, x), y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=str(path))
  # The run changed the parameters (the comparison is not vacuous).
  tree_n, _ = ckpt_lib.restore_raw(runs["resumed_dir"], step=N)
  diffs = [np.max(np.abs(a - b)) for a, b in
           zip(jax.tree.leaves(tree_n["params"]), jax.tree.leaves(tree_a["params"]))]
  assert max(diffs) > 1e-4
  assert runs["summary_a"]["miou"] == pytest.approx(runs["summary_b"]["miou"], abs=1e-9)


def test_metrics_jsonl_has_each_step_once(runs):
  rec_a = _records(runs["straight_dir"])
  rec_b = _records(runs["resumed_dir"])
  assert [r["step"] for r in rec_a] == list(range(1, 2 * N + 1))
  assert [r["step"] for r in rec_b] == list(range(1, 2 * N + 1))
  for ra, rb in zip(rec_a, rec_b):
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6)
    assert set(ra) >= {"step", "split", "loss", "accuracy", "learning_rate"}
  evals = _records(runs["straight_dir"], "eval")
  assert evals and evals[-1]["step"] == 2 * N
  assert {"miou", "pixel_accuracy", "majority_class_miou", "loss"} <= set(evals[-1])
  with open(os.path.join(runs["straight_dir"], "config.json")) as f:
    assert json.load(f)["model"]["name"] == "unet_small"


def test_eval_mode_scores_the_latest_checkpoint(runs, capsys):
  summary = loop.evaluate_checkpoint(tiny_config(), runs["straight_dir"])
  assert summary["step"] == 2 * N
  assert summary["miou"] == pytest.approx(runs["summary_a"]["miou"], abs=1e-9)
  out = capsys.readouterr().out
  assert "mIoU" in out and "majority-class baseline" in out and "background" in out
  assert os.path.exists(os.path.join(runs["straight_dir"], f"eval_{2 * N:06d}_standalone.json"))


def test_incompatible_workdir_is_a_clear_error(runs):
  other = tiny_config()
  other.model.options = {"base_channels": 6, "depth": 2}
  with pytest.raises(ckpt_lib.IncompatibleCheckpointError, match="model_options"):
    loop.train_and_evaluate(other, runs["straight_dir"])


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  Recorder(monkeypatch, nan_at=N + 2)
  with pytest.raises(ckpt_lib.NonFiniteError, match=f"step {N + 2}"):
    loop.train_and_evaluate(tiny_config(), workdir)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=N)
  assert ck.all_steps() == [N]
  tree, _ = ckpt_lib.restore_raw(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree["params"]))
  ck.close()


def test_checkpointer_refuses_non_finite_state(tmp_path):
  from jaxseg.training.state import TrainState
  import optax
  tx = optax.sgd(0.1)
  params = {"w": jax.numpy.array([1.0, np.nan])}
  state = TrainState.create(apply_fn=None, params=params, batch_stats={}, tx=tx,
                            rng=jax.random.PRNGKey(0))
  ck = ckpt_lib.Checkpointer(str(tmp_path), save_every=1)
  with pytest.raises(ckpt_lib.NonFiniteError, match="NaN or infinite"):
    ck.save(state, force=True)
  ck.close()
  assert ck.all_steps() == []
