"""train.py's command line and the trainer's config checks: a config mistake is one line
(``ERROR: ...``, exit status 1), never a traceback; what a user types first works.

The command-line checks run ``train.py`` in subprocesses that stop before anything is compiled
(flag parsing, the batch-size check, a missing dataset). The multi-device checks need
``XLA_FLAGS=--xla_force_host_platform_device_count`` before JAX starts, hence subprocesses too.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")


def _env(devices: int = 1) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if devices > 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
  return env


def _train(args, devices: int = 1) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                        env=_env(devices), cwd=ROOT, timeout=300)


def _error_line(proc: subprocess.CompletedProcess) -> str:
  """The run's single ``ERROR:`` line (exit status 1, no traceback)."""
  out = proc.stdout[-2000:] + proc.stderr[-3000:]
  assert proc.returncode == 1, out
  assert "Traceback" not in proc.stderr, out
  errors = [l for l in proc.stderr.splitlines() if l.startswith("ERROR:")]
  assert len(errors) == 1, out
  return errors[0]


# ----------------------------------------------------------------------------------------------
# A global batch that does not divide over the devices


def test_batch_size_not_dividing_over_the_devices_is_one_line(tmp_path):
  # (The check comes before anything is built: the run would otherwise train, on shapes.)
  proc = _train(["--workdir", str(tmp_path / "run"), "--config.batch_size=3",
                 "--config.eval_batch_size=5"], devices=2)
  line = _error_line(proc)
  assert "config.batch_size=3" in line and "config.eval_batch_size=5" in line, line
  assert "2 devices" in line and "multiple of 2" in line, line
  assert "2 or 4" in line and "4 or 6" in line, line  # what would work
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
