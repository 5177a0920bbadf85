"""What the Lovász losses lower to on GPU and TPU: 32-bit sorts only, radix-sortable on GPU.

The losses are exported with ``jax.export`` for ``cuda`` and ``tpu`` on this CPU-only machine
(lowering only, nothing is compiled) and the StableHLO text of their jitted value-and-gradient
is checked:

1. no ``stablehlo.sort`` has a 64-bit operand (``i64``, ``ui64``, ``f64``): 64-bit sorts are
   emulated on TPU and twice the memory traffic on GPU;
2. on ``cuda``, every sort along an axis longer than 4096 elements has at most two operands and a
   plain comparator (one ``stablehlo.compare`` LT/GT of the first operand's two block
   arguments, nothing else): what XLA:GPU needs to rewrite a sort into CUB's radix sort;
3. with global x64 off (the default) the module holds no 64-bit tensor at all;
4. the module really contains the sorts (so the checks above cannot pass vacuously).

The ``cpu`` export of the same functions must run and match the jitted function. With global x64
on, check 1 still holds (check 3 does not apply: the user asked for 64-bit values).

The parser below reads the MLIR text as ``Exported.mlir_module()`` prints it; the parser's own
tests (``test_parser_*``) export hand-made sorts to show what it accepts and rejects.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxseg.losses import (lovasz_hinge, lovasz_sigmoid, lovasz_softmax,
                           lovasz_softmax_all_to_all, pixiou_loss)
from jaxseg.sharding import create_mesh
from x64_mode import global_x64

# ------------------------------------------------------------------------------------------------
# A small parser for the sorts of a StableHLO module (text).
#
# ``Exported.mlir_module()`` prints every op with a location, e.g.
#
#   %198 = "stablehlo.sort"(%197) <{dimension = 0 : i64, is_stable = true}> ({
#   ^bb0(%arg2: tensor<i64> loc("sort:"(#loc99)), %arg3: tensor<i64> loc("sort:"(#loc99))):
#     %273 = stablehlo.compare LT, %arg2, %arg3, SIGNED : (tensor<i64>, tensor<i64>) -> tensor<i1> loc(#loc932)
#     stablehlo.return %273 : tensor<i1> loc(#loc931)
#   }) : (tensor<512xi64>) -> tensor<512xi64> loc(#loc931)
#
# The locations are removed first (``loc(...)`` groups, whose quoted names may hold parentheses,
# and the ``#locN = ...`` alias lines). A sort is then: its operand list ``(...)``, attributes up to
# the region (``dimension = N``), the comparator region ``({ ^bb0(args): body })`` and its type
# signature ``: (operand types) -> result types``. Sorts are printed in the generic form
# (``"stablehlo.sort"(...)``); the pretty spelling ``stablehlo.sort(`` is accepted too.
# ``: i64`` after an attribute (``dimension = 0 : i64``) is an attribute's type, not an operand:
# operand element types are read only from the comparator's block arguments (two per operand) and
# from the ``tensor<...>`` types of the signature.
# ------------------------------------------------------------------------------------------------

_SORT_RE = re.compile(r'"stablehlo\.sort"\s*\(|(?<![\w."])stablehlo\.sort\s*\(')
# A tensor type, e.g. tensor<512xi64>, tensor<i32>, tensor<4x?xcomplex<f64>>.
_TENSOR_RE = re.compile(r"tensor<([^<>]*(?:<[^<>]*>)?[^<>]*)>")
_BLOCK_ARG_RE = re.compile(r"(%[\w.$-]+)\s*:\s*(tensor<[^<>]*(?:<[^<>]*>)?[^<>]*>)")
_WIDE_ELEMENT_TYPES = ("i64", "ui64", "si64", "f64", "complex<f64>")
# stablehlo.compare in its pretty and generic forms.
_COMPARE_PRETTY_RE = re.compile(
    r"^(%[\w.$-]+)\s*=\s*stablehlo\.compare\s+(\w+)\s*,\s*(%[\w.$-]+)\s*,\s*(%[\w.$-]+)")
_COMPARE_GENERIC_RE = re.compile(
    r'^(%[\w.$-]+)\s*=\s*"stablehlo\.compare"\s*\(\s*(%[\w.$-]+)\s*,\s*(%[\w.$-]+)\s*\)'
    r".*?comparison_direction\s+(\w+)>")
_RETURN_RE = re.compile(r'^"?stablehlo\.return"?\s*\(?\s*(%[\w.$-]+)')


def _matching(text: str, start: int, open_ch: str, close_ch: str) -> int:
  """Index of the bracket closing the one at ``text[start]``, skipping quoted strings."""
  depth, i, n = 0, start, len(text)
  while i < n:
    ch = text[i]
    if ch == '"':  # skip a string literal (with \" escapes)
      i += 1
      while i < n and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    elif ch == open_ch:
      depth += 1
    elif ch == close_ch:
      depth -= 1
      if depth == 0:
        return i
    i += 1
  raise ValueError(f"unbalanced {open_ch!r} at offset {start}: {text[start:start + 200]!r}")


def strip_locations(mlir: str) -> str:
  """The module text without ``loc(...)`` annotations and ``#locN = ...`` alias lines."""
  lines = [line for line in mlir.splitlines() if not line.lstrip().startswith("#loc")]
  text = "\n".join(lines)
  out, pos = [], 0
  for m in re.finditer(r"\s*\bloc\(", text):
    if m.start() < pos:  # inside a location already removed
      continue
    out.append(text[pos:m.start()])
    pos = _matching(text, m.end() - 1, "(", ")") + 1
  out.append(text[pos:])
  return "".join(out)


def element_type(tensor_type: str) -> str:
  """``tensor<8x512xi64>`` -> ``i64``; ``tensor<i32>`` -> ``i32``."""
  m = _TENSOR_RE.fullmatch(tensor_type.strip())
  if not m:
    raise ValueError(f"not a tensor type: {tensor_type!r}")
  body = m.group(1).split(",")[0].strip()  # drop an encoding (", #stablehlo.bounds<...>")
  dims = re.match(r"^((?:[\d?]+x)*)(.*)$", body)
  return dims.group(2)


def tensor_shape(tensor_type: str) -> tuple:
  """``tensor<8x512xi64>`` -> ``(8, 512)`` (``?`` -> -1)."""
  body = _TENSOR_RE.fullmatch(tensor_type.strip()).group(1).split(",")[0].strip()
  dims = re.match(r"^((?:[\d?]+x)*)", body).group(1)
  return tuple(-1 if d == "?" else int(d) for d in dims.split("x")[:-1])


@dataclasses.dataclass
class SortOp:
  text: str                   # the op, locations removed (for assertion messages)
  dimension: int              # the sorted axis
  operand_types: list         # tensor types of the operands, from the signature
  result_types: list          # tensor types of the results
  block_args: list            # comparator arguments [(name, tensor type)], two per operand
  body: list                  # comparator ops, one per line, stripped

  @property
  def num_operands(self) -> int:
    return len(self.operand_types)

  @property
  def axis_length(self) -> int:
    shape = tensor_shape(self.operand_types[0])
    return shape[self.dimension] if shape else 1

  @property
  def element_types(self) -> set:
    """Element types of the operands, from the block arguments and the signature."""
    types = [t for _, t in self.block_args] + self.operand_types + self.result_types
    return {element_type(t) for t in types}

  def plain_comparator_problem(self):
    """None if the comparator is one LT/GT compare of the first operand's pair of arguments
    (returned as is), else a description of what is not."""
    if len(self.block_args) < 2:
      return "the comparator has fewer than two block arguments"
    first = {self.block_args[0][0], self.block_args[1][0]}
    ops = [line for line in self.body if not _RETURN_RE.match(line)]
    returns = [line for line in self.body if _RETURN_RE.match(line)]
    if len(ops) != 1:
      return f"the comparator has {len(ops)} ops besides the return, not one compare"
    m = _COMPARE_PRETTY_RE.match(ops[0])
    if m:
      result, direction, lhs, rhs = m.groups()
    else:
      g = _COMPARE_GENERIC_RE.match(ops[0])
      if not g:
        return f"the comparator's op is not a stablehlo.compare: {ops[0]!r}"
      result, lhs, rhs, direction = g.groups()
    if direction not in ("LT", "GT"):
      return f"the comparator compares with {direction}, not LT or GT"
    if {lhs, rhs} != first or lhs == rhs:
      return (f"the comparator compares {lhs}, {rhs}, not the first operand's pair "
              f"{self.block_args[0][0]}, {self.block_args[1][0]}")
    if len(returns) != 1 or _RETURN_RE.match(returns[0]).group(1) != result:
      return "the comparator does not return the compare's result"
    return None


def parse_sorts(mlir: str) -> list:
  """Every sort op of a StableHLO module text."""
  text = strip_locations(mlir)
  sorts = []
  for m in _SORT_RE.finditer(text):
    operands_end = _matching(text, m.end() - 1, "(", ")")
    region_open = text.index("({", operands_end)
    attributes = text[operands_end + 1:region_open]
    dim = re.search(r"dimension\s*=\s*(-?\d+)", attributes)
    region_close = _matching(text, region_open + 1, "{", "}")
    region = text[region_open + 2:region_close]
    line_end = text.find("\n", region_close)
    line_end = len(text) if line_end < 0 else line_end
    signature = text[region_close + 1:line_end]  # ") : (tensor<..>, ..) -> (tensor<..>, ..)"
    sig = re.match(r"^\)\s*:\s*(.*?)\s*->\s*(.*)$", signature.strip())
    if not sig:
      raise ValueError(f"cannot read the signature of a sort: {signature!r}")
    operand_types = [t.group(0) for t in _TENSOR_RE.finditer(sig.group(1))]
    result_types = [t.group(0) for t in _TENSOR_RE.finditer(sig.group(2))]
    header = re.search(r"\^bb0\s*\(", region)
    if header:
      args_end = _matching(region, header.end() - 1, "(", ")")
      block_args = _BLOCK_ARG_RE.findall(region[header.end():args_end])
      body_text = region[region.index(":", args_end) + 1:]
    else:  # a region printed without its block header
      block_args, body_text = [], region
    body = [line.strip() for line in body_text.splitlines() if line.strip()]
    dimension = int(dim.group(1)) if dim else -1
    if dimension < 0:
      dimension += len(tensor_shape(operand_types[0]))
    sorts.append(SortOp(text=text[m.start():line_end].strip(), dimension=dimension,
                        operand_types=operand_types, result_types=result_types,
                        block_args=block_args, body=body))
  return sorts


def sorts_with_64bit_operands(sorts) -> list:
  return [s for s in sorts if s.element_types & set(_WIDE_ELEMENT_TYPES)]


RADIX_SORT_MIN_LENGTH = 4096  # longer sorts must be radix-sortable on GPU


def non_radix_sortable(sorts, min_length=RADIX_SORT_MIN_LENGTH) -> list:
  """``[(sort, why)]`` for the sorts longer than ``min_length`` that XLA:GPU cannot hand to
  CUB's radix sort: more than two operands or a comparator that is not plain."""
  bad = []
  for s in sorts:
    if s.axis_length <= min_length:
      continue
    if s.num_operands > 2:
      bad.append((s, f"{s.num_operands} operands (at most 2: keys and one payload)"))
    elif (why := s.plain_comparator_problem()) is not None:
      bad.append((s, why))
  return bad


def strip_properties(text: str) -> str:
  """``text`` without the ops' attribute (property) dictionaries ``<{...}>``.

  Attribute values may be typed ``tensor<..xi64>`` (``padding = dense<[[4, 0]]> :
  tensor<1x2xi64>`` of a reduce_window, ``replica_groups`` of a collective): compile-time
  constants of the op that StableHLO itself types as i64, not values the program computes with.
  A constant's value stays: ``stablehlo.constant dense<1> : tensor<i64>`` (pretty form) prints
  its result type outside any ``<{...}>``, and the generic form in its signature.
  """
  out, pos = [], 0
  while (start := text.find("<{", pos)) >= 0:
    end = _matching(text, start + 1, "{", "}")
    out.append(text[pos:start])
    pos = end + 2 if text[end + 1:end + 2] == ">" else end + 1
  out.append(text[pos:])
  return "".join(out)


def wide_tensor_types(mlir: str) -> list:
  """The distinct 64-bit tensor types of the values of a module (operands, results, block
  arguments, constants; not attributes), each with the first line using it."""
  text = strip_properties(strip_locations(mlir))
  found = {}
  for line in text.splitlines():
    for t in _TENSOR_RE.finditer(line):
      if element_type(t.group(0)) in _WIDE_ELEMENT_TYPES and t.group(0) not in found:
        found[t.group(0)] = line.strip()
  return sorted(found.items())


def _describe(sorts, limit=3) -> str:
  lines = []
  for s in sorts[:limit]:
    lines.append(f"--- sort of {s.num_operands} operand(s) {s.operand_types} along axis "
                 f"{s.dimension} (length {s.axis_length}):\n{s.text}")
  if len(sorts) > limit:
    lines.append(f"... and {len(sorts) - limit} more")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# What is exported: the jitted value-and-gradient (w.r.t. the first argument) of each loss.
# ------------------------------------------------------------------------------------------------

SMALL = (2, 16, 16, 5)
VOC = (8, 321, 321, 21)   # a VOC-sized batch: the sort sizes (buckets) depend on the pixel count
MIN_PIXEL_SORT = 64       # a sort this long is a sort of pixels (not of the <= 21 classes/rows)


# The test process has one CPU device: the all-to-all loss runs over a 1-device 'data' mesh. The
# library's mesh (axis type Auto) is needed: ``jax.make_mesh`` defaults to Explicit axes, where
# shard_map rejects the unsharded ShapeDtypeStructs against its in_specs P('data'). The export for
# cuda/tpu of a mesh of CPU devices works (lowering only); the module holds the all_to_all.
@functools.lru_cache(maxsize=None)
def _one_device_mesh():
  return create_mesh(jax.devices()[:1])


def _all_to_all(x, y):
  return lovasz_softmax_all_to_all(x, y, mesh=_one_device_mesh())


# id -> (loss of (scores, labels), scores shape, kind of inputs)
CASES = {
    "lovasz_softmax-batch-2x16x16x5": (lovasz_softmax, SMALL, "multiclass"),
    "lovasz_softmax-batch-voc-8x321x321x21": (lovasz_softmax, VOC, "multiclass"),
    "lovasz_softmax-per_image-2x16x16x5":
        (functools.partial(lovasz_softmax, per_image=True), SMALL, "multiclass"),
    "lovasz_softmax-classes_all-2x16x16x5":
        (functools.partial(lovasz_softmax, classes="all"), SMALL, "multiclass"),
    "lovasz_hinge-2x16x16": (lovasz_hinge, SMALL[:3], "binary"),
    "lovasz_sigmoid-2x16x16": (lovasz_sigmoid, SMALL[:3], "probability"),
    "pixiou_loss-2x16x16x5": (pixiou_loss, SMALL, "multiclass"),
    "lovasz_softmax_all_to_all-1dev_mesh-2x16x16x5": (_all_to_all, SMALL, "multiclass"),
}
SMALL_CASES = [k for k, (_, shape, _) in CASES.items() if shape != VOC]


@functools.lru_cache(maxsize=None)
def _value_and_grad(case):
  loss = CASES[case][0]
  return jax.jit(jax.value_and_grad(lambda x, y: loss(x, y)))


def _export(case, platform):
  shape = CASES[case][1]
  args = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape[:3], jnp.int32))
  return jax.export.export(_value_and_grad(case), platforms=[platform])(*args)


@functools.lru_cache(maxsize=None)
def _module(case, platform, x64):
  """StableHLO text of the export; ``x64`` (the global flag) is part of the cache key."""
  assert x64 == jax.config.jax_enable_x64
  return _export(case, platform).mlir_module()


def module_text(case, platform):
  return _module(case, platform, bool(jax.config.jax_enable_x64))


def _check_no_64bit_sort(case, platform):
  sorts = parse_sorts(module_text(case, platform))
  bad = sorts_with_64bit_operands(sorts)
  if bad:
    pytest.fail(f"{case} on {platform}: {len(bad)} of {len(sorts)} sorts have a 64-bit "
                f"operand:\n{_describe(bad)}", pytrace=False)


# ------------------------------------------------------------------------------------------------
# The losses.
# ------------------------------------------------------------------------------------------------

PLATFORMS = ["cuda", "tpu"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_sorts_are_present(platform, case):
  """Check 4: the checks below see the loss's pixel sorts (at least one per loss)."""
  sorts = parse_sorts(module_text(case, platform))
  pixel_sorts = [s for s in sorts if s.axis_length >= MIN_PIXEL_SORT]
  assert pixel_sorts, (f"{case} on {platform}: no sort of at least {MIN_PIXEL_SORT} elements "
                       f"among {len(sorts)} sorts:\n{_describe(sorts)}")
  if CASES[case][1] == VOC:  # the radix-sort check below has something to check
    assert any(s.axis_length > RADIX_SORT_MIN_LENGTH for s in sorts), (
        f"{case} on {platform}: no sort longer than {RADIX_SORT_MIN_LENGTH}:\n{_describe(sorts)}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_sort_has_a_64bit_operand(platform, case):
  """Check 1."""
  _check_no_64bit_sort(case, platform)


@pytest.mark.parametrize("case", CASES)
def test_cuda_long_sorts_are_radix_sortable(case):
  """Check 2: sorts longer than 4096 have <= 2 operands and a plain LT/GT comparator."""
  bad = non_radix_sortable(parse_sorts(module_text(case, "cuda")))
  if bad:
    pytest.fail(f"{case} on cuda: {len(bad)} sorts longer than {RADIX_SORT_MIN_LENGTH} cannot "
                f"become CUB radix sorts:\n" +
                "\n".join(f"[{why}]\n{_describe([s])}" for s, why in bad[:3]), pytrace=False)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_64bit_tensor_without_x64(platform, case):
  """Check 3 (global x64 off, as by default, also when the suite runs with JAX_ENABLE_X64=1): no
  64-bit tensor type anywhere in the module."""
  with global_x64(False):
    wide = wide_tensor_types(module_text(case, platform))
  if wide:
    pytest.fail(f"{case} on {platform}: 64-bit tensors in the module (x64 is off):\n" +
                "\n".join(f"  {t}   e.g. {line[:200]}" for t, line in wide[:8]), pytrace=False)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_sort_has_a_64bit_operand_with_global_x64(x64, platform, case):
  """Check 1 with ``jax_enable_x64`` on, as a user's program may set it."""
  assert jax.config.jax_enable_x64
  _check_no_64bit_sort(case, platform)


def _inputs(case, seed=0):
  """Random scores and labels with void pixels (255) and an absent class."""
  _, shape, kind = CASES[case]
  rng = np.random.default_rng(seed)
  batch = shape[0]
  if kind == "multiclass":
    scores = rng.normal(size=shape).astype(np.float32)
    num_classes = shape[-1]
    present = [c for c in range(num_classes) if c != 3]  # class 3 is absent
    labels = rng.choice(present, size=shape[:3]).astype(np.int32)
  else:
    scores = (rng.normal(size=shape) if kind == "binary"
              else rng.uniform(size=shape)).astype(np.float32)
    labels = rng.integers(0, 2, size=shape).astype(np.int32)
    labels[batch - 1] = 0  # the last image has no foreground (the class is absent there)
  labels[rng.uniform(size=labels.shape) < 0.15] = 255
  return scores, labels


@pytest.mark.parametrize("case", SMALL_CASES)
def test_cpu_export_runs_and_matches(case):
  """The ``cpu`` export runs and gives the jitted function's value and gradient."""
  scores, labels = _inputs(case)
  exported = _export(case, "cpu")
  value, grad = exported.call(scores, labels)
  want_value, want_grad = _value_and_grad(case)(scores, labels)
  assert np.isfinite(float(want_value)) and float(want_value) > 0
  assert np.any(np.asarray(want_grad) != 0)
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-6, atol=1e-6)


def test_auto_lowers_the_packed_single_operand_sort_on_cpu():
  """On the CPU, sort="auto" is the packed formulation: each pixel sort has one int64 operand
  and a plain comparator (XLA's CPU sort has a fast path only for that)."""
  text = _export("lovasz_softmax-batch-voc-8x321x321x21", "cpu").mlir_module()
  sorts = [s for s in parse_sorts(text) if s.axis_length >= MIN_PIXEL_SORT]
  assert sorts, "no pixel sort in the cpu module"
  for s in sorts:
    assert s.num_operands == 1 and s.element_types == {"i64"}, _describe([s])
    assert s.plain_comparator_problem() is None, _describe([s])


# ------------------------------------------------------------------------------------------------
# The parser, on hand-made sorts.
# ------------------------------------------------------------------------------------------------

def _sorts_of(fn, *shapes_dtypes, platform="cuda"):
  args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes_dtypes]
  text = jax.export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()
  return text, parse_sorts(text)


def test_parser_accepts_a_plain_two_operand_int32_sort():
  text, sorts = _sorts_of(lambda k, v: lax.sort((k, v), num_keys=1),
                          ((10000,), jnp.int32), ((10000,), jnp.int32))
  (s,) = sorts
  assert (s.num_operands, s.axis_length, s.dimension) == (2, 10000, 0)
  assert s.element_types == {"i32"} and len(s.block_args) == 4
  assert s.plain_comparator_problem() is None
  assert non_radix_sortable(sorts) == []
  assert sorts_with_64bit_operands(sorts) == []
  assert "dimension = 0 : i64" in text  # an i64 attribute, which is not a 64-bit tensor
  assert wide_tensor_types(text) == []


def test_parser_rejects_a_three_operand_sort():
  _, sorts = _sorts_of(lambda a, b, c: lax.sort((a, b, c), num_keys=1),
                       ((10000,), jnp.int32), ((10000,), jnp.int32), ((10000,), jnp.int32))
  (s,) = sorts
  assert s.num_operands == 3 and len(s.block_args) == 6
  ((bad, why),) = non_radix_sortable(sorts)
  assert "3 operands" in why


def test_parser_rejects_comparators_that_are_not_plain():
  # Two keys: compares of both pairs, and/or logic.
  _, sorts = _sorts_of(lambda a, b: lax.sort((a, b), num_keys=2),
                       ((10000,), jnp.int32), ((10000,), jnp.int32))
  ((_, why),) = non_radix_sortable(sorts)
  assert "ops besides the return" in why
  # A float key: JAX canonicalises -0.0 and NaN with selects before a total-order compare.
  _, sorts = _sorts_of(jnp.sort, ((10000,), jnp.float32))
  assert len(non_radix_sortable(sorts)) == 1


def test_parser_ignores_short_sorts_and_reads_the_sorted_axis():
  _, sorts = _sorts_of(lambda a, b, c: lax.sort((a, b, c), num_keys=1, dimension=1),
                       ((3, 4096), jnp.int32), ((3, 4096), jnp.int32), ((3, 4096), jnp.int32))
  (s,) = sorts
  assert (s.dimension, s.axis_length) == (1, 4096)
  assert non_radix_sortable(sorts) == []  # 4096 elements: anything goes
  _, sorts = _sorts_of(lambda a: lax.sort(a, dimension=0), ((5000, 3), jnp.float32))
  assert sorts[0].axis_length == 5000 and len(non_radix_sortable(sorts)) == 1


def test_parser_finds_64bit_sorts_and_tensors():
  def f(a):
    with jax.enable_x64(True):
      return lax.sort(a.astype(jnp.int64)).astype(jnp.int32)
  text, sorts = _sorts_of(f, ((512,), jnp.int32))
  (s,) = sorts
  assert s.element_types == {"i64"}
  assert sorts_with_64bit_operands(sorts) == [s]
  assert "stablehlo.sort" in s.text and "tensor<512xi64>" in s.text and "loc(" not in s.text
  assert [t for t, _ in wide_tensor_types(text)] == ["tensor<512xi64>", "tensor<i64>"]
  # An i64-typed attribute (reduce_window's padding) is not a 64-bit value.
  text = jax.export.export(jax.jit(lambda a: jnp.cumsum(a)), platforms=["tpu"])(
      jax.ShapeDtypeStruct((5,), jnp.float32)).mlir_module()
  assert re.search(r"padding = dense<.*> : tensor<1x2xi64>", text)
  assert wide_tensor_types(text) == []


def test_parser_reads_generic_compares_and_locations_with_parentheses():
  # Hand-written: a compare in generic form, a location whose name holds parentheses.
  text = """
    %0:2 = "stablehlo.sort"(%a, %b) <{dimension = 0 : i64, is_stable = true}> ({
    ^bb0(%arg0: tensor<i32> loc("sort:"(#loc1)), %arg1: tensor<i32> loc("f(x)"), %arg2: tensor<f32>, %arg3: tensor<f32>):
      %1 = "stablehlo.compare"(%arg1, %arg0) <{comparison_direction = #stablehlo<comparison_direction GT>}> : (tensor<i32>, tensor<i32>) -> tensor<i1> loc("jit(f)/gt")
      "stablehlo.return"(%1) : (tensor<i1>) -> () loc(#loc2)
    }) : (tensor<9000xi32>, tensor<9000xf32>) -> (tensor<9000xi32>, tensor<9000xf32>) loc(#loc3)
  #loc3 = loc("jit(f)/sort"(#loc2))
  """
  (s,) = parse_sorts(text)
  assert [n for n, _ in s.block_args] == ["%arg0", "%arg1", "%arg2", "%arg3"]
  assert s.element_types == {"i32", "f32"} and s.axis_length == 9000
  assert s.plain_comparator_problem() is None
  bad = parse_sorts(text.replace("comparison_direction GT", "comparison_direction EQ"))
  assert "EQ" in non_radix_sortable(bad)[0][1]
