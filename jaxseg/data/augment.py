"""Training augmentation and evaluation preprocessing as TensorFlow graph functions.

Training (DeepLab recipe, Berman et al., CVPR 2018, Sec. 4.2-4.3: 321 x 321 crops with random scale
and flip): random scale ``s ~ U[min, max]`` (image bilinear, label nearest neighbour, so labels only
take values that were in the input) -> pad bottom/right up to the crop size (image with the
mean colour, label with 255) -> random crop -> random horizontal flip -> normalise
``(x - mean) / std``. With an equibatch target class the crop is constrained to contain a pixel of
that class: a pixel of the class is drawn uniformly and the crop offset is drawn uniformly among
the offsets whose window contains it (if nearest-neighbour downscaling erased a tiny object, the
sample falls back to scale 1, where the class is present by construction of the index).

Every random choice is a stateless op keyed by ``fold_in(sample_key, op_id)``, where the sample key
is derived from ``(seed, g)`` for global sample number ``g``: the output is a pure function of
``(image, label, seed, g)``.

Evaluation: normalise, then pad to a fixed ``(H, W)`` (image 0, i.e. the mean after normalisation;
label 255) so that shapes are static for ``jit``; the original size is returned for unpadding.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

_SEED_TAG = 0x6A617873  # "jaxs"
_OP_SCALE, _OP_PIXEL, _OP_CROP_Y, _OP_CROP_X, _OP_FLIP = 1, 2, 3, 4, 5


def sample_key(seed: int, g: tf.Tensor) -> tf.Tensor:
    """int64 [2] stateless-RNG key of global sample ``g`` for run ``seed``."""
    base = tf.constant([int(seed) & 0x7FFFFFFFFFFFFFFF, _SEED_TAG], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(g, tf.int64))


def _key(key: tf.Tensor, op: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.constant(op, tf.int64))


def _uniform_int(key: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
    """Uniform integer in [lo, hi] (inclusive), int32."""
    u = tf.random.stateless_uniform([], seed=key, dtype=tf.float32)
    span = tf.cast(hi - lo + 1, tf.float32)
    return lo + tf.minimum(tf.cast(tf.floor(u * span), tf.int32), hi - lo)


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``321 -> (321, 321)``; ``(h, w) -> (h, w)``."""
    if isinstance(size, int):
        return int(size), int(size)
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return size


def train_augment(
    image: tf.Tensor,
    label: tf.Tensor,
    key: tf.Tensor,
    *,
    crop_size: int | Sequence[int],
    scale_range: Sequence[float] = (1.0, 1.0),
    flip: bool = True,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    target_class: tf.Tensor | int = -1,
    ignore_index: int = 255,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scale, pad, crop (optionally class-constrained), flip, normalise one example.

    Args:
      image: uint8 [H, W, 3]. label: uint8 [H, W]. key: int64 [2] (:func:`sample_key`).
      target_class: int32 scalar; >= 0 asks for a crop containing that class, -1 for none.
    Returns:
      image float32 [ch, cw, 3] normalised, label int32 [ch, cw].
    """
    ch, cw = as_hw(crop_size)
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < min <= max, got {tuple(scale_range)}")
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    target = tf.cast(target_class, tf.int32)

    img = tf.cast(image, tf.float32)
    lab = tf.cast(label, tf.int32)[..., None]
    h, w = tf.shape(img)[0], tf.shape(img)[1]

    s = tf.random.stateless_uniform([], seed=_key(key, _OP_SCALE), minval=lo, maxval=hi) if hi > lo else tf.constant(lo)
    nh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * s), tf.int32))
    nw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * s), tf.int32))
    img_s = tf.image.resize(img, tf.stack([nh, nw]), method="bilinear")
    lab_s = tf.image.resize(lab, tf.stack([nh, nw]), method="nearest")
    if lo != 1.0 or hi != 1.0:
        keep_scaled = tf.logical_or(target < 0, tf.reduce_any(tf.equal(lab_s, target)))
        img_s, lab_s = tf.cond(keep_scaled, lambda: (img_s, lab_s), lambda: (img, lab))

    # Pad bottom/right to at least the crop size: image with the mean colour, label with void.
    hs, ws = tf.shape(img_s)[0], tf.shape(img_s)[1]
    ph, pw = tf.maximum(ch - hs, 0), tf.maximum(cw - ws, 0)
    paddings = [[0, ph], [0, pw], [0, 0]]
    img_p = tf.pad(img_s - mean_t, paddings) + mean_t
    lab_p = tf.pad(lab_s, paddings, constant_values=ignore_index)
    hp, wp = hs + ph, ws + pw

    # Crop window: unconstrained offsets in [0, hp - ch]; with a target class, among the offsets
    # whose window contains a uniformly drawn pixel of that class.
    coords = tf.cast(tf.where(tf.equal(lab_p[..., 0], target)), tf.int32)  # [M, 2]
    m = tf.shape(coords)[0]
    has = m > 0
    pick = _uniform_int(_key(key, _OP_PIXEL), 0, tf.maximum(m - 1, 0))
    pix = tf.cond(has, lambda: coords[pick], lambda: tf.zeros([2], tf.int32))
    y_lo = tf.where(has, tf.maximum(0, pix[0] - ch + 1), 0)
    y_hi = tf.where(has, tf.minimum(pix[0], hp - ch), hp - ch)
    x_lo = tf.where(has, tf.maximum(0, pix[1] - cw + 1), 0)
    x_hi = tf.where(has, tf.minimum(pix[1], wp - cw), wp - cw)
    y0 = _uniform_int(_key(key, _OP_CROP_Y), y_lo, y_hi)
    x0 = _uniform_int(_key(key, _OP_CROP_X), x_lo, x_hi)
    img_c = img_p[y0 : y0 + ch, x0 : x0 + cw]
    lab_c = lab_p[y0 : y0 + ch, x0 : x0 + cw, 0]

    if flip:
        do_flip = tf.random.stateless_uniform([], seed=_key(key, _OP_FLIP)) < 0.5
        img_c = tf.cond(do_flip, lambda: tf.reverse(img_c, [1]), lambda: img_c)
        lab_c = tf.cond(do_flip, lambda: tf.reverse(lab_c, [1]), lambda: lab_c)

    img_c = (img_c - mean_t) / std_t
    img_c.set_shape([ch, cw, 3])
    lab_c.set_shape([ch, cw])
    return img_c, lab_c


def eval_preprocess(
    image: tf.Tensor,
    label: tf.Tensor,
    *,
    pad_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
    instance: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Normalise and pad (bottom/right) to ``pad_size``; returns image float32 [PH, PW, 3], label
    int32 [PH, PW] (255 outside the image), ``size`` int32 [2] (original H, W) and, if given,
    ``instance`` int32 [PH, PW] (0 outside). Fails if the image is larger than ``pad_size``."""
    ph_, pw_ = as_hw(pad_size)
    sh, sw = image.shape[0], image.shape[1]
    if (sh is not None and sh > ph_) or (sw is not None and sw > pw_):
        raise ValueError(f"eval image of size ({sh}, {sw}) is larger than eval_pad_size ({ph_}, {pw_})")
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    check = tf.debugging.Assert(
        tf.logical_and(h <= ph_, w <= pw_),
        ["eval image of size", h, w, f"is larger than eval_pad_size ({ph_}, {pw_})"],
    )
    with tf.control_dependencies([check]):
        img = (tf.cast(image, tf.float32) - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    pads = [[0, tf.maximum(ph_ - h, 0)], [0, tf.maximum(pw_ - w, 0)]]
    out = {
        "image": tf.pad(img, pads + [[0, 0]]),
        "label": tf.pad(tf.cast(label, tf.int32), pads, constant_values=ignore_index),
        "size": tf.stack([h, w]),
    }
    out["image"].set_shape([ph_, pw_, 3])
    out["label"].set_shape([ph_, pw_])
    if instance is not None:
        out["instance"] = tf.pad(tf.cast(instance, tf.int32), pads)
        out["instance"].set_shape([ph_, pw_])
    return out
