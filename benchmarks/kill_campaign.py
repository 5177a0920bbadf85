"""Kill campaign: train a tiny config under faults, start it again after each, and check that the
run loses nothing (``RELIABILITY.md`` records the results).

Usage (from the repository root):

    python benchmarks/kill_campaign.py --runs 20 --seed 0            # about 20-30 minutes
    python benchmarks/kill_campaign.py --runs 2 --faults kill9,sigterm --keep /tmp/campaign

Each run trains ``train.py`` with a tiny config (``unet_small`` on 16 x 16 ``shapes``, batch 4,
``--steps`` steps, a checkpoint every 5 steps, asynchronous saves, an evaluation every 10 steps,
TensorBoard on) in a fresh workdir, injects a fault chosen at random (seeded; the seed is
printed) into each start but the last, at a random step, and starts the same command again until
the run ends with exit status 0 (``--max-starts`` at most). The faults:

* ``kill9``: SIGKILL at a random moment;
* ``kill9_in_save``: the process exits (``os._exit``, as SIGKILL would) inside orbax's
  finalisation of an asynchronous save (all files written, the step directory not yet renamed);
* ``torn_line``: ``kill9``, then the last line of ``metrics.jsonl`` cut in the middle (what a
  kill during its write leaves);
* ``sigterm``, ``sigint``: one signal at a random moment (expects exit status 75);
* ``sigint2``: two Ctrl-C 10 ms apart (expects 130, or 75 if the save was written in between);
* ``damage``: after a ``sigterm``, a file of the latest checkpoint truncated to half (the next
  start moves the checkpoint aside and resumes from the one before; a run with a single
  checkpoint stops with exit status 1 and is then started with the damaged checkpoint moved away
  by hand, as its message says);
* ``enospc``: the write of the next checkpoint fails with ``OSError(ENOSPC)`` (expects exit
  status 1 with an ``ERROR:`` line naming the checkpoint's path).

Checks at the end of each run, against an uninterrupted reference run of the same config:
the final train state (parameters, statistics, optimiser state, random key) equal to the bit,
``metrics.jsonl`` holding each training step once with the reference's loss (exactly), one
final evaluation record and ``eval_<steps>.json``, TensorBoard events of each training step
once, no orbax temporary directory and no temporary file left. For each fault it records the
steps lost: the last step logged before the fault minus the step the next start resumed from.

The helpers (:func:`write_config`, :func:`start`, :func:`wait_for_step`, :func:`check_run`, ...)
are shared with ``tests/test_train_faults.py``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
if ROOT not in sys.path:  # run as a script: the checks read checkpoints with jaxseg
  sys.path.insert(0, ROOT)

from jaxseg._files import is_temporary  # noqa: E402  (after the path)

FAULTS = ("kill9", "kill9_in_save", "torn_line", "sigterm", "sigint", "sigint2", "damage",
          "enospc")

CONFIG = '''
from configs import common


def get_config():
  data = common.data_config("shapes")
  data.crop_size = (16, 16)
  data.scale_range = (0.75, 1.25)
  data.options = {{"image_size": 16, "num_train": 12, "num_validation": 4, "seed": 0}}
  c = common.base_config(data)
  c.model.name = "unet_small"
  c.model.options = {{"base_channels": 4, "depth": 2}}
  c.loss = {{"name": "lovasz_softmax", "kwargs": {{"per_image": False}}}}
  c.batch_size = c.eval_batch_size = 4
  c.num_train_steps = {steps}
  c.optim.name = "adam"
  c.optim.weight_decay = 1e-4
  c.schedule.name = "poly"
  c.schedule.base_lr = 1e-2
  c.log_every_steps = 1
  c.eval_every_steps = {eval_every}
  c.checkpoint_every_steps = {checkpoint_every}
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.progress_bar = False
  c.figures = False
  return c
'''

# Runs train.py, with the faults that need to be inside the process injected first.
LAUNCHER = r'''
import errno, os, runpy, sys
exit_in_finalize = int(os.environ.get("JAXSEG_FAULT_EXIT_IN_FINALIZE", "-1"))
enospc = int(os.environ.get("JAXSEG_FAULT_ENOSPC", "-1"))
if exit_in_finalize >= 0:
  # Killed inside an asynchronous save: every file of the step is written, orbax has not yet
  # renamed its temporary directory to the step's name.
  from orbax.checkpoint._src.path import atomicity
  _finalize = atomicity.AtomicRenameTemporaryPath.finalize
  async def finalize(self, *args, **kwargs):
    if self.get_final().name == str(exit_in_finalize):
      os._exit(9)
    return await _finalize(self, *args, **kwargs)
  atomicity.AtomicRenameTemporaryPath.finalize = finalize
if enospc >= 0:
  # The disk fills up while the checkpoint of that step is written.
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
  _save_fn = jch.JsonCheckpointHandler._save_fn
  async def save_fn(self, x, directory):
    if directory.parent.name.split(".")[0] == str(enospc):
      path = directory / "metadata"
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return await _save_fn(self, x, directory)
  jch.JsonCheckpointHandler._save_fn = save_fn
slow = float(os.environ.get("JAXSEG_FAULT_SLOW", "0"))
if slow > 0:
  # Each batch waits ``slow`` seconds, so that a signal sent after step k lands near step k.
  import time
  import jaxseg.data
  _iterator = jaxseg.data.create_train_iterator
  def create_train_iterator(**kwargs):
    for batch in _iterator(**kwargs):
      time.sleep(slow)
      yield batch
  jaxseg.data.create_train_iterator = create_train_iterator
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def write_config(path: str, *, steps: int, checkpoint_every: int = 5, eval_every: int = 10) -> str:
  with open(path, "w") as f:
    f.write(CONFIG.format(steps=steps, checkpoint_every=checkpoint_every, eval_every=eval_every))
  return path


def environment(cache_dir: str | None = None, **faults) -> dict:
  """The environment of the runs: CPU, the repository on the path, the compilation cache in
  ``cache_dir``, and ``faults`` for the launcher (``exit_in_finalize=<step>``,
  ``enospc=<step>``, ``slow=<seconds per batch>``)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  for name, value in faults.items():
    env[f"JAXSEG_FAULT_{name.upper()}"] = str(value)
  return env


def start(config: str, workdir: str, *, log: str, env: dict, args=()) -> subprocess.Popen:
  """Starts ``train.py --config <config> --workdir <workdir>`` (through the fault launcher)."""
  out = open(log, "a")
  return subprocess.Popen(
      [sys.executable, "-c", LAUNCHER, TRAIN, "--config", config, "--workdir", workdir, *args],
      stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True)


def records(workdir: str, split: str = "train") -> list[dict]:
  """The records of ``metrics.jsonl`` (a torn last line skipped)."""
  out = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          continue
        if r.get("split") == split:
          out.append(r)
  except FileNotFoundError:
    pass
  return out


def last_step(workdir: str) -> int:
  steps = [r["step"] for r in records(workdir)]
  return max(steps) if steps else 0


def wait_for_step(proc: subprocess.Popen, workdir: str, step: int, timeout: float = 300) -> bool:
  """Waits until ``metrics.jsonl`` logs ``step`` (True) or the process ends (False)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if last_step(workdir) >= step:
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.02)
  raise TimeoutError(f"step {step} not reached in {timeout} s in {workdir}")


def wait_for_start(proc: subprocess.Popen, log: str, starts: int, timeout: float = 300) -> bool:
  """Waits until ``log`` holds ``starts`` "Training ..." lines (the run has restored its
  checkpoint and trimmed its logs; True) or the process ends (False)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    with open(log) as f:
      if sum(l.startswith("Training ") for l in f) >= starts:
        return True
    if proc.poll() is not None:
      return False
    time.sleep(0.02)
  raise TimeoutError(f"{log}: no start of training in {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise


def resumed_step(log_text: str) -> int:
  found = re.findall(r"Resumed from the checkpoint of step (\d+)", log_text)
  return int(found[-1]) if found else 0


def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def leftovers(workdir: str) -> list[str]:
  """Orbax temporary directories and temporary files left in ``workdir``."""
  found = glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))
  found += [p for p in glob.glob(os.path.join(workdir, "**", ".*"), recursive=True)
            if is_temporary(p)]
  return sorted(found)


def truncate_largest_file(step_dir: str) -> str:
  files = [p for p in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
           if os.path.isfile(p)]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def tear_last_line(workdir: str) -> None:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, "rb") as f:
    data = f.read()
  last = data.rstrip(b"\n").rfind(b"\n") + 1
  with open(path, "wb") as f:
    f.write(data[:last + (len(data) - last) // 2])


def tensorboard_steps(workdir: str, tag: str = "train/loss") -> list[int]:
  """The steps of the ``tag`` events in the workdir's event files, in file order."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  steps = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("Q", data[pos:pos + 8])
      if pos + 16 + n > len(data):
        break
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      steps += [int(event.step) for v in event.summary.value if v.tag == tag]
      pos += 16 + n
  return steps


def check_run(workdir: str, reference: str, steps: int) -> list[str]:
  """What differs between the finished ``workdir`` and the uninterrupted ``reference``."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxseg.training import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  problems = []
  tree, step = ckpt_lib.restore_raw(workdir)
  ref_tree, ref_step = ckpt_lib.restore_raw(reference)
  if step != ref_step:
    problems.append(f"final checkpoint step {step}, reference {ref_step}")
  a, b = jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref_tree)
  if len(a) != len(b):
    problems.append("train state structure differs")
  differing = [jax.tree_util.keystr(p) for (p, x), y in zip(a, b) if not np.array_equal(x, y)]
  if differing:
    problems.append(f"train state not bit-exact: {differing[:4]}")
  got, want = records(workdir), records(reference)
  if [r["step"] for r in got] != list(range(1, steps + 1)):
    problems.append(f"metrics.jsonl train steps {[r['step'] for r in got]}")
  elif [r["loss"] for r in got] != [r["loss"] for r in want]:
    problems.append("metrics.jsonl losses differ from the reference")
  evals = [r["step"] for r in records(workdir, "eval")]
  if evals != [r["step"] for r in records(reference, "eval")]:
    problems.append(f"metrics.jsonl eval steps {evals}")
  if not os.path.exists(os.path.join(workdir, f"eval_{steps:06d}.json")):
    problems.append("no final eval json")
  tb = tensorboard_steps(workdir)
  if sorted(tb) != list(range(1, steps + 1)):
    problems.append(f"TensorBoard train/loss steps {sorted(tb)}")
  if leftovers(workdir):
    problems.append(f"left behind: {leftovers(workdir)}")
  return problems


# ----------------------------------------------------------------------------------------------
# The campaign


def _plain_start(config, workdir, log, env):
  offset = os.path.getsize(log) if os.path.exists(log) else 0
  t0 = time.time()
  rc = finish(start(config, workdir, log=log, env=env))
  with open(log) as f:
    f.seek(offset)
    text = f.read()
  return dict(fault=None, rc=rc, resumed_from=resumed_step(text), last_logged=last_step(workdir),
              seconds=round(time.time() - t0, 1),
              error=[l for l in text.splitlines() if l.startswith("ERROR:")])


def _one_start(config, workdir, log, env, fault, rng, steps):
  """Starts the run once with ``fault``; returns what happened."""
  before = last_step(workdir)
  ckpts = checkpoint_steps(workdir)
  faults = {}
  if fault == "kill9_in_save":
    faults["exit_in_finalize"] = (max(ckpts + [before]) // 5 + 1) * 5
  if fault == "enospc":
    faults["enospc"] = (max(ckpts + [before]) // 5 + 1) * 5
  offset = os.path.getsize(log) if os.path.exists(log) else 0
  proc = start(config, workdir, log=log,
               env=dict(env, **{f"JAXSEG_FAULT_{k.upper()}": str(v) for k, v in faults.items()}))
  t0 = time.time()
  target = rng.randint(before + 1, max(before + 1, steps - 1))
  sent = None
  if fault in ("kill9", "torn_line", "sigterm", "sigint", "sigint2", "damage"):
    if wait_for_step(proc, workdir, target):
      time.sleep(rng.uniform(0.0, 0.1))
      sent = last_step(workdir)
      if fault in ("kill9", "torn_line"):
        proc.send_signal(signal.SIGKILL)
      elif fault == "sigint2":
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
      else:
        proc.send_signal(signal.SIGINT if fault == "sigint" else signal.SIGTERM)
  rc = finish(proc)
  with open(log) as f:
    f.seek(offset)
    text = f.read()
  at_end = last_step(workdir)
  complete = checkpoint_steps(workdir)
  if fault == "torn_line" and rc != 0:
    tear_last_line(workdir)
  damaged = None
  if fault == "damage" and rc != 0 and checkpoint_steps(workdir):
    damaged = truncate_largest_file(os.path.join(workdir, "checkpoints",
                                                 str(checkpoint_steps(workdir)[-1])))
  return dict(fault=fault, rc=rc, signalled_at=sent, last_logged=at_end,
              latest_complete=complete[-1] if complete else 0, resumed_from=resumed_step(text), seconds=round(time.time() - t0, 1),
              damaged=damaged, error=[l for l in text.splitlines()
                                      if l.startswith(("ERROR:", "PREEMPTED:", "ABORTED:",
                                                       "WARNING: the checkpoint"))])


EXPECTED_RC = {"kill9": {-9}, "torn_line": {-9}, "kill9_in_save": {9}, "sigterm": {75},
               "sigint": {75}, "sigint2": {130, 75}, "damage": {75}, "enospc": {1}}


def campaign(runs: int, seed: int, steps: int, faults, max_starts: int, keep: str | None,
             slow: float = 0.05):
  rng = random.Random(seed)
  base = keep or tempfile.mkdtemp(prefix="kill_campaign_")
  os.makedirs(base, exist_ok=True)
  cache = os.path.join(base, "jit_cache")
  env = environment(cache)
  config = write_config(os.path.join(base, "config.py"), steps=steps)
  reference = os.path.join(base, "reference")
  shutil.rmtree(reference, ignore_errors=True)
  t0 = time.time()
  rc = finish(start(config, reference, log=os.path.join(base, "reference.log"), env=env))
  assert rc == 0, open(os.path.join(base, "reference.log")).read()[-3000:]
  print(f"seed {seed}; reference run {time.time() - t0:.1f} s; workdirs under {base}", flush=True)
  env = dict(env, JAXSEG_FAULT_SLOW=str(slow))   # each step of the runs takes ``slow`` s or more
  results = []
  for i in range(runs):
    workdir = os.path.join(base, f"run{i:03d}")
    log = workdir + ".log"
    shutil.rmtree(workdir, ignore_errors=True)
    starts = []
    all_damaged = False   # the last start damaged the only checkpoint
    while True:
      if all_damaged:   # the next start must refuse to start afresh
        s = _plain_start(config, workdir, log, env)
        s["fault"] = "(every checkpoint damaged)"
        if s["rc"] == 1 and any("Every checkpoint" in l for l in s["error"]):
          s["rc_ok"] = True
          # As the message says: move them away to start afresh.
          shutil.move(os.path.join(workdir, "checkpoints"), workdir + ".damaged_by_hand")
        starts.append(s)
        all_damaged = False
        continue
      if len(starts) + 1 >= max_starts:
        starts.append(_plain_start(config, workdir, log, env))
        break
      fault = rng.choice(faults)
      s = _one_start(config, workdir, log, env, fault, rng, steps)
      starts.append(s)
      if s["rc"] == 0:
        break
      all_damaged = bool(s["damaged"]) and len(checkpoint_steps(workdir)) == 1
    problems = check_run(workdir, reference, steps) if starts[-1]["rc"] == 0 else ["not done"]
    for prev, nxt in zip(starts, starts[1:]):
      prev["lost_steps"] = max(0, prev["last_logged"] - nxt["resumed_from"])
      expected = EXPECTED_RC.get(prev["fault"], {1} if prev.get("rc_ok") else set()) | {0}
      if prev["rc"] not in expected:
        problems.append(f"{prev['fault']}: exit status {prev['rc']}")
      # At most the steps since the latest complete checkpoint (none after a signal's save);
      # a damaged checkpoint loses the steps back to the checkpoint before it.
      bound = prev["last_logged"] - prev.get("latest_complete", nxt["resumed_from"])
      if prev["fault"] in FAULTS and prev["fault"] != "damage" and prev["lost_steps"] > bound:
        problems.append(f"{prev['fault']}: lost {prev['lost_steps']} steps, bound {bound}")
      if prev["rc"] == 75 and prev["fault"] != "damage" and prev["lost_steps"]:
        problems.append(f"{prev['fault']}: exit status 75 but {prev['lost_steps']} steps lost")
    results.append(dict(run=i, starts=starts, problems=problems))
    print(f"run {i}: " + " -> ".join(f"{s['fault'] or 'none'}(rc {s['rc']}, lost "
                                     f"{s.get('lost_steps', 0)})" for s in starts)
          + (f"  PROBLEMS: {problems}" if problems else "  ok"), flush=True)
  return results, time.time() - t0


def summarize(results) -> str:
  """A Markdown table: per fault, how often it was injected and landed (the run had not ended),
  the exit statuses, and the steps lost (the last step logged before the fault minus the step
  the next start resumed from)."""
  per_fault = collections.defaultdict(lambda: {"n": 0, "landed": 0, "lost": [],
                                               "rc": collections.Counter()})
  for r in results:
    for s in r["starts"][:-1]:
      d = per_fault[s["fault"]]
      d["n"] += 1
      d["rc"][s["rc"]] += 1
      if s["rc"] != 0:
        d["landed"] += 1
        d["lost"].append(s.get("lost_steps", 0))
  lines = ["| fault | injected | landed | exit statuses | steps lost: max | mean |",
           "|---|---|---|---|---|---|"]
  for fault in FAULTS + ("(every checkpoint damaged)",):
    if fault in per_fault:
      d = per_fault[fault]
      lost = d["lost"] or [0]
      lines.append(f"| {fault} | {d['n']} | {d['landed']} | "
                   f"{', '.join(f'{k}: {v}' for k, v in sorted(d['rc'].items()))} | "
                   f"{max(lost)} | {sum(lost) / len(lost):.1f} |")
  bad = [r for r in results if r["problems"]]
  lines.append(f"\n{len(results)} runs, {sum(len(r['starts']) for r in results)} starts; "
               f"runs that did not end bit-exact, or broke a bound: {len(bad)}")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--faults", default=",".join(FAULTS))
  p.add_argument("--max-starts", type=int, default=5)
  p.add_argument("--slow", type=float, default=0.05, help="seconds each step waits for its batch")
  p.add_argument("--keep", default=None, help="directory for the workdirs (default: a temp dir)")
  p.add_argument("--out", default=None, help="write the results as JSON here")
  a = p.parse_args(argv)
  results, seconds = campaign(a.runs, a.seed, a.steps, a.faults.split(","), a.max_starts, a.keep,
                              a.slow)
  print(summarize(results))
  print(f"total {seconds / 60:.1f} min")
  if a.out:
    with open(a.out, "w") as f:
      json.dump({"seed": a.seed, "steps": a.steps, "slow": a.slow, "minutes": seconds / 60,
                 "results": results}, f, indent=1)
  return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
