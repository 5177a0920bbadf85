"""CPU speed of jaxseg's Lovász-Softmax in the working tree against a base commit.

Usage (from anywhere inside the repository):

    python benchmarks/compare_commits.py                       # base 3933994, all cases, 3 rounds
    python benchmarks/compare_commits.py --base HEAD~1 --cases voc_batch,voc_image --rounds 5
    python benchmarks/compare_commits.py --tiny --cases voc_batch     # smoke run, seconds

The base commit's tree is extracted with ``git archive <rev> | tar -x -C <tmpdir>``. Then, for
``--rounds`` rounds, the two trees take turns (base first in odd rounds, new first in even ones):
each runs, in a FRESH subprocess with ``PYTHONPATH`` set to its tree, the working tree's
``benchmarks/bench_lovasz.py --backend cpu --jax-formulations default --no-vectorised
--no-floor --json ...``: jaxseg's ``lovasz_softmax`` with its default sort, and the PyTorch
reference (benchmarks/torch_lovasz_reference.py of the working tree, the same code for both) in
the same process. So each tree's speed-up over PyTorch is measured in its own process, under the
same load, and the ratio of speed-ups cancels most of the machine's drift between processes.
(bench_lovasz.py comes from the working tree for both: the base tree's has none of these flags;
the subprocess prints which jaxseg it imported, and this script checks it is the intended tree.)

Prints, per case: the median over rounds of the speed-up (PyTorch median / jaxseg median) for
base and new, ``new / base`` (the target: at least 0.90, i.e. new within 10% of base), the median
jaxseg and PyTorch times of each tree, and whether the loss values agree. Rounds and the final
table are appended to ``--out`` as they are produced. ``--repeats`` is passed to bench_lovasz.py
(timed calls per measurement); ``--scale``/``--tiny`` shrink H and W for testing.

Duration at full size on the idle 2-core CPU (estimated, not measured: this script was only
run at ``--tiny`` size): per tree and round about 3 s of JAX start, 2-3 s of compilation per
case, and 1 + 1 + 1 + repeats calls of each implementation (jaxseg 0.2-0.8 s, PyTorch 0.4-2.9 s
per call), i.e. about 2.5 minutes per tree and round for all seven cases with ``--repeats 5``:
about 15 minutes for the default 3 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lovasz import CASES, TINY_SCALE, Report  # noqa: E402

DEFAULT_BASE = "3933994"
JAX_ROW = "jaxseg (default sort)"
REF_ROW = "PyTorch reference"


def extract(root, rev, dest):
  sha = subprocess.run(["git", "-C", root, "rev-parse", "--verify", rev + "^{commit}"],
                       capture_output=True, text=True, check=True).stdout.strip()
  archive = subprocess.Popen(["git", "-C", root, "archive", sha], stdout=subprocess.PIPE)
  subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
  archive.stdout.close()
  if archive.wait():
    raise SystemExit(f"git archive {rev} failed")
  return sha


def run_tree(args, root, tree, json_path):
  """One fresh bench_lovasz.py process on ``tree``: {case: (jax s, torch s, value)}, header."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([tree] + [p for p in os.environ.get(
                 "PYTHONPATH", "").split(os.pathsep) if p]))
  cmd = [sys.executable, os.path.join(root, "benchmarks", "bench_lovasz.py"), "--backend", "cpu",
         "--jax-formulations", "default", "--no-vectorised", "--no-floor", "--no-memory",
         "--no-train-step", "--cases", args.cases, "--repeats", str(args.repeats),
         "--warmup", str(args.warmup), "--scale", str(args.scale), "--json", json_path]
  if args.torch_threads:
    cmd += ["--torch-threads", str(args.torch_threads)]
  if os.path.exists(json_path):
    os.remove(json_path)
  proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True,
                        timeout=args.timeout, check=False)
  if not os.path.exists(json_path):
    raise SystemExit(f"bench_lovasz.py on {tree} failed ({proc.returncode}):\n"
                     + proc.stdout[-2000:] + proc.stderr[-3000:])
  with open(json_path) as f:
    rows = json.load(f)
  header = rows[0]
  imported = os.path.realpath(os.path.dirname(os.path.dirname(header["jaxseg"])))
  if imported != os.path.realpath(tree):
    raise SystemExit(f"the subprocess imported jaxseg from {imported}, not from {tree}")
  result = {}
  for row in rows:
    if row.get("table") != "loss":
      continue
    if row["error"]:
      raise SystemExit(f"{tree}: {row['case']} / {row['impl']}: {row['error']}")
    entry = result.setdefault(row["case"], {})
    if row["impl"] == JAX_ROW:
      entry["jax"], entry["value"] = row["median_s"], row["value"]
    elif row["impl"] == REF_ROW:
      entry["torch"] = row["median_s"]
  return result, header


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--base", default=DEFAULT_BASE, help="git revision (default %(default)s)")
  parser.add_argument("--cases", default=",".join(CASES))
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--scale", type=float, default=1.0)
  parser.add_argument("--tiny", action="store_true", help=f"--scale {TINY_SCALE}, --repeats 1")
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
  parser.add_argument("--out", default=None, help="append the Markdown output here")
  parser.add_argument("--keep", action="store_true", help="keep the extracted base tree")
  args = parser.parse_args(argv)
  if args.tiny:
    args.scale, args.repeats = TINY_SCALE, 1
  cases = args.cases.split(",")
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    parser.error(f"unknown cases {unknown}")

  root = subprocess.run(["git", "-C", HERE, "rev-parse", "--show-toplevel"], capture_output=True,
                        text=True, check=True).stdout.strip()
  tmp = tempfile.mkdtemp(prefix="jaxseg_base_")
  report = Report(args.out)
  try:
    base_tree = os.path.join(tmp, "tree")
    os.makedirs(base_tree)
    sha = extract(root, args.base, base_tree)
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "jaxseg"],
                           capture_output=True, text=True, check=True).stdout.strip()
    trees = {"base": base_tree, "new": root}
    report.line()
    report.line(f"## Lovász-Softmax CPU speed: working tree against {args.base} ({sha[:10]}), "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    report.line()
    report.line(f"- new = working tree {root} (HEAD {head}"
                + (", jaxseg/ modified" if dirty else "") + f"); base = {sha[:10]} in {base_tree}")
    report.line(f"- {args.rounds} rounds x {{base, new}} alternately, each a fresh process: "
                f"jaxseg default sort and PyTorch reference, median of {args.repeats} calls; "
                f"scale {args.scale}; load average "
                + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    results = {"base": [], "new": []}
    for r in range(args.rounds):
      for which in (("base", "new") if r % 2 == 0 else ("new", "base")):
        start = time.perf_counter()
        result, header = run_tree(args, root, trees[which], os.path.join(tmp, "result.json"))
        results[which].append(result)
        report.line(f"- round {r + 1} {which} ({time.perf_counter() - start:.0f} s, jax "
                    f"{header['jax']}, sort= {'yes' if header['has_sort'] else 'no'}): "
                    + ", ".join(f"{c} {result[c]['torch'] / result[c]['jax']:.2f}x "
                                f"({result[c]['jax']:.3f} s)" for c in cases))
    report.line()
    report.line("| case | base speed-up | new speed-up | new / base | base jaxseg s | "
                "new jaxseg s | base PyTorch s | new PyTorch s | values agree | within 10% |")
    report.line("|---|---|---|---|---|---|---|---|---|---|")
    worst = None
    for c in cases:
      med = {w: {k: statistics.median(res[c][k] for res in results[w]) for k in ("jax", "torch")}
             for w in results}
      speed = {w: statistics.median(res[c]["torch"] / res[c]["jax"] for res in results[w])
               for w in results}
      ratio = speed["new"] / speed["base"]
      worst = ratio if worst is None else min(worst, ratio)
      vb, vn = results["base"][0][c]["value"], results["new"][0][c]["value"]
      agree = "yes" if abs(vb - vn) <= 1e-4 * max(1.0, abs(vb)) else f"NO ({vb:.6f} / {vn:.6f})"
      report.line(f"| {c} | {speed['base']:.2f}x | {speed['new']:.2f}x | {ratio:.2f} | "
                  f"{med['base']['jax']:.3f} | {med['new']['jax']:.3f} | "
                  f"{med['base']['torch']:.3f} | {med['new']['torch']:.3f} | {agree} | "
                  f"{'yes' if ratio >= 0.9 else 'NO'} |")
    report.line()
    report.line(f"(worst new / base: {worst:.2f}; target >= 0.90)")
  finally:
    if args.keep:
      print(f"(base tree kept in {tmp})")
    else:
      shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
