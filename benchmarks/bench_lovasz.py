"""Forward + backward speed of Lovász-Softmax: jaxseg's sort formulations against PyTorch.

Usage (from the repository root, or with the repository on PYTHONPATH):

    python benchmarks/bench_lovasz.py                      # CPU, all cases, 7 repeats
    python benchmarks/bench_lovasz.py --repeats 3 --cases voc_batch,voc_image
    python benchmarks/bench_lovasz.py --backend gpu --quick --out gpu_bench.md
    python benchmarks/bench_lovasz.py --tiny               # smoke run: H, W / 10, 1 repeat
    # what benchmarks/compare_commits.py runs against an older jaxseg (no `sort=` there):
    python benchmarks/bench_lovasz.py --jax-formulations default --no-vectorised --no-floor \\
        --json result.json

For each case (table CASES below) and each implementation, one row: compile time apart
(``jax.jit(...).lower(...)`` then ``.compile()``, summed in the table), the first call (for
PyTorch: lazy initialisation and CUDA kernel loading), then the median and minimum of
``--repeats`` calls after ``--warmup`` more. Every implementation's value is checked against the
PyTorch reference (relative 1e-4); a mismatch or an exception is reported in the row and the run
goes on (the exit status is 1 at the end). Implementations:

* ``PyTorch reference``: benchmarks/torch_lovasz_reference.py ``lovasz_softmax``, the loops of the
  authors' code (one ``torch.sort`` per present class, void pixels filtered, per image a Python
  loop), on the torch device (``cpu``, or ``cuda`` for ``--backend gpu``).
* ``PyTorch vectorised``: the same file's ``lovasz_softmax_vectorised``, one batched
  ``torch.sort`` of ``[C, B H W]`` (batch-level) or ``[B, C, H W]`` (per image) rows, void pixels
  masked, as kornia's vectorised Lovász does (``--no-vectorised`` skips it).
* ``jaxseg ...``: jitted ``jax.value_and_grad`` of ``jaxseg.losses.lovasz_softmax``. With
  ``--jax-formulations all`` (default): the default call (no ``sort=`` argument, what users get:
  ``"auto"`` = ``"packed64"`` on CPU, ``"pairs"`` on GPU/TPU) and every explicit formulation of
  ``jaxseg.losses.extension.SORT_FORMULATIONS`` except ``"auto"``. ``"packed64"`` is the CPU
  formulation; on GPU it is run anyway and labelled "forced". A jaxseg without ``sort=`` (older
  commits) runs only ``default``. ``--jax-formulations default`` or a comma list selects.
* ``floor``: a bare jitted ``lax.sort`` of the case's ``C x (B H W)`` error bits as int32 keys
  (single operand), once as ``C`` rows ``[C, B H W]`` and once as one flat row: the cost of the
  sort alone, below which no sort-based Lovász can go (``--no-floor`` skips it).

The ``vs reference`` column is the reference's median over the row's median (above 1: faster
than the reference). ``XLA temp`` is the compiled program's scratch memory from XLA's static
``memory_analysis()`` (any backend).

GPU memory (``--backend gpu``, or ``--memory``): a second table. PyTorch: in this process,
``torch.cuda.reset_peak_memory_stats()`` before one forward + backward, then
``max_memory_allocated()`` minus the bytes allocated before (the inputs). jaxseg: JAX's
``peak_bytes_in_use`` cannot be reset, so each jaxseg variant is measured in a FRESH subprocess
(``--memory-child``, which imports only jax, numpy and jaxseg.losses): the bytes in use once the
inputs are on the device, the peak after ``lower().compile()`` (compilation may allocate, e.g.
autotuning scratch) and the peak after three calls; "above inputs" is the latter minus the former.
Each subprocess costs a JAX start (seconds), so only ``--memory-cases`` are measured. With
``--backend gpu`` JAX does not preallocate (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless set),
so that torch in the same process and the subprocesses find the GPU's memory free; the peaks are
bytes in use, which preallocation would not change.

Training step (``--backend gpu`` by default, ``--train-step`` elsewhere, ``--no-train-step`` to
skip): benchmarks/bench_train_step.py in a subprocess (a fresh allocator, and no torch in it):
DeepLab-v3+ ResNet-50 at 8 x 321 x 321, cross-entropy against cross-entropy + Lovász-Softmax.

Results are printed as Markdown tables and appended to ``--out FILE`` (flushed after every row, so
a run killed by a time limit keeps what it measured); ``--json FILE`` rewrites a JSON list of
all rows after every row (``-`` prints it on stdout at the end). The header gives the jax,
jaxlib, torch versions, the devices and the jaxseg that was imported (``PYTHONPATH`` decides).

Cases (logits ~ N(0, 1), or N(0, 1) + 4 on the true class for the "confident" cases):
  * VOC-like labels: background plus one to three objects per image, void (255) borders around
    the objects, 8 x 321 x 321 x 21 (the VOC training size); batch-level and per image.
  * All classes present ("uniform"): every class in every image, same size.
  * Cityscapes-sized: 2 x 512 x 1024 x 19, all classes present, batch-level.
Each case draws its data from its own seed, so a case gives the same data whatever ``--cases``
holds. ``--scale F`` multiplies H and W by F (``--tiny``: 0.1, i.e. 32 x 32 and 51 x 102, with
one repeat): the same structure, for testing the script in seconds.

jaxseg sorts only the pixels whose Jaccard increment can be non-zero (see
jaxseg/losses/extension.py), so its time depends on the logits: the confident cases show a
network that has learnt something, where more background pixels compete with the object.

``--quick`` (for the GPU run): 3 repeats, memory of voc_batch and cityscapes_batch only, 3
training steps. On the GPU machine, see benchmarks/run_gpu.sh.

Durations (estimates from runs of this script at ``--tiny`` and ``--scale 0.3`` on the loaded
2-core CPU, not measured at full size): the full CPU run (7 repeats, everything) about 15
minutes on the idle 2-core CPU, mostly the PyTorch vectorised version and ``sort=batched``
(3-4 s per call each at full size on CPU: every row sorted at full length) and 28 jaxseg
compilations of 2-4 s. ``--backend gpu --quick``: compilation dominates (28 jaxseg compilations,
8 memory subprocesses of a JAX start plus a compilation each), about 2-3 minutes, plus 1.5-2.5
minutes for the training step (two ResNet-50 compilations); ``--cases`` cuts it down.

Only jax, numpy, torch, optax and jaxseg.losses / jaxseg.models are imported (no TensorFlow:
checked, and printed in the header).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def voc_like_labels(rng, batch, height, width, num_classes):
  """Background plus one to three objects per image, with void borders around the objects."""
  yy, xx = np.mgrid[:height, :width]
  labels = np.zeros((batch, height, width), np.int32)
  for i in range(batch):
    for _ in range(rng.integers(1, 4)):
      cls = int(rng.integers(1, num_classes))
      cy, cx = rng.integers(0, height), rng.integers(0, width)
      ry = rng.integers(max(1, height // 10), max(2, height // 3))
      rx = rng.integers(max(1, width // 10), max(2, width // 3))
      d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
      labels[i][(d >= 1) & (d < 1.15) & (labels[i] != 0)] = 255
      labels[i][d < 1] = cls
      labels[i][(d >= 1) & (d < 1.15)] = 255
  return labels


def uniform_labels(rng, batch, height, width, num_classes):
  return rng.integers(0, num_classes, (batch, height, width)).astype(np.int32)


CASES = {
    # name: (labels, batch, height, width, classes, per_image[, confident])
    "voc_batch": (voc_like_labels, 8, 321, 321, 21, False),
    "voc_image": (voc_like_labels, 8, 321, 321, 21, True),
    "uniform_batch": (uniform_labels, 8, 321, 321, 21, False),
    "uniform_image": (uniform_labels, 8, 321, 321, 21, True),
    "cityscapes_batch": (uniform_labels, 2, 512, 1024, 19, False),
    # Logits of a network that has learnt something: N(0, 1) plus 4 on the true class.
    "voc_batch_confident": (voc_like_labels, 8, 321, 321, 21, False, True),
    "voc_image_confident": (voc_like_labels, 8, 321, 321, 21, True, True),
}

TINY_SCALE = 0.1
QUICK_MEMORY_CASES = "voc_batch,cityscapes_batch"


def scaled(size, scale):
  return max(16, int(round(size * scale)))


def make_case(name, scale=1.0):
  """(logits [B, H, W, C] float32, labels [B, H, W] int32, per_image, present rows, shape)."""
  make_labels, b, h, w, c, per_image, *confident = CASES[name]
  h, w = scaled(h, scale), scaled(w, scale)
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  labels = make_labels(rng, b, h, w, c)
  logits = rng.normal(size=(b, h, w, c)).astype(np.float32)
  if confident and confident[0]:
    logits += 4.0 * (labels[..., None] == np.arange(c))
  if per_image:
    present = sum(len(set(np.unique(l).tolist()) - {255}) for l in labels)
  else:
    present = len(set(np.unique(labels).tolist()) - {255})
  return logits, labels, per_image, present, f"{b}x{h}x{w}x{c}"


def floor_keys(logits, labels):
  """int32 keys [C, B H W] sorting like the class-major errors |[y = c] - softmax| decreasingly."""
  c = logits.shape[-1]
  z = logits - logits.max(-1, keepdims=True)
  p = np.exp(z)
  p /= p.sum(-1, keepdims=True)
  errors = np.abs((labels[..., None] == np.arange(c)).astype(np.float32) - p)
  errors = np.ascontiguousarray(errors.reshape(-1, c).T, dtype=np.float32)
  return -errors.view(np.int32)


def sort_support():
  """(whether lovasz_softmax takes sort=, SORT_FORMULATIONS or ())."""
  import inspect
  from jaxseg.losses import lovasz_softmax
  if "sort" not in inspect.signature(lovasz_softmax).parameters:
    return False, ()
  try:
    from jaxseg.losses.extension import SORT_FORMULATIONS
  except ImportError:
    return True, ()
  return True, tuple(SORT_FORMULATIONS)


def jax_formulations(spec, has_sort, formulations):
  if spec == "all":
    return ["default"] + [f for f in formulations if f != "auto"] if has_sort else ["default"]
  chosen = [f.strip() for f in spec.split(",") if f.strip()]
  for f in chosen:
    if f != "default" and not has_sort:
      raise SystemExit(f"--jax-formulations {f}: this jaxseg's lovasz_softmax has no sort= "
                       "argument (only 'default' runs)")
    if f != "default" and formulations and f not in formulations:
      raise SystemExit(f"--jax-formulations {f}: not in SORT_FORMULATIONS {formulations}")
  return chosen


def jax_label(formulation, platform_name):
  if formulation == "default":
    return "jaxseg (default sort)"
  label = f"jaxseg sort={formulation}"
  if formulation == "packed64" and platform_name != "cpu":
    label += " (CPU formulation, forced)"
  return label


def jax_loss(formulation, per_image):
  from jaxseg.losses import lovasz_softmax
  kwargs = {} if formulation == "default" else {"sort": formulation}
  return lambda a, l: lovasz_softmax(a, l, per_image=per_image, **kwargs)


def tensorflow_imported():
  return sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))


class Report:
  """Prints lines and appends them to --out (flushed per line); keeps JSON rows for --json."""

  def __init__(self, out=None, json_path=None):
    self.out, self.json_path, self.rows = out, json_path, []
    if out:
      os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

  def line(self, text=""):
    print(text, flush=True)
    if self.out:
      with open(self.out, "a") as f:
        f.write(text + "\n")
        f.flush()

  def record(self, row):
    self.rows.append(row)
    if self.json_path and self.json_path != "-":
      tmp = self.json_path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.rows, f, indent=1)
      os.replace(tmp, self.json_path)

  def finish(self):
    if self.json_path == "-":
      print(json.dumps(self.rows))


def timed_calls(fn, repeats, warmup):
  """(first call s, median s, min s): one first call, ``warmup`` more, then ``repeats`` timed."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times), min(times)


def fmt(x, spec=".3f", unit=""):
  return "-" if x is None else f"{x:{spec}}{unit}"


def one_line(exc):
  text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
  return text if len(text) < 240 else text[:237] + "..."


def compile_jax(fn, *args):
  """(compiled, lower s, compile s, XLA temp bytes or None)."""
  start = time.perf_counter()
  lowered = fn.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  try:
    temp = compiled.memory_analysis().temp_size_in_bytes
  except Exception:  # pylint: disable=broad-except
    temp = None
  return compiled, lowered_at - start, done - lowered_at, temp


# --------------------------------------------------------------------------------------------
# Memory of one jaxseg variant, in a fresh process (--memory-child CASE:FORMULATION).


def memory_child(args):
  import jax
  import jax.numpy as jnp
  name, formulation = args.memory_child.split(":")
  logits, labels, per_image, _, _ = make_case(name, args.scale)
  device = jax.devices()[0]
  x, y = jax.device_put(jnp.asarray(logits), device), jax.device_put(jnp.asarray(labels), device)
  jax.block_until_ready((x, y))

  def stats():
    s = device.memory_stats() or {}
    return s.get("bytes_in_use"), s.get("peak_bytes_in_use")

  result = {"platform": device.platform}
  result["inputs"], result["peak_before"] = stats()
  step = jax.jit(jax.value_and_grad(jax_loss(formulation, per_image)))
  compiled, _, _, result["xla_temp"] = compile_jax(step, x, y)
  _, result["peak_after_compile"] = stats()
  for _ in range(3):
    jax.block_until_ready(compiled(x, y))
  _, result["peak_after_run"] = stats()
  result["tensorflow"] = tensorflow_imported()
  print("MEMORY " + json.dumps(result), flush=True)


def measure_memory_subprocess(args, name, formulation):
  cmd = [sys.executable, os.path.abspath(__file__), "--backend", args.backend,
         "--scale", str(args.scale), "--memory-child", f"{name}:{formulation}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith("MEMORY "):
      return json.loads(line[len("MEMORY "):])
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  raise RuntimeError(f"memory subprocess exited with {proc.returncode}: {tail}")


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="See the module docstring for what is measured.")
  parser.add_argument("--backend", choices=("cpu", "gpu"), default="cpu",
                      help="JAX platform (cpu sets JAX_PLATFORMS=cpu) and torch device")
  parser.add_argument("--cases", default=",".join(CASES), help="comma list of: " + ",".join(CASES))
  parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 7, 3 quick)")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
  parser.add_argument("--quick", action="store_true",
                      help="3 repeats, memory of " + QUICK_MEMORY_CASES + " only, 3 train steps")
  parser.add_argument("--scale", type=float, default=1.0, help="multiply H and W (testing)")
  parser.add_argument("--tiny", action="store_true",
                      help=f"smoke run: --scale {TINY_SCALE}, 1 repeat, 0 warm-up, tiny train step")
  parser.add_argument("--jax-formulations", default="all",
                      help="'all', 'default' (no sort= argument) or a comma list of formulations")
  parser.add_argument("--no-reference", action="store_true",
                      help="skip timing the PyTorch reference (its value is still checked)")
  parser.add_argument("--no-vectorised", action="store_true")
  parser.add_argument("--no-floor", action="store_true")
  parser.add_argument("--no-torch", action="store_true",
                      help="no PyTorch at all (values checked against the first jaxseg row)")
  parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                      help="GPU memory table (default: on for --backend gpu)")
  parser.add_argument("--memory-cases", default=None,
                      help="cases of the memory table (default: --cases; quick: "
                           + QUICK_MEMORY_CASES + ")")
  parser.add_argument("--train-step", action=argparse.BooleanOptionalAction, default=None,
                      help="run bench_train_step.py (default: on for --backend gpu)")
  parser.add_argument("--train-timeout", type=int, default=240,
                      help="seconds for the training-step subprocess")
  parser.add_argument("--child-timeout", type=int, default=120,
                      help="seconds for each memory subprocess")
  parser.add_argument("--torch-device", default=None, help="default: cpu, or cuda for gpu")
  parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
  parser.add_argument("--out", default=None, help="append the Markdown output to this file")
  parser.add_argument("--json", default=None, help="write all rows as JSON here ('-': stdout)")
  parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.tiny:
    args.scale = TINY_SCALE if args.scale == 1.0 else args.scale
    args.repeats = 1 if args.repeats is None else args.repeats
    args.warmup = 0
  if args.repeats is None:
    args.repeats = 3 if args.quick else 7
  if args.memory_cases is None:
    args.memory_cases = QUICK_MEMORY_CASES if args.quick else args.cases
  if args.torch_device is None:
    args.torch_device = "cuda" if args.backend == "gpu" else "cpu"
  unknown = [c for c in args.cases.split(",") + args.memory_cases.split(",") if c not in CASES]
  if unknown:
    parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.backend == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  else:
    # Allocate on demand instead of taking 75% of the GPU at start: torch shares this process,
    # and the memory and training-step subprocesses start while this one is alive.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.memory_child:
    return memory_child(args)

  started = time.perf_counter()
  import jax
  import jax.numpy as jnp
  from jax import lax

  device = jax.devices()[0]
  if args.backend == "gpu" and device.platform != "gpu":
    raise SystemExit(f"--backend gpu but JAX's first device is {device.platform} "
                     f"({device.device_kind}); is the CUDA plugin installed?")
  has_sort, formulations = sort_support()
  chosen = jax_formulations(args.jax_formulations, has_sort, formulations)

  torch = torch_ref = None
  torch_error = None
  if not args.no_torch:
    try:
      import torch  # after JAX has initialised its backend
      sys.path.insert(0, HERE)
      import torch_lovasz_reference as torch_ref
      torch.set_num_threads(args.torch_threads)
      if args.torch_device.startswith("cuda"):
        torch.zeros(1, device=args.torch_device)
    except Exception as exc:  # pylint: disable=broad-except
      torch, torch_error = None, one_line(exc)
  memory = args.backend == "gpu" if args.memory is None else args.memory
  train_step = args.backend == "gpu" if args.train_step is None else args.train_step

  report = Report(args.out, args.json)
  import jaxlib
  import jaxseg
  torch_desc = "not used" if args.no_torch else (
      f"failed: {torch_error}" if torch is None else
      f"{torch.__version__} on {args.torch_device}"
      + (f" ({torch.cuda.get_device_name()})" if args.torch_device.startswith("cuda") else
         f" with {torch.get_num_threads()} threads"))
  report.line()
  report.line(f"## Lovász-Softmax forward + backward, {time.strftime('%Y-%m-%d %H:%M:%S')}")
  report.line()
  report.line(f"- command: `{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}`")
  report.line(f"- python {platform.python_version()}; jax {jax.__version__}, jaxlib "
              f"{jaxlib.__version__} on {device.platform} ({device.device_kind}), "
              f"{jax.device_count()} device(s); torch {torch_desc}; numpy {np.__version__}")
  report.line(f"- host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
  report.line(f"- jaxseg from {os.path.dirname(jaxseg.__file__)}; sort= "
              + (f"supported, SORT_FORMULATIONS = {formulations}" if has_sort else "not supported")
              + f"; measured: {', '.join(chosen)}")
  report.line(f"- repeats {args.repeats} (median, min) after 1 + {args.warmup} warm-up call(s); "
              f"scale {args.scale}; TensorFlow imported: {tensorflow_imported() or 'no'}")
  report.record({"table": "header", "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                 "platform": device.platform, "device_kind": device.device_kind,
                 "torch": None if torch is None else torch.__version__,
                 "torch_device": args.torch_device, "jaxseg": jaxseg.__file__,
                 "has_sort": has_sort, "formulations": list(formulations),
                 "measured": chosen, "scale": args.scale, "repeats": args.repeats})
  report.line()
  report.line("| case | shape | present rows | implementation | compile s (lower + compile) | "
              "first call s | median s | min s | vs reference | XLA temp MiB | value |")
  report.line("|---|---|---|---|---|---|---|---|---|---|---|")

  failures = []
  sync = (lambda: torch.cuda.synchronize()) if (
      torch is not None and args.torch_device.startswith("cuda")) else (lambda: None)
  wants, refs = {}, {}  # per case: the yardstick value and the reference's median

  def run_case(name, formulations, full):
    """Rows of one case: PyTorch (full only), the jaxseg ``formulations``, floors (full only)."""
    logits, labels, per_image, present, shape = make_case(name, args.scale)
    x = jax.device_put(jnp.asarray(logits), device)
    y = jax.device_put(jnp.asarray(labels), device)

    def emit(impl, *, compile_s=None, lower_s=None, first=None, median=None, best=None,
             temp=None, value=None, error=None):
      want, t_ref = wants.get(name), refs.get(name)
      check = ""
      if error is None and value is not None:
        if want is None:
          wants[name] = value
        elif not abs(value - want) <= 1e-4 * max(1.0, abs(want)):
          error = f"VALUE MISMATCH: {value:.6f} against {want:.6f}"
      if error is not None:
        failures.append((name, impl, error))
        check = f"**{error}**"
      else:
        check = "" if value is None else f"{value:.5f}"
      ratio = None if (t_ref is None or median is None) else t_ref / median
      comp = None if compile_s is None else (compile_s + (lower_s or 0.0))
      report.line(f"| {name} | {shape} | {present} | {impl} | "
                  + (f"{lower_s:.2f} + {compile_s:.2f}" if lower_s is not None else
                     fmt(comp, ".2f"))
                  + f" | {fmt(first)} | {fmt(median)} | {fmt(best)} | {fmt(ratio, '.2f', 'x')} | "
                  f"{fmt(None if temp is None else temp / 2**20, '.1f')} | {check} |")
      report.record({"table": "loss", "case": name, "shape": shape, "present": present,
                     "impl": impl, "lower_s": lower_s, "compile_s": compile_s,
                     "first_s": first, "median_s": median, "min_s": best, "speedup": ratio,
                     "xla_temp_bytes": temp, "value": value, "error": error})

    # PyTorch reference (its value is the yardstick of every row).
    if full and torch is not None:
      tx = torch.tensor(logits.transpose(0, 3, 1, 2).copy(), device=args.torch_device)
      ty = torch.tensor(labels, device=args.torch_device, dtype=torch.int64)

      def torch_call(fn):
        def run():
          leaf = tx.clone().requires_grad_(True)
          loss = fn(leaf, ty, per_image=per_image)
          loss.backward()
          sync()
          return loss
        return run

      impls = [("PyTorch reference", torch_ref.lovasz_softmax, not args.no_reference)]
      if not args.no_vectorised:
        impls.append(("PyTorch vectorised", torch_ref.lovasz_softmax_vectorised, True))
      for impl, fn, timed in impls:
        try:
          value = float(torch_call(fn)().detach())
          first = median = best = None
          if timed:
            first, median, best = timed_calls(torch_call(fn), args.repeats, args.warmup)
            if impl == "PyTorch reference":
              refs[name] = median
          emit(impl, first=first, median=median, best=best, value=value)
        except Exception as exc:  # pylint: disable=broad-except
          emit(impl, error=one_line(exc))

    for formulation in formulations:
      impl = jax_label(formulation, device.platform)
      try:
        step = jax.jit(jax.value_and_grad(jax_loss(formulation, per_image)))
        compiled, lower_s, compile_s, temp = compile_jax(step, x, y)
        first, median, best = timed_calls(lambda: jax.block_until_ready(compiled(x, y)),
                                          args.repeats, args.warmup)
        value = float(compiled(x, y)[0])
        emit(impl, lower_s=lower_s, compile_s=compile_s, first=first, median=median, best=best,
             temp=temp, value=value)
      except Exception as exc:  # pylint: disable=broad-except
        emit(impl, error=one_line(exc))

    if full and not args.no_floor:
      keys = jax.device_put(jnp.asarray(floor_keys(logits, labels)), device)
      rows, pixels = keys.shape
      for impl, fn, arg in (
          (f"floor: lax.sort of [{rows}, {pixels}] int32", lambda k: lax.sort(k, dimension=1),
           keys),
          (f"floor: lax.sort of [{rows * pixels}] int32", lax.sort, keys.reshape(-1))):
        try:
          compiled, lower_s, compile_s, temp = compile_jax(jax.jit(fn), arg)
          first, median, best = timed_calls(lambda: jax.block_until_ready(compiled(arg)),
                                            args.repeats, args.warmup)
          emit(impl, lower_s=lower_s, compile_s=compile_s, first=first, median=median,
               best=best, temp=temp)
        except Exception as exc:  # pylint: disable=broad-except
          emit(impl, error=one_line(exc))

  # The CPU-only formulation forced on another backend runs after every other row, in case it
  # brings the process down (an XLA abort cannot be caught); measured rows survive in --out.
  forced = [f for f in chosen if f == "packed64" and device.platform != "cpu"]
  for name in args.cases.split(","):
    run_case(name, [f for f in chosen if f not in forced], True)
  for name in args.cases.split(",") if forced else ():
    run_case(name, forced, False)
  report.line()
  report.line(f"(loss table: {time.perf_counter() - started:.0f} s so far)")

  if memory:
    phase = time.perf_counter()
    report.line()
    report.line("GPU memory of one forward + backward. PyTorch: this process, peak reset before "
                "the call. jaxseg: a fresh process per row (JAX's peak cannot be reset).")
    report.line()
    report.line("| case | implementation | inputs MiB | peak after compile MiB | "
                "peak after run MiB | above inputs MiB | XLA temp MiB |")
    report.line("|---|---|---|---|---|---|---|")
    mib = lambda b: fmt(None if b is None else b / 2**20, ".1f")  # noqa: E731
    for name in args.memory_cases.split(","):
      if torch is not None and args.torch_device.startswith("cuda"):
        logits, labels, per_image, _, _ = make_case(name, args.scale)
        tx = torch.tensor(logits.transpose(0, 3, 1, 2).copy(), device=args.torch_device)
        ty = torch.tensor(labels, device=args.torch_device, dtype=torch.int64)
        impls = [("PyTorch reference", torch_ref.lovasz_softmax)]
        if not args.no_vectorised:
          impls.append(("PyTorch vectorised", torch_ref.lovasz_softmax_vectorised))
        for impl, fn in impls:
          try:
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            leaf = tx.clone().requires_grad_(True)
            fn(leaf, ty, per_image=per_image).backward()
            sync()
            peak = torch.cuda.max_memory_allocated()
            del leaf
            report.line(f"| {name} | {impl} | {mib(base)} | - | {mib(peak)} | "
                        f"{mib(peak - base)} | - |")
            report.record({"table": "memory", "case": name, "impl": impl, "inputs": base,
                           "peak_after_run": peak})
          except Exception as exc:  # pylint: disable=broad-except
            report.line(f"| {name} | {impl} | **{one_line(exc)}** | | | | |")
            failures.append((name, impl, one_line(exc)))
      elif torch is not None:
        report.line(f"| {name} | PyTorch | n/a: torch device {args.torch_device} | | | | |")
      for formulation in chosen:
        impl = jax_label(formulation, device.platform)
        try:
          r = measure_memory_subprocess(args, name, formulation)
          if r["peak_after_run"] is None:
            report.line(f"| {name} | {impl} | n/a: no memory_stats() on {r['platform']} | | | | "
                        f"{mib(r['xla_temp'])} |")
          else:
            report.line(f"| {name} | {impl} | {mib(r['inputs'])} | "
                        f"{mib(r['peak_after_compile'])} | {mib(r['peak_after_run'])} | "
                        f"{mib(r['peak_after_run'] - r['inputs'])} | {mib(r['xla_temp'])} |")
          report.record({"table": "memory", "case": name, "impl": impl, **r})
        except Exception as exc:  # pylint: disable=broad-except
          report.line(f"| {name} | {impl} | **{one_line(exc)}** | | | | |")
          failures.append((name, impl, one_line(exc)))
    report.line()
    report.line(f"(memory table: {time.perf_counter() - phase:.0f} s)")

  if train_step:
    phase = time.perf_counter()
    cmd = [sys.executable, os.path.join(HERE, "bench_train_step.py"), "--backend", args.backend]
    if args.out:
      cmd += ["--out", args.out]
    if args.quick:
      cmd += ["--quick"]
    if args.tiny:
      cmd += ["--tiny"]
    sys.stdout.flush()
    try:
      proc = subprocess.run(cmd, timeout=args.train_timeout, check=False)
      if proc.returncode:
        failures.append(("train step", "bench_train_step.py", f"exit status {proc.returncode}"))
    except subprocess.TimeoutExpired:
      report.line(f"(training step: killed after --train-timeout {args.train_timeout} s)")
      failures.append(("train step", "bench_train_step.py", "timeout"))
    report.line(f"(training step: {time.perf_counter() - phase:.0f} s)")

  report.line()
  report.line(f"(total {time.perf_counter() - started:.0f} s; "
              f"TensorFlow imported: {tensorflow_imported() or 'no'})")
  if failures:
    report.line(f"{len(failures)} failure(s): "
                + "; ".join(f"{c} / {i}: {e}" for c, i, e in failures))
  report.finish()
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
