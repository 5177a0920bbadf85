"""Training that loses nothing: damaged checkpoints, a full disk, the logs a killed run leaves, a
finished run started again.

The guarantee (``RELIABILITY.md``): a run loses at most the steps since its last complete
checkpoint, and the next start in the same workdir follows the trajectory of an uninterrupted run
to the bit (train state, ``metrics.jsonl``, TensorBoard); it never starts over silently.

* A damaged latest checkpoint is moved aside; every checkpoint damaged is an error; a disk full
  while saving is an error naming the path.
* ``metrics.jsonl`` lines and TensorBoard events after the checkpoint a run resumes from are
  dropped, with a line or a record torn by a kill; temporary files of a killed rewrite removed.
* A finished run started again does not evaluate again unless its final evaluation is missing.
"""

import errno
import glob
import importlib.util
import os
import shutil

import pytest

from benchmarks import kill_campaign as kc
from jaxseg import data as data_lib
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import loop

STEPS, EVERY, EVAL_EVERY = 12, 4, 8   # checkpoints 4, 8, 12; evaluations 8, 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory, compilation_cache):
  base = tmp_path_factory.mktemp("faults")
  path = kc.write_config(str(base / "config.py"), steps=STEPS, checkpoint_every=EVERY,
                         eval_every=EVAL_EVERY)
  spec = importlib.util.spec_from_file_location("faults_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  reference = str(base / "reference")
  summary = loop.train_and_evaluate(module.get_config(), reference)
  cache = str(tmp_path_factory.getbasetemp() / "jit_cache")  # the compilation_cache fixture's
  return dict(config_path=path, config=module.get_config, reference=reference, summary=summary,
              cache=cache)


def _copy_reference(setup, tmp_path) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(setup["reference"], workdir)
  return workdir


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints


def _truncated(step_dir):
  return kc.truncate_largest_file(os.path.join(step_dir, "state"))


def _file_missing(step_dir):
  path = sorted(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True))[0]
  os.remove(path)
  return path


def _no_step_metadata(step_dir):
  os.remove(os.path.join(step_dir, "_CHECKPOINT_METADATA"))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # tensorstore's
def test_damaged_latest_checkpoints_are_moved_aside(setup, tmp_path, capsys):
  workdir = _copy_reference(setup, tmp_path)
  _truncated(os.path.join(workdir, "checkpoints", "12"))
  _no_step_metadata(os.path.join(workdir, "checkpoints", "8"))
  loop.train_and_evaluate(setup["config"](), workdir)
  err = capsys.readouterr().err
  for step in (8, 12):
    moved = os.path.join(workdir, "checkpoints.damaged", str(step))
    assert f"the checkpoint of step {step} is damaged" in err and moved in err, err
    assert os.path.isdir(moved)
  assert "resuming from the checkpoint of step 4" in err
  # Resumed from step 4, trained 5-12 again (and saved 8 and 12 again): exactly the reference.
  assert kc.check_run(workdir, setup["reference"], STEPS) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_checkpoint_damaged_is_an_error_and_nothing_starts_afresh(setup, tmp_path):
  workdir = _copy_reference(setup, tmp_path)
  _file_missing(os.path.join(workdir, "checkpoints", "4"))
  _no_step_metadata(os.path.join(workdir, "checkpoints", "8"))
  _truncated(os.path.join(workdir, "checkpoints", "12"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = f.read()
  with pytest.raises(ckpt_lib.DamagedCheckpointError, match="Every checkpoint") as info:
    loop.train_and_evaluate(setup["config"](), workdir)
  message = str(info.value)
  assert "step 4: " in message and "does not read" in message
  assert "step 8: " in message and "_CHECKPOINT_METADATA is missing" in message
  assert "step 12: " in message
  assert kc.checkpoint_steps(workdir) == [4, 8, 12]   # nothing moved, nothing truncated
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == logged


# ----------------------------------------------------------------------------------------------
# A full disk


def _disk_full_at(monkeypatch, step):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
  original = jch.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def save_fn(self, x, directory):
    if directory.parent.name.split(".")[0] == str(step):
      path = directory / "metadata"
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return await original(self, x, directory)

  monkeypatch.setattr(jch.JsonCheckpointHandler, "_save_fn", save_fn)


@pytest.mark.parametrize("async_save", [True, False])
def test_disk_full_while_saving_is_an_error_naming_the_path(setup, tmp_path, monkeypatch,
                                                            async_save):
  workdir = str(tmp_path / "run")
  config = setup["config"]()
  config.async_checkpoints = async_save
  _disk_full_at(monkeypatch, 8)
  with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
    loop.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert os.path.join(workdir, "checkpoints", "8") in message, message
  assert "No space left on device" in message and "latest: step 4" in message, message
  # The synchronous save fails at step 8; the asynchronous one is found out by the next save.
  assert kc.last_step(workdir) == (STEPS if async_save else 8)
  assert kc.checkpoint_steps(workdir) == [4]   # the last good checkpoint is kept
  if async_save:
    monkeypatch.undo()   # space again: the next start resumes from step 4
    loop.train_and_evaluate(setup["config"](), workdir)
    assert kc.check_run(workdir, setup["reference"], STEPS) == []


# ----------------------------------------------------------------------------------------------
# Logs of a killed run


def test_resume_trims_the_logs_a_killed_run_left(tmp_path):
  from jaxseg.training.metric_writer import MetricLogger
  workdir = str(tmp_path)
  logger = MetricLogger(workdir)
  for step in range(1, 6):
    logger.write(step, "train", {"loss": 1.0 / step})
  logger.write(4, "eval", {"miou": 0.5})
  logger.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 6, "split": "tr')                     # torn by a kill
  [events] = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  with open(events, "ab") as f:
    f.write(b"\x20\x00\x00")                                 # a torn record
  for leftover in ("metrics.jsonl.tmp123", "config.json.tmp7"):   # rewrites killed midway
    open(os.path.join(workdir, leftover), "w").close()
  MetricLogger(workdir, truncate_after=4, redo_eval_at=4).close()
  assert [r["step"] for r in kc.records(workdir)] == [1, 2, 3, 4]
  assert kc.records(workdir, "eval") == []   # evaluated again by the resumed run
  assert kc.tensorboard_steps(workdir) == [1, 2, 3, 4]
  assert kc.tensorboard_steps(workdir, "eval/miou") == []
  assert kc.leftovers(workdir) == []


# ----------------------------------------------------------------------------------------------
# A finished run started again


def test_finished_run_evaluates_again_only_if_its_evaluation_is_missing(setup, tmp_path,
                                                                      monkeypatch):
  workdir = _copy_reference(setup, tmp_path)
  original = data_lib.create_eval_iterator
  calls = []

  def counted(**kw):
    calls.append(1)
    return original(**kw)

  monkeypatch.setattr(data_lib, "create_eval_iterator", counted)
  summary = loop.train_and_evaluate(setup["config"](), workdir)
  assert calls == [] and summary["step"] == STEPS
  assert summary["miou"] == pytest.approx(setup["summary"]["miou"], abs=1e-12)
  os.remove(os.path.join(workdir, f"eval_{STEPS:06d}.json"))
  summary = loop.train_and_evaluate(setup["config"](), workdir)
  assert calls == [1]
  assert summary["miou"] == pytest.approx(setup["summary"]["miou"], abs=1e-12)
  assert os.path.exists(os.path.join(workdir, f"eval_{STEPS:06d}.json"))
  assert [r["step"] for r in kc.records(workdir, "eval")] == [8, 12]   # logged once each
