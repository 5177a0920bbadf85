"""NeuroIoU: a learned surrogate of the IoU loss (Nagendar, Singh, Balasubramanian, Jawahar, BMVC 2018).

A small MLP is fitted to map "probability counts" of a prediction to its true IoU loss
``1 - TP / (TP + FP + FN)`` (paper Sec. 3.1); frozen, it then serves as the training loss, its
gradient reaching the network's probabilities through the soft counts (Sec. 3.2,
"backprop-to-image").

Features, per image and class ``c`` (paper Sec. 3.1, Eq. 2; the paper writes them for one foreground
class: computing them per class per image is the multi-class reading, a jaxseg convention):

* hard sets from the arg-max prediction against the ground truth, over the image's valid pixels:
  ``TP = {pred == c, y == c}``, ``FP = {pred == c, y != c}``, ``FN = {pred != c, y == c}``.
  The memberships are constants (no gradient flows through the arg-max);
* per-pixel values ``v``: the probability ``p_c = softmax(F)_c`` (``kind="prob"``, Sec. 3.1) or the
  one-vs-rest hinge on logits ``max(0, 1 - s_c F_c)`` with ``s_c = +1`` where ``y == c`` and ``-1``
  elsewhere (``kind="hinge"``, Sec. 3.3, "NeuroIoU-Hinge");
* ``num_inputs=3``: ``(Σ_TP v, Σ_FP v, Σ_FN v) / N`` with ``N`` the image's number of valid pixels
  (a jaxseg convention: the paper feeds the raw sums; divided by ``N`` the features are O(1) at
  any resolution);
* ``num_inputs=6``: the three above plus the set means ``Σ_TP v / |TP|``, ... (0 for an empty set),
  the paper's better variant (Fig. 6).

(image, class) pairs where the class is in neither the ground truth nor the prediction have an
undefined IoU (0/0) and are left out; the loss is the mean of the surrogate over the kept pairs
(0 with zero gradient when there is none).

The surrogate is a Flax MLP, 4 hidden layers of 100 units by default (Sec. 4.1), with a smooth
activation (the paper does not name one; softplus by default). It is fitted by mean squared error
(Eq. 3) with ``fit_surrogate.py`` (library: ``jaxseg.training.surrogate``) and stored with :func:`save_surrogate`.

Precision: features, targets, the surrogate's evaluation and the loss are computed in
``promote_types(logits.dtype, float32)``: float32 for float16, bfloat16 and float32 logits (also
under JAX's global 64-bit mode), float64 for float64 logits (the float32 parameters are then
promoted). The loss is a scalar of that dtype; its gradient has the logits' dtype.

Logits ``[B, H, W, C]``, labels ``[B, H, W]``; errors, label values, empty batches and NaN
logits follow the contract of every loss (``jaxseg/_validation.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg._files import atomic_write
from jaxseg._validation import (check_logits_labels, compute_dtype, empty_loss, is_empty,
                                valid_labels, zero_void)

__all__ = [
    "ACTIVATIONS",
    "NeuroIoUSurrogate",
    "Surrogate",
    "neuroiou_statistics",
    "neuroiou_features",
    "iou_loss_targets",
    "neuroiou_loss",
    "init_surrogate",
    "save_surrogate",
    "load_surrogate",
    "build_neuroiou",
]

ACTIVATIONS = {
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}
FEATURE_KINDS = ("prob", "hinge")
_FORMAT = "jaxseg.neuroiou_surrogate/1"


def _check_variant(kind: str, num_inputs: int) -> None:
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}")
    if num_inputs not in (3, 6):
        raise ValueError(f"num_inputs must be 3 or 6, got {num_inputs!r}")


def neuroiou_statistics(
    logits: jax.Array,
    labels: jax.Array,
    *,
    kind: str = "prob",
    num_inputs: int = 6,
    ignore_index: int = 255,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Features, true IoU losses and kept-pair mask of every (image, class) pair.

    Args:
      logits: ``[B, H, W, C]`` float logits (computed in
        ``promote_types(logits.dtype, float32)``).
      labels: ``[B, H, W]`` integer labels in ``[0, C)`` or ``ignore_index``.
      kind: ``"prob"`` (probability counts) or ``"hinge"`` (one-vs-rest hinge counts).
      num_inputs: 3 (normalised sums) or 6 (sums and set means).
      ignore_index: void label; void pixels (this label, or any label outside ``[0, C)``) take
        no part in any set or count.

    Returns:
      ``features`` ``[B, C, num_inputs]`` float32, float64 for float64 logits (differentiable
      w.r.t. ``logits`` through the probabilities / hinge values only), ``targets`` ``[B, C]`` of
      the same dtype, the true IoU loss ``1 - |TP| / (|TP| + |FP| + |FN|)`` from the hard counts
      (a constant; 0 where not kept), and
      ``keep`` ``[B, C]`` bool, False for pairs absent from both ground truth and prediction.
    """
    _check_variant(kind, num_inputs)
    logits, labels, ignore_index = check_logits_labels(
        "neuroiou_statistics", logits, labels, ignore_index=ignore_index)
    batch, num_classes = logits.shape[0], logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    logits = logits.astype(dtype).reshape(batch, -1, num_classes)
    labels = labels.reshape(batch, -1)
    valid, safe = valid_labels(labels, num_classes, ignore_index)  # [B, P]
    logits = zero_void(logits, valid)  # a NaN at a void pixel reaches no value, no gradient
    vf = valid[..., None].astype(dtype)
    gt = jax.nn.one_hot(safe, num_classes, dtype=dtype) * vf  # [B, P, C]
    # lax.argmax: int32 indices (jnp.argmax's are int64 under x64), first maximum as jnp.argmax
    hard = jax.lax.argmax(logits, 2, jnp.int32)
    pred = jax.nn.one_hot(hard, num_classes, dtype=dtype) * vf
    tp = jax.lax.stop_gradient(gt * pred)
    fp = jax.lax.stop_gradient(pred - gt * pred)
    fn = jax.lax.stop_gradient(gt - gt * pred)

    if kind == "prob":
        values = jax.nn.softmax(logits, axis=-1)
    else:
        sign = 2.0 * gt - 1.0
        values = jax.nn.relu(1.0 - sign * logits)
    sums = [jnp.einsum("bpc,bpc->bc", s, values) for s in (tp, fp, fn)]
    counts = [jnp.sum(s > 0, axis=1, dtype=jnp.int32).astype(dtype) for s in (tp, fp, fn)]
    n_valid = jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32), 1).astype(dtype)[:, None]
    feats = [s / n_valid for s in sums]
    if num_inputs == 6:
        feats += [s / jnp.maximum(n, 1.0) for s, n in zip(sums, counts)]
    features = jnp.stack(feats, axis=-1)

    n_tp, n_fp, n_fn = counts
    union = n_tp + n_fp + n_fn
    keep = union > 0
    targets = jnp.where(keep, 1.0 - n_tp / jnp.maximum(union, 1.0), 0.0)
    return features, jax.lax.stop_gradient(targets), keep


def neuroiou_features(logits, labels, *, kind="prob", num_inputs=6, ignore_index=255):
    """``(features [B, C, F], keep [B, C])``; see :func:`neuroiou_statistics`."""
    features, _, keep = neuroiou_statistics(
        logits, labels, kind=kind, num_inputs=num_inputs, ignore_index=ignore_index
    )
    return features, keep


def iou_loss_targets(logits, labels, *, ignore_index=255):
    """``(1 - IoU [B, C], keep [B, C])`` of the arg-max prediction, per image and class."""
    _, targets, keep = neuroiou_statistics(logits, labels, ignore_index=ignore_index, num_inputs=3)
    return targets, keep


class NeuroIoUSurrogate(nn.Module):
    """MLP ``R^F -> R`` (paper Sec. 4.1: 4 hidden layers of 100 units), smooth activation."""

    hidden: Sequence[int] = (100, 100, 100, 100)
    activation: str = "softplus"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        act = ACTIVATIONS[self.activation]
        x = x.astype(compute_dtype(x.dtype))  # float32 parameters promote to float64 inputs
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(int(width), name=f"hidden_{i}")(x))
        return nn.Dense(1, name="out")(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A fitted surrogate: its parameters and everything needed to evaluate it.

    ``kind``/``num_inputs`` say which features it was fitted on; the MLP sees the standardised
    features ``(x - feature_mean) / feature_scale`` (fixed at fitting time; None: as they are);
    ``metrics`` holds the fit report (e.g. held-out MSE) for the record.
    """

    params: Any
    hidden: tuple[int, ...] = (100, 100, 100, 100)
    activation: str = "softplus"
    kind: str = "prob"
    num_inputs: int = 6
    metrics: dict = dataclasses.field(default_factory=dict)
    feature_mean: tuple[float, ...] | None = None
    feature_scale: tuple[float, ...] | None = None

    def __post_init__(self):
        _check_variant(self.kind, self.num_inputs)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("feature_mean", "feature_scale"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in np.asarray(value).reshape(-1))
                if len(value) != self.num_inputs:
                    raise ValueError(f"{name} must have {self.num_inputs} entries, got {len(value)}")
                object.__setattr__(self, name, value)
        if self.feature_scale is not None and min(self.feature_scale) <= 0:
            raise ValueError(f"feature_scale must be positive, got {self.feature_scale}")

    @property
    def module(self) -> NeuroIoUSurrogate:
        return NeuroIoUSurrogate(hidden=self.hidden, activation=self.activation)

    def __call__(self, features: jax.Array) -> jax.Array:
        """Surrogate value of ``features [..., num_inputs]``; the parameters are frozen."""
        if features.shape[-1] != self.num_inputs:
            raise ValueError(
                f"surrogate expects {self.num_inputs} features, got shape {features.shape}"
            )
        params = jax.lax.stop_gradient(self.params)
        dtype = compute_dtype(features.dtype)
        x = features.astype(dtype)
        if self.feature_mean is not None:
            x = x - jnp.asarray(self.feature_mean, dtype)
        if self.feature_scale is not None:
            x = x / jnp.asarray(self.feature_scale, dtype)
        return self.module.apply({"params": params}, x)


def init_surrogate(
    rng: jax.Array,
    *,
    hidden: Sequence[int] = (100, 100, 100, 100),
    activation: str = "softplus",
    kind: str = "prob",
    num_inputs: int = 6,
) -> Surrogate:
    """A freshly initialised (unfitted) :class:`Surrogate`."""
    _check_variant(kind, num_inputs)
    module = NeuroIoUSurrogate(hidden=tuple(hidden), activation=activation)
    params = module.init(rng, jnp.zeros((1, num_inputs), jnp.float32))["params"]
    return Surrogate(params, tuple(hidden), activation, kind, num_inputs)


def neuroiou_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    surrogate: Surrogate,
    ignore_index: int = 255,
) -> jax.Array:
    """NeuroIoU loss: mean of the frozen surrogate over the kept (image, class) pairs.

    ``loss = mean_{(b, c) kept} NeuroIoU(features(b, c))`` with the features of
    :func:`neuroiou_statistics` (kind and number of inputs taken from the surrogate). Gradients
    flow to ``logits`` through the soft counts only (set memberships and surrogate parameters are
    constants). Returns a scalar of ``promote_types(logits.dtype, float32)`` (float32, float64
    for float64 logits); 0 with zero gradient when no pair is kept.
    """
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a jaxseg Surrogate, got {type(surrogate).__name__}")
    logits, labels, ignore_index = check_logits_labels(
        "neuroiou_loss", logits, labels, ignore_index=ignore_index)
    if is_empty(labels):  # no pixel: 0 with a zero gradient (jaxseg._validation)
        return empty_loss(logits)
    features, _, keep = neuroiou_statistics(
        logits,
        labels,
        kind=surrogate.kind,
        num_inputs=surrogate.num_inputs,
        ignore_index=ignore_index,
    )
    dtype = features.dtype
    values = surrogate(features).astype(dtype)  # [B, C]
    n_keep = jnp.sum(keep, dtype=jnp.int32)
    total = jnp.sum(jnp.where(keep, values, 0.0))
    return jnp.where(n_keep > 0, total / jnp.maximum(n_keep, 1).astype(dtype), 0.0).astype(dtype)


def save_surrogate(path: str | os.PathLike, surrogate: Surrogate) -> None:
    """Write a surrogate to ``path`` (flax msgpack: parameters, architecture, feature variant),
    whole or not at all (a killed writer leaves no truncated surrogate behind)."""
    state = {
        "format": _FORMAT,
        "params": jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(surrogate.params)),
        "hidden": np.asarray(surrogate.hidden, np.int64),
        "activation": surrogate.activation,
        "kind": surrogate.kind,
        "num_inputs": int(surrogate.num_inputs),
        "metrics": {k: float(v) for k, v in surrogate.metrics.items()},
    }
    if surrogate.feature_mean is not None:
        state["feature_mean"] = np.asarray(surrogate.feature_mean, np.float64)
    if surrogate.feature_scale is not None:
        state["feature_scale"] = np.asarray(surrogate.feature_scale, np.float64)
    data = flax.serialization.msgpack_serialize(state)
    atomic_write(os.fspath(path), lambda f: f.write(data))


def load_surrogate(path: str | os.PathLike) -> Surrogate:
    """Read a surrogate written by :func:`save_surrogate`; ValueError on a foreign file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NeuroIoU surrogate file not found: {path}")
    with open(path, "rb") as f:
        try:
            state = flax.serialization.msgpack_restore(f.read())
        except Exception as err:  # msgpack raises several unrelated types
            raise ValueError(f"{path} is not a NeuroIoU surrogate file ({err})") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a NeuroIoU surrogate file (format {_FORMAT} expected)")
    params = jax.tree_util.tree_map(jnp.asarray, state["params"])
    surrogate = Surrogate(
        params=params,
        hidden=tuple(int(h) for h in np.asarray(state["hidden"]).tolist()),
        activation=str(state["activation"]),
        kind=str(state["kind"]),
        num_inputs=int(state["num_inputs"]),
        metrics=dict(state.get("metrics", {})),
        feature_mean=state.get("feature_mean"),
        feature_scale=state.get("feature_scale"),
    )
    # check that the parameters fit the architecture
    expected = jax.eval_shape(
        lambda: surrogate.module.init(
            jax.random.key(0), jnp.zeros((1, surrogate.num_inputs), jnp.float32)
        )["params"]
    )
    got = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(got) or any(
        e.shape != g.shape
        for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(got))
    ):
        raise ValueError(f"{path}: parameters do not match hidden={surrogate.hidden}")
    return surrogate


def build_neuroiou(
    *,
    surrogate_path: str | None = None,
    surrogate: Surrogate | None = None,
    ignore_index: int = 255,
):
    """Registry builder: load the surrogate once, return ``loss_fn(logits, labels)``."""
    if (surrogate_path is None) == (surrogate is None):
        raise ValueError("neuroiou needs exactly one of surrogate_path or surrogate")
    if surrogate is None:
        if not surrogate_path:
            raise ValueError(
                "neuroiou: surrogate_path is empty; fit one with `python fit_surrogate.py "
                "--config <CE config> --checkpoint_dir <CE run> "
                "--output <file>` and pass it as loss.kwargs.surrogate_path"
            )
        if not os.path.isfile(surrogate_path):
            raise ValueError(
                f"neuroiou: no surrogate file at {surrogate_path!r}; fit one with `python "
                "fit_surrogate.py --config <CE config> --checkpoint_dir <CE run> "
                "--output <file>`"
            )
        surrogate = load_surrogate(surrogate_path)

    def loss_fn(logits, labels):
        return neuroiou_loss(logits, labels, surrogate=surrogate, ignore_index=ignore_index)

    return loss_fn


def _register() -> None:
    from jaxseg.losses.registry import register_loss

    register_loss("neuroiou", build_neuroiou)


_register()
