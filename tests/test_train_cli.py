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


# ----------------------------------------------------------------------------------------------
# Batch-level Lovász-Softmax with class weights on a multi-device mesh: the all-to-all path

A2A_WORKER = textwrap.dedent(r'''
import json
import numpy as np
import jax, jax.numpy as jnp
import ml_collections
from jaxseg.losses import build_loss, lovasz_softmax, register_loss
from jaxseg import sharding
from jaxseg.losses import sharded_lovasz
from jaxseg.training import loss_setup

assert jax.device_count() == 2, jax.devices()
C, B, H, W = 5, 4, 5, 6   # 5 classes over 2 devices: one padding class
rng = np.random.default_rng(0)
logits = jnp.asarray(rng.normal(size=(B, H, W, C)).astype(np.float32) * 2)
labels = rng.integers(0, C - 1, size=(B, H, W)).astype(np.int32)   # class C-1 absent
labels[rng.random((B, H, W)) < 0.15] = 255
labels = jnp.asarray(labels)
weights = [0.2, 0.05, 0.3, 0.25, 0.1]   # sum < 1: the mean divides by the weight total
mesh = sharding.create_mesh()
xs = jax.device_put(logits, sharding.data_sharded(mesh))
ys = jax.device_put(labels, sharding.data_sharded(mesh))
out = {}


def check(name, fn):
  try:
    out[name] = fn()
  except Exception as e:  # reported to the test, which names it
    out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}


def value_and_grad(classes):
  kw = {"classes": classes, "class_weights": weights}
  ref_v, ref_g = jax.value_and_grad(lambda x: lovasz_softmax(x, labels, **kw))(logits)
  f = jax.jit(jax.value_and_grad(
      lambda x, y: sharded_lovasz.lovasz_softmax_all_to_all(x, y, mesh=mesh, **kw)))
  v, g = f(xs, ys)
  return {"value": float(v), "ref": float(ref_v), "grad_diff": float(jnp.max(jnp.abs(g - ref_g))),
          "grad_scale": float(jnp.max(jnp.abs(ref_g)))}


for classes in ("present", "all"):
  check(classes, lambda: value_and_grad(classes))

# The trainer: 'auto' on 2 devices, a weighted sum with a class-weighted batch Lovász term; the
# other term comes from a counting builder of the registry.
builds = []


def counting_builder():
  builds.append(1)
  return lambda lg, lb: jnp.mean(jax.nn.logsumexp(lg, axis=-1))


register_loss("test_counting_loss", counting_builder, bind_kwargs=False)


def trainer():
  entry = {"terms": [{"name": "test_counting_loss", "weight": 0.5},
                     {"name": "lovasz_softmax", "weight": 2.0,
                      "kwargs": {"per_image": False, "class_weights": weights}}]}
  calls = []
  original = sharded_lovasz.lovasz_softmax_all_to_all

  def spy(*args, **kwargs):
    calls.append(sorted(kwargs))
    return original(*args, **kwargs)

  sharded_lovasz.lovasz_softmax_all_to_all = spy
  try:
    cfg = ml_collections.ConfigDict({"loss": entry, "global_lovasz_impl": "auto"})
    del builds[:]
    fn = jax.jit(loss_setup.create_loss(cfg, mesh, C))
    n_builds = len(builds)
    value = float(fn(xs, ys))
    hlo = fn.lower(xs, ys).compile().as_text()
  finally:
    sharded_lovasz.lovasz_softmax_all_to_all = original
  ref = 0.5 * float(jnp.mean(jax.nn.logsumexp(logits, axis=-1))) + 2.0 * float(
      lovasz_softmax(logits, labels, class_weights=weights))
  return {"value": value, "ref": ref, "builds": n_builds, "all_to_all_calls": len(calls),
          "has_all_to_all": "all-to-all" in hlo}


check("trainer", trainer)
print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def a2a():
  proc = subprocess.run([sys.executable, "-c", A2A_WORKER], env=_env(2), capture_output=True,
                        text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("classes", ["present", "all"])
def test_all_to_all_lovasz_with_class_weights_matches_the_plain_loss(a2a, classes):
  c = a2a[classes]
  assert "error" not in c, c["error"] if "error" in c else c
  assert abs(c["value"] - c["ref"]) <= 1e-6 * max(1.0, abs(c["ref"])), c
  assert c["grad_scale"] > 0
  assert c["grad_diff"] <= 1e-6 * max(1.0, c["grad_scale"]), c


def test_trainer_uses_the_all_to_all_path_with_class_weights_and_builds_each_term_once(a2a):
  c = a2a["trainer"]
  assert "error" not in c, c["error"] if "error" in c else c
  assert c["all_to_all_calls"] >= 1 and c["has_all_to_all"], c
  assert abs(c["value"] - c["ref"]) <= 1e-5 * max(1.0, abs(c["ref"])), c
  assert c["builds"] == 1, c


# ----------------------------------------------------------------------------------------------
# The dataset location on the command line

CONFIG_FILES = sorted(os.path.basename(p)[:-3]
                      for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if os.path.basename(p) not in ("__init__.py", "common.py"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_data_location_overrides_parse(name):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, "configs", name + ".py")
  argv = ["train.py", "--config", path, "--config.data.manual_dir=/archives",
          "--config.data.data_dir=/prepared"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=path, flag_values=values, sys_argv=argv,
                                  lock_config=True)
  values(argv)
  c = values.config
  assert (c.data.manual_dir, c.data.data_dir) == ("/archives", "/prepared")
  if "statistics" in c.loss.get("kwargs", {}):  # margin calibration: its statistics follow
    assert c.loss.kwargs.statistics.manual_dir == "/archives"
    assert c.loss.kwargs.statistics.data_dir == "/prepared"
  # Without the overrides the library sees None: "not given".
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=path, flag_values=values,
                                  sys_argv=["train.py"], lock_config=True)
  values(["train.py"])
  assert values.config.data.get("manual_dir") is None
  assert values.config.data.get("data_dir") is None


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
  """The README's VOC command, with an empty archive directory; 3 steps, shorter than the
  config's 500-step warmup."""
  tmp = tmp_path_factory.mktemp("voc")
  os.makedirs(tmp / "archives")
  proc = _train(["--config", os.path.join(ROOT, "configs", "voc_deeplabv3plus_lovasz.py"),
                 "--workdir", str(tmp / "run"), f"--config.data.manual_dir={tmp / 'archives'}",
                 f"--config.data.data_dir={tmp / 'tfds'}",
                 "--config.num_train_steps=3"])
  return proc, tmp


def test_command_line_data_location_reaches_the_dataset(voc_run):
  proc, tmp = voc_run
  line = _error_line(proc)
  assert "VOCtrainval_11-May-2012.tar" in line and str(tmp / "archives") in line, line


# ----------------------------------------------------------------------------------------------
# A misspelt override, with and without --config


@pytest.mark.parametrize("config", [None, "default"])
def test_misspelt_override_is_one_line(config, tmp_path):
  args = [] if config is None else ["--config", os.path.join(ROOT, "configs", config + ".py")]
  proc = _train(args + ["--workdir", str(tmp_path / "run"), "--config.num_train_stepz=3"])
  line = _error_line(proc)
  assert "num_train_stepz" in line, line


# ----------------------------------------------------------------------------------------------
# A run shorter than its warmup


@pytest.mark.parametrize("name", ["poly", "cosine", "constant"])
def test_warmup_longer_than_the_run_is_clamped(name):
  from jaxseg.training import optim  # pylint: disable=g-import-not-at-top
  schedule = {"name": name, "base_lr": 0.1, "warmup_steps": 30}
  f = optim.create_learning_rate_schedule(num_train_steps=3, **schedule)
  assert [float(f(k)) for k in range(3)] == pytest.approx([0.0, 0.05, 0.1])
  assert optim.effective_warmup_steps(warmup_steps=30, num_train_steps=3) == 2
  assert optim.effective_warmup_steps(warmup_steps=30, num_train_steps=31) == 30  # as given
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.create_learning_rate_schedule(num_train_steps=3, **dict(schedule, warmup_steps=-1))


def test_clamped_warmup_is_said_in_one_line(voc_run):
  proc, _ = voc_run
  lines = [l for l in proc.stdout.splitlines() if "warmup_steps" in l]
  assert lines == ["config.schedule.warmup_steps=500 is not shorter than the run "
                   "(config.num_train_steps=3): warming up over 2 step(s) instead."], (
                       proc.stdout[-2000:] + proc.stderr[-3000:])
