"""What Lovász-Softmax costs in a training step: DeepLab-v3+ ResNet-50, CE vs CE + Lovász.

Usage (from the repository root, or with the repository on PYTHONPATH):

    python benchmarks/bench_train_step.py --backend gpu --out gpu_bench.md   # 8 x 321 x 321
    python benchmarks/bench_train_step.py --backend gpu --quick              # 3 timed steps
    python benchmarks/bench_train_step.py --tiny          # CPU smoke run: small model, 2 x 32 x 32
    python benchmarks/bench_train_step.py --lovasz-sorts default,pairs,batched

Also run by ``benchmarks/bench_lovasz.py --backend gpu`` (in a subprocess). One jitted training
step, written here with jaxseg.models + jaxseg.losses + optax only (not jaxseg.training, which
imports TensorFlow): ``models.create("deeplabv3plus_resnet50", num_classes=21, dtype=...)``,
``models.init_variables``, ``jax.value_and_grad`` of the loss of the float32 logits at full
resolution (train mode: BatchNorm batch statistics, dropout), then ``optax.sgd(0.01,
momentum=0.9)`` update; parameters, BatchNorm statistics and optimiser state are donated.
Compute dtype: bfloat16 when the model takes a ``dtype`` option (``--dtype auto``), else float32;
the header says which. Inputs: images ~ N(0, 1), VOC-like labels (bench_lovasz.voc_like_labels:
background, one to three objects per image, void borders), 21 classes.

Rows (each: lower and compile time apart, the first call, median and min of ``--repeats`` steps
after ``--warmup`` more; each step waits for all its outputs):

* ``cross-entropy``: ``jaxseg.losses.cross_entropy`` alone;
* ``cross-entropy + Lovász-Softmax (<sort>)``: ``cross_entropy + lovasz_softmax`` (batch-level,
  present classes), once per ``--lovasz-sorts`` entry (``default``: no ``sort=`` argument);
* the loss alone: jitted ``value_and_grad`` of each loss on float32 logits of the step's shape
  (the train-mode logits of the initialised model on the same images), for comparison; its
  share is its median over the median of the step with the same Lovász.

"Lovász share" = (step with Lovász - step without) / step with Lovász, from the medians.
``peak GiB`` is JAX's ``peak_bytes_in_use`` of the process so far where the backend reports it (it
cannot be reset: each row is the maximum over this row and those above). Rows are printed as a
Markdown table and appended to ``--out`` as they are produced.

``--tiny``: ``deeplabv3plus_resnet18_small`` at 2 x 32 x 32 with one repeat, for testing the
script on a CPU in seconds (the full-size step on a 2-core CPU takes about 35 s per step and a
few minutes to compile).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--backend", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--model", default=None, help="default deeplabv3plus_resnet50 "
                      "(--tiny: deeplabv3plus_resnet18_small)")
  parser.add_argument("--batch", type=int, default=None, help="default 8 (--tiny: 2)")
  parser.add_argument("--size", type=int, default=None, help="H = W, default 321 (--tiny: 32)")
  parser.add_argument("--classes", type=int, default=21)
  parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
  parser.add_argument("--lovasz-sorts", default="default",
                      help="comma list: 'default' (no sort= argument) and/or formulations")
  parser.add_argument("--no-loss-alone", action="store_true")
  parser.add_argument("--repeats", type=int, default=None, help="default 10 (--quick: 3)")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--out", default=None, help="append the Markdown output to this file")
  args = parser.parse_args(argv)
  args.model = args.model or ("deeplabv3plus_resnet18_small" if args.tiny
                              else "deeplabv3plus_resnet50")
  args.batch = args.batch or (2 if args.tiny else 8)
  args.size = args.size or (32 if args.tiny else 321)
  if args.repeats is None:
    args.repeats = 1 if args.tiny else 3 if args.quick else 10
  if args.tiny:
    args.warmup = 0
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.backend == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  started = time.perf_counter()
  import jax
  import jax.numpy as jnp
  import jaxlib
  import optax

  from jaxseg import losses, models

  sys.path.insert(0, HERE)
  from bench_lovasz import (Report, compile_jax, fmt, one_line, sort_support,  # noqa: E402
                            tensorflow_imported, timed_calls, voc_like_labels)

  warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
  device = jax.devices()[0]
  if args.backend == "gpu" and device.platform != "gpu":
    raise SystemExit(f"--backend gpu but JAX's first device is {device.platform}")
  has_sort, _ = sort_support()
  sorts = [s.strip() for s in args.lovasz_sorts.split(",") if s.strip()]
  if not has_sort and sorts != ["default"]:
    raise SystemExit("this jaxseg's lovasz_softmax has no sort= argument: --lovasz-sorts default")

  takes_dtype = "dtype" in models.options(args.model)
  dtype = ("bfloat16" if takes_dtype else "float32") if args.dtype == "auto" else args.dtype
  if dtype != "float32" and not takes_dtype:
    raise SystemExit(f"{args.model} has no dtype option")
  model = models.create(args.model, num_classes=args.classes,
                        **({"dtype": dtype} if takes_dtype else {}))
  b, s, c = args.batch, args.size, args.classes
  report = Report(args.out)
  report.line()
  report.line(f"## Training step: {args.model}, {b} x {s} x {s}, {c} classes, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
  report.line()
  report.line(f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__} on "
              f"{device.platform} ({device.device_kind}); python {platform.python_version()}")
  report.line(f"- compute dtype {dtype} (model {'takes' if takes_dtype else 'has no'} a dtype "
              f"option), float32 parameters and logits; SGD momentum 0.9; repeats "
              f"{args.repeats} after 1 + {args.warmup} warm-up step(s)")

  rng = np.random.default_rng(0)
  images = jax.device_put(jnp.asarray(rng.normal(size=(b, s, s, 3)).astype(np.float32)), device)
  labels = jax.device_put(jnp.asarray(voc_like_labels(rng, b, s, s, c)), device)
  init_start = time.perf_counter()
  variables = models.init_variables(model, 0, (b, s, s, 3))
  jax.block_until_ready(variables)
  report.line(f"- model initialised in {time.perf_counter() - init_start:.1f} s; "
              f"{sum(x.size for x in jax.tree.leaves(variables['params'])) / 1e6:.1f} M "
              f"parameters; TensorFlow imported: {tensorflow_imported() or 'no'}")
  report.line()
  report.line("| step | compile s (lower + compile) | first call s | median s | min s | "
              "Lovász share | peak GiB | loss |")
  report.line("|---|---|---|---|---|---|---|---|")
  optimizer = optax.sgd(0.01, momentum=0.9)
  key = jax.random.key(0)

  def lovasz(sort):
    kwargs = {} if sort == "default" else {"sort": sort}
    return lambda logits, lab: losses.lovasz_softmax(logits, lab, **kwargs)

  def make_step(loss_fn):
    def step(params, batch_stats, opt_state, images, labels, key):
      def compute(p):
        logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"],
                                      rngs={"dropout": key})
        return loss_fn(logits.astype(jnp.float32), labels), updates["batch_stats"]
      (loss, new_stats), grads = jax.value_and_grad(compute, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_stats, opt_state, loss
    return jax.jit(step, donate_argnums=(0, 1, 2))

  def peak():
    stats = device.memory_stats() or {}
    value = stats.get("peak_bytes_in_use")
    return None if value is None else value / 2**30

  variants = [("cross-entropy", losses.cross_entropy)]
  for sort in sorts:
    variants.append((f"cross-entropy + Lovász-Softmax ({sort})",
                     (lambda f: lambda lg, lb: losses.cross_entropy(lg, lb) + f(lg, lb))(
                         lovasz(sort))))
  medians = {}
  failed = False
  for name, loss_fn in variants:
    try:
      state = [jax.tree.map(jnp.copy, variables["params"]),
               jax.tree.map(jnp.copy, variables.get("batch_stats", {}))]
      state.append(optimizer.init(state[0]))
      compiled, lower_s, compile_s, _ = compile_jax(make_step(loss_fn), *state, images, labels,
                                                    key)
      last = {}

      def run():
        out = compiled(*state, images, labels, key)
        jax.block_until_ready(out)
        state[:] = out[:3]
        last["loss"] = out[3]

      first, median, best = timed_calls(run, args.repeats, args.warmup)
      medians[name] = median
      share = ""
      if name != "cross-entropy" and "cross-entropy" in medians:
        share = f"{(median - medians['cross-entropy']) / median:.1%}"
      report.line(f"| {name} | {lower_s:.1f} + {compile_s:.1f} | {first:.3f} | {median:.3f} | "
                  f"{best:.3f} | {share} | {fmt(peak(), '.2f')} | {float(last['loss']):.4f} |")
      del state, compiled
    except Exception as exc:  # pylint: disable=broad-except
      failed = True
      report.line(f"| {name} | **{one_line(exc)}** | | | | | | |")

  if not args.no_loss_alone:
    logits = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                              rngs={"dropout": key})[0])(variables, images)
    logits = logits.astype(jnp.float32)
    for name, loss_fn, sort in [("cross-entropy alone", losses.cross_entropy, None)] + [
        (f"Lovász-Softmax alone ({sort})", lovasz(sort), sort) for sort in sorts]:
      try:
        compiled, lower_s, compile_s, _ = compile_jax(jax.jit(jax.value_and_grad(loss_fn)),
                                                      logits, labels)
        first, median, best = timed_calls(
            lambda: jax.block_until_ready(compiled(logits, labels)), args.repeats, args.warmup)
        value = float(compiled(logits, labels)[0])
        with_lovasz = medians.get(f"cross-entropy + Lovász-Softmax ({sort})")
        share = "" if with_lovasz is None else (
            f"{median / with_lovasz:.1%} of its CE + Lovász step")
        report.line(f"| {name}, fwd + bwd on the step's logits {tuple(logits.shape)} | "
                    f"{lower_s:.1f} + {compile_s:.1f} | {first:.3f} | {median:.3f} | "
                    f"{best:.3f} | {share} | {fmt(peak(), '.2f')} | {value:.4f} |")
      except Exception as exc:  # pylint: disable=broad-except
        failed = True
        report.line(f"| {name} | **{one_line(exc)}** | | | | | | |")
  report.line()
  report.line(f"(training step benchmark: {time.perf_counter() - started:.0f} s; "
              f"TensorFlow imported: {tensorflow_imported() or 'no'})")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
