"""Compile time of Lovász-Softmax's value_and_grad: jaxseg against a naive argsort port.

Usage (from the repository root, or with the repository on PYTHONPATH):

    python benchmarks/bench_compile.py                    # 3 cases, median of 3 runs, CPU
    python benchmarks/bench_compile.py --tiny             # smoke run: H, W / 10, 1 run
    python benchmarks/bench_compile.py --cases voc_batch --runs 5 --formulations default,pairs
    python benchmarks/bench_compile.py --backend gpu --out gpu_compile.md

What is compiled: ``jax.jit(jax.value_and_grad(loss))`` with the logits ``[B, H, W, C]`` float32
and the labels ``[B, H, W]`` int32 both as arguments, given as ``jax.ShapeDtypeStruct``s (no
data): ``.lower(...)`` (tracing and lowering to StableHLO) and ``.compile()`` (XLA) are timed
separately. Cases (shapes of benchmarks/bench_lovasz.py): ``voc_batch`` 8 x 321 x 321 x 21
batch-level, ``voc_image`` the same per image, ``cityscapes_batch`` 2 x 512 x 1024 x 19
batch-level.

Implementations:

* ``jaxseg``: ``jaxseg.losses.lovasz_softmax``: the default call (no ``sort=``) and, when it takes
  ``sort=``, every formulation of ``jaxseg.losses.extension.SORT_FORMULATIONS`` except ``"auto"``
  (``--formulations`` selects);
* ``naive``: ``naive_lovasz_softmax`` below, a direct port of Algorithm 1 of Berman et al. (CVPR
  2018): per class, ``jnp.argsort`` of the errors decreasingly, the Jaccard loss from cumulative
  sums of the sorted ground truth, the increments as differences of consecutive Jaccard values,
  and their dot product with the sorted errors; ``jax.vmap`` over classes (and images per image),
  void pixels masked, mean over present classes. It gives the same value (checked at
  ``--check-scale`` before timing).

Every measurement is a FRESH subprocess (``--child``) with the persistent compilation cache off
(``jax.config.update("jax_enable_compilation_cache", False)``), so nothing is reused from an
earlier compilation; before the measured function each child compiles a tiny unrelated jitted
sort, so that one-time backend and compiler initialisation is not counted for either side. Per
round, every case runs naive and each jaxseg variant one after the other (naive first in odd
rounds, last in even ones); the table gives the medians over ``--runs`` rounds and the ratio
jaxseg / naive of lowering + compilation.

Duration at full size on the 2-core CPU: each child costs the JAX start (about 2 s) plus its
lowering and compilation (a few seconds), so 3 cases x 5 implementations x 3 runs is about 4-6
minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lovasz import CASES, TINY_SCALE, Report, make_case, one_line, scaled  # noqa: E402

COMPILE_CASES = ("voc_batch", "voc_image", "cityscapes_batch")


def naive_lovasz_softmax(logits, labels, *, per_image=False, ignore_index=255):
  """Algorithm 1 of the paper, vmapped: argsort per class, Jaccard from cumsums, differences."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  batch = labels.shape[0]
  probs = probs.reshape(batch, -1, num_classes)
  labels = labels.reshape(batch, -1)
  if not per_image:
    probs, labels = probs.reshape(1, -1, num_classes), labels.reshape(1, -1)

  def class_loss(p, fg, valid):  # [P] each
    errors = jnp.where(valid, jnp.abs(fg - p), 0.0)
    order = jnp.argsort(-errors)
    errors_sorted, fg_sorted, valid_sorted = errors[order], fg[order], valid[order]
    gts = jnp.sum(fg)
    intersection = gts - jnp.cumsum(fg_sorted)
    union = gts + jnp.cumsum((1.0 - fg_sorted) * valid_sorted)
    jaccard = jnp.where(union > 0, 1.0 - intersection / jnp.maximum(union, 1.0), 0.0)
    increments = jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jnp.dot(errors_sorted, lax.stop_gradient(increments))

  def group_loss(p, lab):  # p [P, C], lab [P]
    valid = (lab != ignore_index).astype(jnp.float32)
    fg = (lab[None, :] == jnp.arange(num_classes)[:, None]).astype(jnp.float32) * valid
    losses = jax.vmap(class_loss, in_axes=(0, 0, None))(p.T, fg, valid)
    present = jnp.sum(fg, axis=-1) > 0
    return jnp.sum(jnp.where(present, losses, 0.0)) / jnp.maximum(jnp.sum(present), 1)

  return jnp.mean(jax.vmap(group_loss)(probs, labels))


def loss_fn(impl, per_image):
  if impl == "naive":
    return lambda a, l: naive_lovasz_softmax(a, l, per_image=per_image)
  from jaxseg.losses import lovasz_softmax
  formulation = impl.split(":", 1)[1]
  kwargs = {} if formulation == "default" else {"sort": formulation}
  return lambda a, l: lovasz_softmax(a, l, per_image=per_image, **kwargs)


def child(args):
  import jax
  import jax.numpy as jnp
  jax.config.update("jax_enable_compilation_cache", False)
  impl, name = args.child.split("@")
  _, b, h, w, c, per_image, *_ = CASES[name]
  h, w = scaled(h, args.scale), scaled(w, args.scale)
  # One-time initialisation (backend, compiler) outside the measurement.
  jax.jit(lambda x: jnp.sort(x) + 1).lower(jax.ShapeDtypeStruct((8,), jnp.float32)).compile()
  fn = jax.jit(jax.value_and_grad(loss_fn(impl, per_image)))
  start = time.perf_counter()
  lowered = fn.lower(jax.ShapeDtypeStruct((b, h, w, c), jnp.float32),
                     jax.ShapeDtypeStruct((b, h, w), jnp.int32))
  lowered_at = time.perf_counter()
  lowered.compile()
  done = time.perf_counter()
  print("COMPILE " + json.dumps({"lower_s": lowered_at - start, "compile_s": done - lowered_at,
                                 "shape": f"{b}x{h}x{w}x{c}", "per_image": per_image,
                                 "platform": jax.devices()[0].platform}), flush=True)


def check_child(args):
  """Value and gradient of naive and jaxseg (default) on a case's data at --check-scale."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  name = args.check_child
  logits, labels, per_image, _, _ = make_case(name, args.check_scale)
  out = {}
  for impl in ("naive", "jaxseg:default"):
    value, grad = jax.jit(jax.value_and_grad(loss_fn(impl, per_image)))(
        jnp.asarray(logits), jnp.asarray(labels))
    out[impl] = (float(value), np.asarray(grad))
  (v0, g0), (v1, g1) = out["naive"], out["jaxseg:default"]
  print("CHECK " + json.dumps({"naive": v0, "jaxseg": v1,
                               "max_grad_diff": float(np.max(np.abs(g0 - g1)))}), flush=True)


def run_child(args, flag, value, prefix):
  cmd = [sys.executable, os.path.abspath(__file__), "--backend", args.backend, "--scale",
         str(args.scale), "--check-scale", str(args.check_scale), flag, value]
  env = dict(os.environ)
  if args.backend == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(prefix):
      return json.loads(line[len(prefix):])
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  raise RuntimeError(f"{value}: exit status {proc.returncode}: {tail}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--backend", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--cases", default=",".join(COMPILE_CASES))
  parser.add_argument("--formulations", default="all",
                      help="jaxseg: 'all', 'default' or a comma list of sort formulations")
  parser.add_argument("--runs", type=int, default=3, help="fresh processes per measurement")
  parser.add_argument("--scale", type=float, default=1.0, help="multiply H and W (testing)")
  parser.add_argument("--tiny", action="store_true", help=f"--scale {TINY_SCALE}, --runs 1")
  parser.add_argument("--check-scale", type=float, default=TINY_SCALE,
                      help="scale of the naive-vs-jaxseg value check (0: no check)")
  parser.add_argument("--timeout", type=int, default=600, help="seconds per subprocess")
  parser.add_argument("--out", default=None, help="append the Markdown output here")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--check-child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.backend == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.child:
    return child(args)
  if args.check_child:
    return check_child(args)
  if args.tiny:
    args.scale, args.runs = TINY_SCALE, 1

  from bench_lovasz import jax_formulations, sort_support
  import jax
  import jaxlib
  import jaxseg
  has_sort, formulations = sort_support()
  impls = ["naive"] + [f"jaxseg:{f}" for f in
                       jax_formulations(args.formulations, has_sort, formulations)]
  cases = args.cases.split(",")
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    parser.error(f"unknown cases {unknown}")
  report = Report(args.out)
  report.line()
  report.line(f"## Compile time of value_and_grad(lovasz_softmax), "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
  report.line()
  report.line(f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend {args.backend}; "
              f"jaxseg from {os.path.dirname(jaxseg.__file__)} (sort= "
              f"{'yes' if has_sort else 'no'}); load average "
              + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
  report.line(f"- each number: median of {args.runs} fresh processes, compilation cache off; "
              f"scale {args.scale}")
  started = time.perf_counter()

  if args.check_scale > 0:
    for name in cases:
      try:
        r = run_child(args, "--check-child", name, "CHECK ")
        ok = abs(r["naive"] - r["jaxseg"]) <= 1e-4 * max(1.0, abs(r["naive"]))
        report.line(f"- value check {name} at scale {args.check_scale}: naive {r['naive']:.6f}, "
                    f"jaxseg {r['jaxseg']:.6f}, max gradient difference "
                    f"{r['max_grad_diff']:.1e}" + ("" if ok else " **MISMATCH**"))
      except Exception as exc:  # pylint: disable=broad-except
        report.line(f"- value check {name}: **{one_line(exc)}**")

  times = {}
  for run in range(args.runs):
    order = impls if run % 2 == 0 else impls[1:] + impls[:1]
    for name in cases:
      for impl in order:
        try:
          r = run_child(args, "--child", f"{impl}@{name}", "COMPILE ")
          times.setdefault((name, impl), []).append(r)
        except Exception as exc:  # pylint: disable=broad-except
          times.setdefault((name, impl), []).append({"error": one_line(exc)})
    print(f"(round {run + 1}/{args.runs} done, {time.perf_counter() - started:.0f} s)",
          flush=True)

  report.line()
  report.line("| case | shape | implementation | lower s | compile s | lower + compile s | "
              "jaxseg / naive |")
  report.line("|---|---|---|---|---|---|---|")
  for name in cases:
    medians = {}
    for impl in impls:
      runs = times.get((name, impl), [])
      good = [r for r in runs if "error" not in r]
      if not good:
        error = runs[0]["error"] if runs else "not run"
        report.line(f"| {name} | | {impl} | **{error}** | | | |")
        continue
      lower = statistics.median(r["lower_s"] for r in good)
      comp = statistics.median(r["compile_s"] for r in good)
      total = statistics.median(r["lower_s"] + r["compile_s"] for r in good)
      medians[impl] = total
      ratio = "" if impl == "naive" or "naive" not in medians else (
          f"{total / medians['naive']:.2f}")
      note = "" if len(good) == len(runs) else f" ({len(runs) - len(good)} failed)"
      report.line(f"| {name} | {good[0]['shape']} | {impl}{note} | {lower:.2f} | {comp:.2f} | "
                  f"{total:.2f} | {ratio} |")
  report.line()
  report.line(f"(compile benchmark: {time.perf_counter() - started:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
