"""Training that loses nothing: the logs a killed run leaves, a finished run started again.

* ``metrics.jsonl`` lines and TensorBoard events after the checkpoint a run resumes from are
  dropped, with a line or a record torn by a kill; temporary files of a killed rewrite removed.
* A finished run started again does not evaluate again unless its final evaluation is missing.
"""

import glob
import importlib.util
import os
import shutil

import pytest

from benchmarks import kill_campaign as kc
from jaxseg import data as data_lib
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
