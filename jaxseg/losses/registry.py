"""A registry that builds a loss, or a weighted sum of losses, from a config entry.

Loss modules register their losses at import time::

    register_loss("lovasz_softmax", lovasz_softmax)             # builder = partial(fn, **kwargs)
    register_loss("margin_calibration", build_margin_loss)      # a custom builder

A *builder* is a callable ``builder(**kwargs) -> loss_fn`` where ``loss_fn(logits, labels)`` returns
a scalar. Passing the loss function itself as the builder means "bind the kwargs with
``functools.partial``", which is what most losses need; losses that must prepare something once
(offsets from dataset statistics, a surrogate network's parameters) register a builder of their own.

A config entry is a mapping (``dict`` or ``ml_collections.ConfigDict``) of one of two forms::

    {"name": "lovasz_softmax", "kwargs": {"per_image": False}}
    {"terms": [{"name": "cross_entropy", "weight": 1.0},
               {"name": "lovasz_softmax", "weight": 0.5, "kwargs": {"classes": "all"}}]}

The weighted sum of ``terms`` follows the losses' precision rule: it is a scalar of
``promote_types(logits.dtype, float32)`` (float32 for float16, bfloat16 and float32 logits, also
under JAX's global 64-bit mode; float64 for float64 logits), each term cast to that dtype.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from jaxseg._validation import compute_dtype

LossFn = Callable[..., Any]
Builder = Callable[..., LossFn]

_BUILDERS: dict[str, Builder] = {}
_PARTIAL_BINDING: set[str] = set()


def register_loss(name: str, builder: Builder, *, bind_kwargs: bool | None = None) -> None:
  """Registers ``builder`` under ``name``.

  Args:
    name: the name configs use.
    builder: either a loss function ``fn(logits, labels, **kwargs)`` (its kwargs are bound with
      ``functools.partial``) or a factory ``builder(**kwargs) -> loss_fn``.
    bind_kwargs: ``True`` when ``builder`` is the loss itself; ``None`` guesses from its signature
      (a function whose first two parameters are positional is treated as the loss).
  """
  if name in _BUILDERS and _BUILDERS[name] is not builder:
    raise ValueError(f"a loss named {name!r} is already registered")
  if bind_kwargs is None:
    positional = [
        p for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    bind_kwargs = len(positional) >= 2
  _BUILDERS[name] = builder
  if bind_kwargs:
    _PARTIAL_BINDING.add(name)
  else:
    _PARTIAL_BINDING.discard(name)


def available_losses() -> list[str]:
  """The names that ``build_loss`` accepts, sorted."""
  _import_loss_modules()
  return sorted(_BUILDERS)


def _import_loss_modules() -> None:
  # Importing the package registers every loss family.
  import jaxseg.losses  # noqa: F401  pylint: disable=import-outside-toplevel


def _to_dict(entry: Any) -> dict[str, Any]:
  if hasattr(entry, "to_dict"):
    return entry.to_dict()
  if isinstance(entry, Mapping):
    return dict(entry)
  raise TypeError(f"a loss config must be a mapping, got {type(entry).__name__}: {entry!r}")


def _build_single(entry: Mapping[str, Any]) -> LossFn:
  unknown = set(entry) - {"name", "kwargs", "weight"}
  if unknown:
    raise ValueError(f"unknown field(s) {sorted(unknown)} in loss config {dict(entry)!r}; "
                     "expected 'name', 'kwargs' and (in 'terms') 'weight'")
  if "name" not in entry:
    raise ValueError(f"loss config {dict(entry)!r} has no 'name'")
  name = entry["name"]
  if name not in _BUILDERS:
    raise ValueError(f"unknown loss {name!r}; available: {', '.join(sorted(_BUILDERS))}")
  kwargs = _to_dict(entry.get("kwargs") or {})
  builder = _BUILDERS[name]
  if name in _PARTIAL_BINDING:
    accepted = inspect.signature(builder).parameters
    takes_var_kw = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    bad = [k for k in kwargs if k not in accepted and not takes_var_kw]
    if bad:
      raise ValueError(f"loss {name!r} does not take option(s) {bad}; it takes "
                       f"{[k for k in accepted if k not in ('logits', 'labels')]}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return functools.partial(builder, **kwargs)
  return builder(**kwargs)


def build_loss(config: Any) -> LossFn:
  """Builds ``loss_fn(logits, labels) -> scalar`` from a config entry (see the module docstring).

  A ``terms`` entry gives ``sum_t weight_t * loss_t(logits, labels)``, a scalar of
  ``promote_types(logits.dtype, float32)`` (float64 only under x64).
  """
  _import_loss_modules()
  entry = _to_dict(config)
  if "terms" in entry:
    if set(entry) - {"terms"}:
      raise ValueError(f"a loss config with 'terms' takes nothing else, got {sorted(entry)}")
    terms = [_to_dict(t) for t in entry["terms"]]
    if not terms:
      raise ValueError("a loss config with 'terms' needs at least one term")
    fns = [_build_single(t) for t in terms]
    weights = [float(t.get("weight", 1.0)) for t in terms]

    def weighted_sum(logits, labels):
      given = logits.dtype if hasattr(logits, "dtype") else jnp.asarray(logits).dtype
      dtype = compute_dtype(given)
      total = None
      for weight, fn in zip(weights, fns):
        # Python weights are weakly typed: they never promote a term
        term = weight * jnp.asarray(fn(logits, labels)).astype(dtype)
        total = term if total is None else total + term
      return total

    return weighted_sum
  if "weight" in entry:
    raise ValueError("'weight' belongs to an entry of 'terms', not to a single loss")
  return _build_single(entry)
