"""Training that loses nothing: kills, signals, damaged checkpoints, a full disk, a finished run.

The guarantee (``RELIABILITY.md``): a run loses at most the steps since its last complete
checkpoint, and the next start in the same workdir follows the trajectory of an uninterrupted run
to the bit (train state, ``metrics.jsonl``, TensorBoard); it never starts over silently.

* In subprocesses (``train.py`` through ``benchmarks/kill_campaign.py``'s fault launcher, sharing
  the session's compilation cache): a kill inside an asynchronous save (orbax's finalisation
  patched to ``os._exit``), a torn last line of ``metrics.jsonl``, a SIGKILL at a seeded random
  moment (the seed is printed), a SIGTERM (exit status 75), then a start that finishes the run;
  two processes joined by ``jax.distributed`` stopping at the same step after a SIGTERM to one.
* In this process (cheaper): SIGTERM saves the current step within one step and the resumed run
  is exact; a signal during an evaluation abandons the evaluation, not the save; a second signal
  aborts at once; a damaged latest checkpoint is moved aside; every checkpoint damaged is an
  error; a disk full while saving is an error naming the path; a finished run started again
  does not evaluate again unless its final evaluation is missing.

``python benchmarks/kill_campaign.py`` runs the longer campaign.
"""

import errno
import glob
import importlib.util
import os
import random
import shutil
import signal
import socket
import threading
import time

import pytest

from benchmarks import kill_campaign as kc
from jaxseg import data as data_lib
from jaxseg.training import checkpoint as ckpt_lib
from jaxseg.training import loop
from jaxseg.training import preemption

# 6 steps of tests/test_train_checkpoint.py's model, data and optimiser: the same compiled
# programs (one compilation cache for the session).
STEPS, EVERY, EVAL_EVERY = 6, 2, 4   # checkpoints 2, 4, 6; evaluations 4, 6

# A damaged checkpoint's failed reads leave tensorstore futures whose callbacks find orbax's event
# loop closed when they are collected (later, in whichever test runs then): noise, not a fault.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


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


def _signal_at(monkeypatch, step, *signals):
  """The train iterator sends ``signals`` to this process while it yields the batch of
  ``step``."""
  original = data_lib.create_train_iterator

  def wrapped(*, start_step=0, **kw):
    def gen():
      for k, batch in enumerate(original(start_step=start_step, **kw), start_step + 1):
        if k == step:
          for sig in signals:
            os.kill(os.getpid(), sig)
        yield batch
    return gen()

  monkeypatch.setattr(data_lib, "create_train_iterator", wrapped)


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGINT in one process


def test_signals_save_the_current_step_and_the_resumed_run_is_exact(setup, tmp_path,
                                                                  monkeypatch):
  workdir = str(tmp_path / "run")
  handler = signal.getsignal(signal.SIGTERM)
  # A preemption notice while step 3 is prepared: step 3 is taken, written, and the run stops.
  _signal_at(monkeypatch, 3, signal.SIGTERM)
  with pytest.raises(preemption.Preempted) as info:
    loop.train_and_evaluate(setup["config"](), workdir)
  assert info.value.step == 3 and info.value.signal_name == "SIGTERM"   # within one step
  assert "checkpoints" in str(info.value) and "75" in str(info.value)
  assert signal.getsignal(signal.SIGTERM) is handler   # the handler was restored
  assert kc.checkpoint_steps(workdir) == [2, 3]        # written, not only started
  assert kc.last_step(workdir) == 3
  monkeypatch.undo()
  # Resumed, then Ctrl-C as the evaluation of step 4 starts: the evaluation is abandoned, the
  # checkpoint of step 4 is written.
  original = data_lib.create_eval_iterator

  def interrupted(**kw):
    os.kill(os.getpid(), signal.SIGINT)
    yield from original(**kw)

  monkeypatch.setattr(data_lib, "create_eval_iterator", interrupted)
  with pytest.raises(preemption.Preempted) as info:
    loop.train_and_evaluate(setup["config"](), workdir)
  assert info.value.step == EVAL_EVERY and info.value.signal_name == "SIGINT"
  assert kc.checkpoint_steps(workdir) == [2, 3, 4]
  assert not os.path.exists(os.path.join(workdir, "eval_000004.json"))
  assert kc.records(workdir, "eval") == []
  monkeypatch.undo()
  # The next start evaluates step 4 first, then trains on: exactly the uninterrupted run.
  loop.train_and_evaluate(setup["config"](), workdir)
  assert kc.check_run(workdir, setup["reference"], STEPS) == []
  assert [r["step"] for r in kc.records(workdir, "eval")] == [4, 6]


def test_a_second_signal_aborts_at_once(setup, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  # (default_int_handler, or SIG_IGN in a background job of a non-interactive shell)
  before = signal.getsignal(signal.SIGINT)
  _signal_at(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(setup["config"](), workdir)
  assert signal.getsignal(signal.SIGINT) is before   # the handler before the run is back
  assert kc.last_step(workdir) == 2   # step 3 was not taken, nor saved
  deadline = time.time() + 30   # (the save of step 2, not waited for, ends in its thread)
  while kc.checkpoint_steps(workdir) != [2] and time.time() < deadline:
    time.sleep(0.05)
  assert kc.checkpoint_steps(workdir) == [2]


def test_watch_installs_handlers_only_in_the_main_thread_and_restores_them():
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with preemption.PreemptionWatch(lambda step: False, distributed=False) as watch:
    assert signal.getsignal(signal.SIGTERM) == watch._handle  # pylint: disable=protected-access
    assert not watch.should_stop(1)
  assert {s: signal.getsignal(s) for s in before} == before
  seen = []

  def other_thread():
    with preemption.PreemptionWatch(lambda step: False, distributed=False):
      seen.append(signal.getsignal(signal.SIGTERM))

  t = threading.Thread(target=other_thread)
  t.start()
  t.join()
  assert seen == [before[signal.SIGTERM]]
  # With JAX's preemption service (several processes), SIGTERM stays JAX's; the agreed step
  # decides.
  with preemption.PreemptionWatch(lambda step: step == 3, distributed=True) as watch:
    assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    assert [watch.should_stop(s) for s in (1, 2, 3)] == [False, False, True]


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


def test_damaged_latest_checkpoints_are_moved_aside(setup, tmp_path, capsys):
  workdir = _copy_reference(setup, tmp_path)
  _truncated(os.path.join(workdir, "checkpoints", "6"))
  _no_step_metadata(os.path.join(workdir, "checkpoints", "4"))
  loop.train_and_evaluate(setup["config"](), workdir)
  err = capsys.readouterr().err
  for step in (4, 6):
    moved = os.path.join(workdir, "checkpoints.damaged", str(step))
    assert f"the checkpoint of step {step} is damaged" in err and moved in err, err
    assert os.path.isdir(moved)
  assert "resuming from the checkpoint of step 2" in err
  # Resumed from step 2, trained 3-6 again (and saved 4 and 6 again): exactly the reference.
  assert kc.check_run(workdir, setup["reference"], STEPS) == []


def test_every_checkpoint_damaged_is_an_error_and_nothing_starts_afresh(setup, tmp_path):
  workdir = _copy_reference(setup, tmp_path)
  _file_missing(os.path.join(workdir, "checkpoints", "2"))
  _no_step_metadata(os.path.join(workdir, "checkpoints", "4"))
  _truncated(os.path.join(workdir, "checkpoints", "6"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = f.read()
  with pytest.raises(ckpt_lib.DamagedCheckpointError, match="Every checkpoint") as info:
    loop.train_and_evaluate(setup["config"](), workdir)
  message = str(info.value)
  assert "step 2: " in message and "does not read" in message
  assert "step 4: " in message and "_CHECKPOINT_METADATA is missing" in message
  assert "step 6: " in message
  assert kc.checkpoint_steps(workdir) == [2, 4, 6]   # nothing moved, nothing truncated
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
  _disk_full_at(monkeypatch, 4)
  with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
    loop.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert os.path.join(workdir, "checkpoints", "4") in message, message
  assert "No space left on device" in message and "latest: step 2" in message, message
  # The synchronous save fails at step 4; the asynchronous one is found out by the next save.
  assert kc.last_step(workdir) == (STEPS if async_save else 4)
  assert kc.checkpoint_steps(workdir) == [2]   # the last good checkpoint is kept
  if async_save:
    monkeypatch.undo()   # space again: the next start resumes from step 2
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
  for leftover in (".metrics.jsonl.123.0123456789ab.tmp", ".config.json.7.abcdef012345.tmp"):
    # rewrites killed midway
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
  assert [r["step"] for r in kc.records(workdir, "eval")] == [4, 6]   # logged once each


# ----------------------------------------------------------------------------------------------
# train.py in subprocesses: kill -9, inside an asynchronous save too, and SIGTERM


def test_killed_and_preempted_program_resumes_exactly(setup, tmp_path):
  seed = int(os.environ.get("JAXSEG_FAULT_SEED", random.SystemRandom().randrange(10**6)))
  print(f"kill test seed: {seed} (JAXSEG_FAULT_SEED={seed} repeats it)")
  rng = random.Random(seed)
  workdir, log = str(tmp_path / "run"), str(tmp_path / "run.log")
  env = kc.environment(setup["cache"], slow=0.25)

  def launch(**faults):
    return kc.start(setup["config_path"], workdir, log=log, env=dict(
        env, **{f"JAXSEG_FAULT_{k.upper()}": str(v) for k, v in faults.items()}))

  def output():
    with open(log) as f:
      return f.read()

  # 1. Killed inside the asynchronous save of step 4: every file written, not yet renamed.
  rc = kc.finish(launch(exit_in_finalize=4))
  assert rc == 9, output()[-3000:]
  assert kc.checkpoint_steps(workdir) == [2]
  assert glob.glob(os.path.join(workdir, "checkpoints", "4.orbax-checkpoint-tmp*"))
  kc.tear_last_line(workdir)   # and a line of metrics.jsonl torn by the kill
  # 2. SIGKILL at a random moment of the resumed run (each step takes 0.25 s or more).
  proc = launch()
  if kc.wait_for_start(proc, log, 2):
    time.sleep(rng.uniform(0.0, 0.25 * (STEPS - 2)))
    proc.send_signal(signal.SIGKILL)
  rc = kc.finish(proc)
  assert rc in (-signal.SIGKILL, 0), output()[-3000:]
  assert "Resumed from the checkpoint of step 2" in output()
  # 3. SIGTERM (a preemption notice) at a random moment: the current step is written, exit
  # status 75 and one line.
  proc = launch()
  if kc.wait_for_start(proc, log, 3):
    time.sleep(rng.uniform(0.0, 0.2))   # before the first step of the run ends
    proc.send_signal(signal.SIGTERM)
  rc = kc.finish(proc)
  text = output()
  if kc.resumed_step(text) < STEPS:   # (else the kill came after the last save: nothing to train)
    assert rc == 75, text[-3000:]
    lines = [l for l in text.splitlines() if l.startswith("PREEMPTED: SIGTERM")]
    assert len(lines) == 1, text[-3000:]
    saved = int(lines[0].split("checkpoint of step ")[1].split()[0])
    assert saved in kc.checkpoint_steps(workdir) and saved == kc.last_step(workdir)
  # 4. The next start (here in-process) resumes there and ends as the uninterrupted run.
  loop.train_and_evaluate(setup["config"](), workdir)
  assert kc.check_run(workdir, setup["reference"], STEPS) == []


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_stop_at_the_same_step_after_a_sigterm_to_one(setup, tmp_path):
  config = kc.write_config(str(tmp_path / "long.py"), steps=400, checkpoint_every=1000,
                           eval_every=0)
  workdir, port = str(tmp_path / "run"), _free_port()
  env = kc.environment(setup["cache"])
  procs, logs = [], []
  for pid in range(2):
    logs.append(str(tmp_path / f"p{pid}.log"))
    procs.append(kc.start(config, workdir, log=logs[-1], env=env, args=[
        "--config.distributed.enabled=True",
        f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]))
  try:
    assert kc.wait_for_step(procs[0], workdir, 2, timeout=400)
    procs[1].send_signal(signal.SIGTERM)   # JAX's notice reaches process 0 through the service
    rcs = [kc.finish(p, timeout=200) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = []
  for path in logs:
    with open(path) as f:
      texts.append(f.read())
  assert rcs == [75, 75], [t[-2000:] for t in texts]
  stops = [[l for l in t.splitlines() if l.startswith("PREEMPTED:")] for t in texts]
  assert len(stops[0]) == len(stops[1]) == 1 and stops[0] == stops[1], stops
  step = int(stops[0][0].split("checkpoint of step ")[1].split()[0])
  assert 2 < step < 400
  assert kc.checkpoint_steps(workdir) == [step] and kc.leftovers(workdir) == []
  assert ckpt_lib.restore_raw(workdir)[1] == step and kc.last_step(workdir) == step
