"""The trainer passes config.eval's sliding-window and dense-CRF settings to the evaluation:
a run evaluated whole, by windows that cover each image in one piece, and with the CRF."""

import json
import os

import pytest

from jaxseg import evaluate as eval_lib
from jaxseg.training import loop
from jaxseg.training.initialization import ConfigError
from test_train_checkpoint import tiny_config  # tests/ is on sys.path

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _config(**eval_fields):
  c = tiny_config(num_train_steps=1, checkpoint_every_steps=1, figures=True)
  for k, v in eval_fields.items():
    c.eval[k] = v
  return c


def _evaluation(workdir):
  with open(os.path.join(workdir, "eval_000001.json")) as f:
    return json.load(f)


def test_sliding_window_and_crf_reach_the_evaluation(tmp_path):
  """Windows as large as the (16 x 16) images predict what the whole image predicts; the CRF
  changes the prediction's pixels (its parameters reach the worker), and both runs draw figures."""
  whole = loop.train_and_evaluate(_config(), str(tmp_path / "whole"))
  slide_config = _config(mode="slide", window=(16, 16), stride=(8, 8))
  run = loop.Run(slide_config, str(tmp_path / "probe"))
  run.checkpointer.close()
  assert run.eval_views["mode"] == "slide" and run.eval_views["window"] == (16, 16)
  slide = loop.train_and_evaluate(slide_config, str(tmp_path / "slide"))
  assert _evaluation(tmp_path / "slide")["confusion_matrix"] == \
      _evaluation(tmp_path / "whole")["confusion_matrix"]
  assert slide["miou"] == whole["miou"]
  assert os.path.isdir(tmp_path / "slide" / "figures")
  pytest.importorskip("pydensecrf.densecrf", reason="the crf extra: pip install '.[crf]'")
  crf_config = _config(crf=True, crf_workers=1)
  crf_config.eval.crf_params.bi_w = 40.0  # a strong appearance kernel: it must move pixels
  assert isinstance(loop.Run(crf_config, str(tmp_path / "probe")).eval_crf, eval_lib.CRFParams)
  loop.train_and_evaluate(crf_config, str(tmp_path / "crf"))
  assert _evaluation(tmp_path / "crf")["confusion_matrix"] != \
      _evaluation(tmp_path / "whole")["confusion_matrix"]


def test_bad_eval_settings_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="config.eval.mode"):
    loop.Run(_config(mode="tiles"), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="window / stride"):
    loop.Run(_config(mode="slide", window=(8, 8), stride=(16, 16)), str(tmp_path / "b"))
  c = _config(crf=True)
  c.eval.crf_params = {"bogus": 1.0}
  with pytest.raises(ConfigError, match="crf_params"):
    loop.Run(c, str(tmp_path / "c"))
