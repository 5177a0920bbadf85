"""Fitting the NeuroIoU surrogate (Nagendar et al., BMVC 2018, Sec. 3.1, Eq. 2-3).

Recipe of the paper: train a network with cross-entropy, run it over the training images, compute
for every (image, class) pair the features of :func:`jaxseg.losses.neuroiou.neuroiou_statistics`
and the true IoU loss ``1 - TP / (TP + FP + FN)`` of the arg-max prediction, and fit the MLP by
mean squared error (Eq. 3). A trained network is mostly right on its own training images, so its
pairs crowd near IoU loss 0; to cover the whole range every batch is also seen under random
perturbations of the logits (the labels are kept):

* temperature scaling ``F / T`` (same hard sets, other soft counts),
* logit noise ``F + σ ε`` (``ε`` unit-variance logistic; flips uncertain pixels),
* ground-truth shift ``F + β onehot(y)`` with ``β`` of either sign (towards or away from the
  ground truth: higher or lower IoU),
* label-preserving mixing ``(1 - λ) F + λ F_other`` with the logits of another image of the batch
  (the prediction drifts towards unrelated content, the ground truth stays).

Public API (array / iterator based; the last two read the trainer's runs):

* :func:`perturb_logits` — one random draw of the perturbations above, per image.
* :func:`generate_pairs` — ``(features [N, F], targets [N])`` from an iterator of batches and a
  logits function (e.g. a trained model's ``apply``).
* :func:`fit_surrogate` — MSE fit with optax (Adam), held-out split, returns a
  :class:`jaxseg.losses.neuroiou.Surrogate` whose ``metrics`` hold the held-out error.
* :func:`gradient_agreement` — whether the fitted surrogate's gradient moves mispredicted pixels
  the right way (an accurate value does not guarantee it; check before fine-tuning);
  :func:`batch_gradient_agreement` the same over batches of a logits function.
* :func:`save_surrogate` / :func:`load_surrogate` (re-exported from the loss module).
* :func:`checkpoint_network` — a trained run's network and images (imports the trainer when
  called); :func:`fit_from_checkpoint` — all of the above on that network.

The program ``fit_surrogate.py`` (next to ``train.py``) runs them on a trained cross-entropy
run's checkpoint and writes the surrogate file::

    python fit_surrogate.py --config configs/<ce_config>.py \\
        --checkpoint_dir <workdir of the CE run> --output <surrogate.msgpack>
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.losses.neuroiou import (
    NeuroIoUSurrogate,
    Surrogate,
    load_surrogate,
    neuroiou_loss,
    neuroiou_statistics,
    save_surrogate,
)

__all__ = [
    "perturb_logits",
    "generate_pairs",
    "fit_mlp",
    "fit_surrogate",
    "gradient_agreement",
    "batch_gradient_agreement",
    "CheckpointNetwork",
    "checkpoint_network",
    "fit_from_checkpoint",
    "save_surrogate",
    "load_surrogate",
]


def perturb_logits(
    rng: jax.Array,
    logits: jax.Array,
    labels: jax.Array,
    *,
    temperature_range: tuple[float, float] = (0.25, 4.0),
    noise_std_range: tuple[float, float] = (0.0, 3.0),
    gt_shift_range: tuple[float, float] = (-4.0, 4.0),
    mix_range: tuple[float, float] = (0.0, 0.7),
    ignore_index: int = 255,
) -> jax.Array:
    """One random perturbation per image of ``logits [B, ..., C]``; labels are not changed.

    Per image: ``T`` log-uniform in ``temperature_range``, ``σ``, ``β`` and ``λ`` uniform in their
    ranges; ``F' = ((1 - λ) F + λ F_other + β onehot(y)) / T + σ ε`` with ``F_other`` the batch
    rolled by a random non-zero shift and ``ε`` unit-variance logistic noise (void pixels get no
    ``β`` shift). A range ``(0, 0)`` switches a perturbation off (``(1, 1)`` for the temperature).
    """
    logits = logits.astype(jnp.float32)
    batch, num_classes = logits.shape[0], logits.shape[-1]
    k_t, k_s, k_b, k_m, k_p, k_e = jax.random.split(rng, 6)
    shape = (batch,) + (1,) * (logits.ndim - 1)
    lo, hi = temperature_range
    if not 0 < lo <= hi:
        raise ValueError(f"temperature_range must satisfy 0 < lo <= hi, got {temperature_range}")
    temperature = jnp.exp(jax.random.uniform(k_t, shape, minval=math.log(lo), maxval=math.log(hi)))
    sigma = jax.random.uniform(k_s, shape, minval=noise_std_range[0], maxval=noise_std_range[1])
    beta = jax.random.uniform(k_b, shape, minval=gt_shift_range[0], maxval=gt_shift_range[1])
    lam = jax.random.uniform(k_m, shape, minval=mix_range[0], maxval=mix_range[1])
    # another image of the batch: a random non-zero cyclic shift (itself when the batch is 1)
    shift = jax.random.randint(k_p, (), 1, max(batch, 2)) % batch
    other = jnp.roll(logits, shift, axis=0)
    valid = (labels != ignore_index)[..., None]
    onehot = jax.nn.one_hot(jnp.where(valid[..., 0], labels, 0), num_classes) * valid
    mixed = (1.0 - lam) * logits + lam * other + beta * onehot
    # unit-variance logistic noise: as good as Gaussian here, and far quicker to compile on CPU
    u = jax.random.uniform(k_e, logits.shape, minval=1e-6, maxval=1.0 - 1e-6)
    noise = jnp.log(u / (1.0 - u)) * (math.sqrt(3.0) / math.pi)
    return mixed / temperature + sigma * noise


def _resize_to_labels(logits: jax.Array, label_shape: Sequence[int]) -> jax.Array:
    target = tuple(label_shape) + (logits.shape[-1],)
    if logits.shape == target:
        return logits
    return jax.image.resize(logits.astype(jnp.float32), target, method="bilinear")


@functools.partial(
    jax.jit,
    static_argnames=(
        "kind", "num_inputs", "num_perturbations", "include_clean", "ignore_index", "perturbation"
    ),
)
def _pair_statistics(
    rng, logits, labels, example_mask, *, kind, num_inputs, num_perturbations, include_clean,
    ignore_index, perturbation,
):
    """Features, targets and keep mask ``[V, B, C, ...]`` of the clean and perturbed logits."""
    logits = _resize_to_labels(logits, labels.shape)
    variants = [logits[None]] if include_clean else []
    if num_perturbations:
        variants.append(
            jax.vmap(
                lambda k: perturb_logits(
                    k, logits, labels, ignore_index=ignore_index, **dict(perturbation)
                )
            )(jax.random.split(rng, num_perturbations))
        )
    variants = jnp.concatenate(variants, axis=0)
    features, targets, keep = jax.vmap(
        lambda v: neuroiou_statistics(
            v, labels, kind=kind, num_inputs=num_inputs, ignore_index=ignore_index
        )
    )(variants)
    return features, targets, keep & example_mask[None, :, None]


def generate_pairs(
    logits_fn: Callable[[Any], jax.Array],
    batches: Iterable[dict[str, Any]],
    *,
    kind: str = "prob",
    num_inputs: int = 6,
    num_perturbations: int = 4,
    include_clean: bool = True,
    max_batches: int | None = None,
    seed: int = 0,
    ignore_index: int = 255,
    **perturbation_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """(features, true IoU loss) pairs of every kept (image, class) of the batches.

    Args:
      logits_fn: ``images -> logits [B, h, w, C]`` (e.g. ``lambda x: model.apply(variables, x,
        train=False)``); logits at a lower resolution are resized bilinearly to the labels.
      batches: iterable of dicts with ``"image"`` and ``"label"`` ``[B, H, W]`` (and optionally
        ``"example_mask"`` ``[B]``, False for padding examples, which are dropped).
      kind, num_inputs: the feature variant (see :func:`neuroiou_statistics`).
      num_perturbations: random perturbations of each batch (:func:`perturb_logits`).
      include_clean: also keep the unperturbed logits' pairs.
      max_batches: stop after this many batches (None: exhaust the iterator).
      seed: seed of the perturbations.
      **perturbation_kwargs: ranges passed to :func:`perturb_logits`.

    Returns:
      ``features`` float32 ``[N, num_inputs]`` and ``targets`` float32 ``[N]``.
    """

    if num_perturbations < 0 or (num_perturbations == 0 and not include_clean):
        raise ValueError("generate_pairs needs include_clean=True or num_perturbations >= 1")
    rng = jax.random.key(seed)
    feats, targs = [], []
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        labels = jnp.asarray(batch["label"]).astype(jnp.int32)
        mask = jnp.asarray(batch.get("example_mask", np.ones(labels.shape[0], bool)))
        logits = logits_fn(batch["image"])
        rng, sub = jax.random.split(rng)
        f, t, k = jax.device_get(
            _pair_statistics(
                sub,
                logits,
                labels,
                mask,
                kind=kind,
                num_inputs=num_inputs,
                num_perturbations=num_perturbations,
                include_clean=include_clean,
                ignore_index=ignore_index,
                perturbation=tuple(sorted(perturbation_kwargs.items())),
            )
        )
        feats.append(f[k])
        targs.append(t[k])
    if not feats:
        raise ValueError("generate_pairs: the batch iterator yielded nothing")
    return (
        np.concatenate(feats).astype(np.float32),
        np.concatenate(targs).astype(np.float32),
    )


def fit_mlp(
    features: Any,
    targets: Any,
    *,
    hidden: Sequence[int] = (100, 100, 100, 100),
    activation: str = "softplus",
    steps: int = 5000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = False,
) -> tuple[NeuroIoUSurrogate, Any, dict[str, float], tuple[np.ndarray, np.ndarray] | None]:
    """Least-squares fit of a :class:`NeuroIoUSurrogate` MLP to ``targets [N]`` from ``features [N, F]``.

    Adam with a cosine-decayed learning rate, minibatches drawn with replacement, the whole loop
    one ``lax.scan`` under ``jit``. A random ``val_fraction`` of the pairs is held out. With
    ``standardize`` the MLP is fitted on ``(x - mean) / std`` of the training features.

    Returns:
      ``(module, params, metrics, standardization)``; ``metrics`` holds ``train_mse``,
      ``num_train``, ``num_val`` and, with a held-out set, ``val_mse``, ``val_mae`` and
      ``val_baseline_mse`` (the MSE of predicting the training mean, for comparison);
      ``standardization`` is ``(mean [F], std [F])`` or None.
    """
    x = np.asarray(features, np.float32)
    y = np.asarray(targets, np.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [N, F] and targets [N], got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("features and targets must be finite")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    n = x.shape[0]
    n_val = int(round(n * val_fraction))
    if n - n_val < 1:
        raise ValueError(f"not enough pairs to fit: {n} with val_fraction={val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    standardization = None
    if standardize:
        mean = x[train_idx].astype(np.float64).mean(axis=0)
        std = np.maximum(x[train_idx].astype(np.float64).std(axis=0), 1e-6)
        standardization = (mean, std)
        x = ((x - mean) / std).astype(np.float32)
    x_train, y_train = jnp.asarray(x[train_idx]), jnp.asarray(y[train_idx])

    key_init, key_batches = jax.random.split(jax.random.key(seed))
    module = NeuroIoUSurrogate(hidden=tuple(int(h) for h in hidden), activation=activation)
    params = module.init(key_init, jnp.zeros((1, x.shape[1]), jnp.float32))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    batch_size = min(batch_size, x_train.shape[0])

    def mse(p, xb, yb):
        return jnp.mean((module.apply({"params": p}, xb) - yb) ** 2)

    def step(carry, idx):
        p, s = carry
        grads = jax.grad(mse)(p, x_train[idx], y_train[idx])
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    @jax.jit
    def train(p):
        indices = jax.random.randint(key_batches, (steps, batch_size), 0, x_train.shape[0])
        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), indices)
        return p

    params = train(params)
    predict = jax.jit(lambda p, xb: module.apply({"params": p}, xb))
    metrics = {
        "train_mse": float(jnp.mean((predict(params, x_train) - y_train) ** 2)),
        "num_train": float(train_idx.size),
        "num_val": float(n_val),
    }
    if n_val:
        x_val, y_val = jnp.asarray(x[val_idx]), jnp.asarray(y[val_idx])
        pred = predict(params, x_val)
        metrics["val_mse"] = float(jnp.mean((pred - y_val) ** 2))
        metrics["val_mae"] = float(jnp.mean(jnp.abs(pred - y_val)))
        metrics["val_baseline_mse"] = float(jnp.mean((y_val - jnp.mean(y_train)) ** 2))
    return module, params, metrics, standardization


def fit_surrogate(
    features: Any,
    targets: Any,
    *,
    kind: str = "prob",
    hidden: Sequence[int] = (100, 100, 100, 100),
    activation: str = "softplus",
    **fit_kwargs: Any,
) -> Surrogate:
    """Fit the NeuroIoU surrogate by mean squared error (paper Eq. 3); see :func:`fit_mlp`.

    ``features [N, 3 or 6]`` from :func:`generate_pairs` with the same ``kind``; they are
    standardised with the training pairs' mean and standard deviation (stored in the surrogate:
    hinge features are not O(1)). The returned :class:`Surrogate`'s ``metrics`` hold the held-out
    error (``val_mse``, ``val_mae``).
    """
    num_inputs = np.shape(features)[-1]
    if kind not in ("prob", "hinge") or num_inputs not in (3, 6):
        raise ValueError(
            f"a NeuroIoU surrogate takes kind 'prob'/'hinge' and 3 or 6 features, got kind={kind!r}"
            f" and features of shape {np.shape(features)}"
        )
    fit_kwargs.setdefault("standardize", True)
    _, params, metrics, standardization = fit_mlp(
        features, targets, hidden=hidden, activation=activation, **fit_kwargs
    )
    mean, scale = standardization if standardization is not None else (None, None)
    return Surrogate(params, tuple(hidden), activation, kind, num_inputs, metrics, mean, scale)


def gradient_agreement(
    surrogate: Surrogate, logits: Any, labels: Any, *, ignore_index: int = 255
) -> dict[str, float]:
    """Whether the surrogate's gradient moves mispredicted pixels the right way.

    An accurate surrogate of the IoU loss *value* can still have useless gradients (the soft sums
    also act as proxies of the hard counts, and the true loss is flat in the probabilities for
    fixed hard sets). For the mispredicted valid pixels of ``logits [B, H, W, C]``, returns the
    fraction where one gradient-descent step on the NeuroIoU loss raises the ground-truth logit
    (``fn_agreement``, the paper's "increases the probabilities of false negative pixels") and
    lowers the wrongly predicted class's logit (``fp_agreement``, "decreases ... false positive
    pixels"), and ``num_pixels``. 1.0 is ideal, 0.5 is chance. Check it before fine-tuning.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    grads = jax.jit(
        jax.grad(lambda x: neuroiou_loss(x, labels, surrogate=surrogate, ignore_index=ignore_index))
    )(logits)
    grads, logits, labels = (np.asarray(a) for a in jax.device_get((grads, logits, labels)))
    pred = logits.argmax(-1)
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    wrong = valid & (pred != safe)
    g_true = np.take_along_axis(grads, safe[..., None], -1)[..., 0]
    g_pred = np.take_along_axis(grads, pred[..., None], -1)[..., 0]
    n = int(wrong.sum())
    if n == 0:
        return {"fn_agreement": float("nan"), "fp_agreement": float("nan"), "num_pixels": 0.0}
    return {
        "fn_agreement": float((g_true[wrong] < 0).mean()),
        "fp_agreement": float((g_pred[wrong] > 0).mean()),
        "num_pixels": float(n),
    }


def batch_gradient_agreement(
    surrogate: Surrogate,
    logits_fn: Callable[[Any], jax.Array],
    batches: Iterable[dict[str, Any]],
    *,
    max_batches: int | None = 4,
    ignore_index: int = 255,
) -> dict[str, float]:
    """:func:`gradient_agreement` over ``batches``, weighted by each batch's mispredicted pixels.

    ``logits_fn`` and ``batches`` as in :func:`generate_pairs` (logits resized to the labels,
    padding examples, ``example_mask`` False, left out); stops after ``max_batches`` batches
    (None: exhausts the iterator). Returns ``fn_agreement``, ``fp_agreement`` (NaN when no pixel
    is mispredicted) and ``num_pixels``.
    """
    totals = {"fn_agreement": 0.0, "fp_agreement": 0.0, "num_pixels": 0.0}
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        labels = np.asarray(batch["label"])
        if "example_mask" in batch:
            keep = np.asarray(batch["example_mask"])[:, None, None]
            labels = np.where(keep, labels, ignore_index)
        logits = _resize_to_labels(logits_fn(batch["image"]), labels.shape)
        a = gradient_agreement(surrogate, logits, labels, ignore_index=ignore_index)
        if a["num_pixels"]:
            for key in ("fn_agreement", "fp_agreement"):
                totals[key] += a[key] * a["num_pixels"]
            totals["num_pixels"] += a["num_pixels"]
    n = totals["num_pixels"]
    for key in ("fn_agreement", "fp_agreement"):
        totals[key] = totals[key] / n if n else float("nan")
    return totals


@dataclasses.dataclass(frozen=True)
class CheckpointNetwork:
    """A trained run's network (:func:`checkpoint_network`): ``apply(variables, images)`` gives
    the logits in evaluation mode (jitted, differentiable in ``variables``), ``batches()`` a fresh
    iterator over the chosen split with the evaluation pipeline (whole images, padding masked)."""

    apply: Callable[[Any, Any], jax.Array]
    variables: Any
    batches: Callable[[], Iterable[dict[str, Any]]]
    ignore_index: int
    step: int

    def logits(self, images: Any) -> jax.Array:
        """The network's logits of ``images`` (the ``logits_fn`` of :func:`generate_pairs`)."""
        return self.apply(self.variables, images)


def checkpoint_network(
    config: Any, checkpoint_dir: str, *, step: int | None = None, split: str | None = None
) -> CheckpointNetwork:
    """A trained run's network and images, for :func:`generate_pairs` and
    :func:`batch_gradient_agreement`.

    ``config`` and ``checkpoint_dir`` are the run's config and workdir (``train.py``'s
    ``--config`` and ``--workdir``); ``step`` None restores the latest checkpoint; ``split`` None
    reads ``config.data.train_split``. Imports the trainer when called.
    """
    from jaxseg.training import loop  # pylint: disable=g-import-not-at-top
    from jaxseg.training.initialization import ConfigError  # pylint: disable=g-import-not-at-top

    if not os.path.isdir(checkpoint_dir):  # (Run makes its workdir: check first)
        raise FileNotFoundError(
            f"checkpoint_dir {checkpoint_dir} is not a directory: train the model with train.py "
            "--workdir there first."
        )
    config = config.copy_and_resolve_references()
    config.data.eval_split = split or config.data.train_split
    run = loop.Run(config, checkpoint_dir)
    if jax.process_count() != 1:
        raise ConfigError("reading a run's network for a surrogate runs in a single process: "
                          "leave config.distributed off.")
    try:
        step = run.checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {run.checkpointer.directory}: train the model first."
            )
        variables = run.checkpointer.restore(run.initial_state(), step).variables
    finally:
        run.checkpointer.close()
    apply = jax.jit(functools.partial(run.model.apply, train=False))
    return CheckpointNetwork(apply, variables, run.eval_iterator, run.ignore_index, int(step))


def fit_from_checkpoint(
    config: Any,
    checkpoint_dir: str,
    output: str,
    *,
    step: int | None = None,
    split: str | None = None,
    max_batches: int = 200,
    kind: str = "prob",
    num_inputs: int = 6,
    num_perturbations: int = 4,
    seed: int = 0,
    agreement_batches: int = 4,
    **fit_kwargs: Any,
) -> Surrogate:
    """Fits a surrogate on a trained run's predictions, writes it to ``output`` and returns it.

    The network and images are :func:`checkpoint_network`'s (``config``, ``checkpoint_dir``,
    ``step``, ``split``). ``max_batches``, ``kind``, ``num_inputs``, ``num_perturbations`` and
    ``seed`` are :func:`generate_pairs`'s, ``fit_kwargs`` (``hidden``, ``activation``, ``steps``,
    ...) :func:`fit_surrogate`'s (the defaults: the paper's 6 probability features and 4 x 100
    MLP, and ``fit_surrogate.py``'s); the gradient is checked on ``agreement_batches`` batches
    (:func:`batch_gradient_agreement`). The surrogate's ``metrics`` add ``checkpoint_step``,
    ``num_pairs``, ``grad_fn_agreement`` and ``grad_fp_agreement`` to the fit's. The program
    ``fit_surrogate.py`` is this function behind flags.
    """
    net = checkpoint_network(config, checkpoint_dir, step=step, split=split)
    features, targets = generate_pairs(
        net.logits, net.batches(), kind=kind, num_inputs=num_inputs,
        num_perturbations=num_perturbations, max_batches=max_batches, seed=seed,
        ignore_index=net.ignore_index,
    )
    surrogate = fit_surrogate(features, targets, kind=kind, seed=seed, **fit_kwargs)
    agreement = batch_gradient_agreement(
        surrogate, net.logits, net.batches(), max_batches=agreement_batches,
        ignore_index=net.ignore_index,
    )
    surrogate = dataclasses.replace(surrogate, metrics={
        **surrogate.metrics,
        "checkpoint_step": float(net.step),
        "num_pairs": float(len(targets)),
        "grad_fn_agreement": agreement["fn_agreement"],
        "grad_fp_agreement": agreement["fp_agreement"],
    })
    save_surrogate(output, surrogate)
    return surrogate
