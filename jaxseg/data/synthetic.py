"""Synthetic segmentation datasets generated in memory with NumPy (no files, no network).

Two datasets:

* ``shapes``: multi-class scenes in the spirit of Pascal VOC. A dominant, textured background
  (class 0) and seven object classes, each with its own colour, texture and geometry, drawn with
  very different sizes and frequencies (a large frequent class down to tiny rare ones), so that the
  pixel frequencies are as imbalanced as VOC's. Images are corrupted with per-image brightness and
  colour jitter plus per-pixel Gaussian noise, so that a network has to learn colour *and* texture
  from a small neighbourhood rather than read the label off one pixel. Class identity is always
  decidable from a small receptive field (colour + texture of the object interior), which keeps the
  dataset learnable by a small UNet in minutes on a CPU.
* ``circles``: the binary experiment of the Lovász paper (Berman et al., CVPR 2018, Sec. 4.1):
  10 binary 50 x 50 images each holding one circle of a random radius; one scalar feature per pixel,
  ``f ~ N(+1/2, 1)`` on the foreground and ``f ~ N(-1/2, 1)`` on the background (ibid., Fig. 3a).

Every image ``i`` of split ``s`` is a pure function of ``(seed, s, i)`` (its own
``numpy.random.Generator`` seeded with that triple), so datasets are reproducible whatever the
number of images requested, and the ``train`` and ``validation`` splits never share a stream.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

SHAPES_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "disc",
    "square",
    "triangle",
    "ring",
    "bar",
    "diamond",
    "dot",
)
CIRCLES_CLASS_NAMES: tuple[str, ...] = ("background", "circle")

# Split name -> stream id (the second entry of the per-image seed).
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}

# Object classes 1..7: mean RGB colour, texture kind, radius range as a fraction of the image side,
# and Poisson rate of instances per image. Big and frequent first, tiny and rare last.
_OBJECTS: tuple[dict[str, Any], ...] = (
    dict(colour=(215, 50, 45), texture="plain", radius=(0.16, 0.26), rate=0.9),  # disc
    dict(colour=(40, 175, 60), texture="hstripes", radius=(0.11, 0.18), rate=0.8),  # square
    dict(colour=(45, 80, 215), texture="checker", radius=(0.09, 0.15), rate=0.7),  # triangle
    dict(colour=(225, 205, 40), texture="vstripes", radius=(0.09, 0.14), rate=0.5),  # ring
    dict(colour=(200, 55, 205), texture="plain", radius=(0.07, 0.11), rate=0.45),  # bar
    dict(colour=(40, 205, 210), texture="dots", radius=(0.05, 0.08), rate=0.4),  # diamond
    dict(colour=(250, 250, 245), texture="plain", radius=(0.03, 0.045), rate=0.3),  # dot
)
_BACKGROUND_COLOUR = (120, 110, 95)


def canonical_split(split: str) -> str:
    """Returns the canonical synthetic split name (``train``, ``validation`` or ``test``)."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in _SPLIT_STREAMS:
        raise ValueError(
            f"Unknown split {split!r} for a synthetic dataset; expected one of "
            f"{sorted(_SPLIT_STREAMS)} (or 'val')."
        )
    return name


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _SPLIT_STREAMS[split], int(index)])


def _texture(kind: str, yy: np.ndarray, xx: np.ndarray, period: int, phase: int) -> np.ndarray:
    """A [H, W] multiplicative texture in [-1, 1] (0 for 'plain')."""
    if kind == "plain":
        return np.zeros(yy.shape, np.float64)
    if kind == "hstripes":
        return np.where(((yy + phase) // period) % 2 == 0, 1.0, -1.0)
    if kind == "vstripes":
        return np.where(((xx + phase) // period) % 2 == 0, 1.0, -1.0)
    if kind == "checker":
        return np.where((((yy + phase) // period) + ((xx + phase) // period)) % 2 == 0, 1.0, -1.0)
    if kind == "dots":
        return np.where(((yy + phase) % period == 0) & ((xx + phase) % period == 0), -1.0, 0.3)
    raise ValueError(f"unknown texture {kind!r}")


def _object_mask(cls: int, yy, xx, cy, cx, r, angle) -> np.ndarray:
    """Boolean [H, W] mask of the object of class ``cls`` centred at (cy, cx) with size r."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if cls == 1:  # disc
        return dy**2 + dx**2 <= r**2
    if cls == 2:  # axis-aligned square
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if cls == 3:  # upward triangle
        h = 1.6 * r
        t = (dy + h / 2) / h  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    if cls == 4:  # ring
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if cls == 5:  # rotated bar
        return (np.abs(u) <= r * 1.4) & (np.abs(v) <= max(r * 0.4, 1.0))
    if cls == 6:  # diamond
        return np.abs(dy) + np.abs(dx) <= r
    if cls == 7:  # dot
        return dy**2 + dx**2 <= max(r, 1.0) ** 2
    raise ValueError(f"unknown object class {cls}")


def shapes_example(
    seed: int, split: str, index: int, image_size: int = 64, noise: float = 18.0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates image ``index`` of the ``shapes`` split: (uint8 [S, S, 3], uint8 [S, S]).

    Scene model: background texture (low-frequency colour field + fine noise), then for each object
    class ``k`` a Poisson(rate_k) number of instances with radius ``U(radius_k) * S`` pixels
    (at least 1.5 pixels), painted in a random order (later objects occlude earlier ones). Each
    object is its class colour modulated by its class texture (amplitude 35) plus per-object colour
    jitter; finally per-image brightness/contrast jitter and per-pixel Gaussian noise (sigma
    ``noise``, 18 by default; raise it to make the task harder).
    Labels are 0 (background) .. 7; no void pixels.
    """
    split = canonical_split(split)
    if image_size < 8:
        raise ValueError(f"shapes image_size must be >= 8, got {image_size}")
    rng = _rng(seed, split, index)
    s = int(image_size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)

    # Background: smooth colour field (sum of two random low-frequency waves) + fine grain.
    bg = np.empty((s, s, 3), np.float64)
    for ch in range(3):
        fy, fx = rng.uniform(0.5, 2.0, size=2) * 2 * np.pi / s
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        field = 14 * np.sin(fy * yy + p1) + 14 * np.sin(fx * xx + p2)
        bg[..., ch] = _BACKGROUND_COLOUR[ch] + rng.uniform(-20, 20) + field
    image = bg + rng.normal(0.0, 10.0, size=(s, s, 1))
    label = np.zeros((s, s), np.uint8)

    objects = []
    for k, spec in enumerate(_OBJECTS, start=1):
        n = rng.poisson(spec["rate"] * (1.0 if s <= 64 else min(3.0, s / 64)))
        objects.extend([k] * int(n))
    rng.shuffle(objects)
    for k in objects:
        spec = _OBJECTS[k - 1]
        r = max(1.5, rng.uniform(*spec["radius"]) * s)
        cy, cx = rng.uniform(0, s - 1, size=2)
        angle = rng.uniform(0, np.pi)
        mask = _object_mask(k, yy, xx, cy, cx, r, angle)
        if not mask.any():
            continue
        period = int(rng.integers(2, 4))
        tex = _texture(spec["texture"], yy.astype(np.int64), xx.astype(np.int64), period, int(rng.integers(0, 4)))
        colour = np.asarray(spec["colour"], np.float64) + rng.normal(0.0, 12.0, size=3)
        obj = colour[None, None, :] + 35.0 * tex[..., None]
        image[mask] = obj[mask]
        label[mask] = k

    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-20, 20)
    image = (image - 128.0) * contrast + 128.0 + brightness
    image = image + rng.normal(0.0, float(noise), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


@dataclasses.dataclass(frozen=True)
class CirclesData:
    """The Lovász paper's Sec. 4.1 data: ``label`` uint8 [N, S, S] (1 = circle), ``feature``
    float32 [N, S, S] (``N(+1/2, 1)`` on the circle, ``N(-1/2, 1)`` elsewhere), ``image`` uint8
    [N, S, S, 3] (the feature mapped linearly from [-4, 4] to [0, 255], grey, for viewing and for
    the generic image pipelines)."""

    image: np.ndarray
    label: np.ndarray
    feature: np.ndarray


def circles_example(seed: int, split: str, index: int, image_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(label uint8 [S, S], feature float32 [S, S]) for circle image ``index`` (Sec. 4.1).

    The radius is uniform in [S/10, S/3] (5 to 16.7 pixels at S = 50) and the centre uniform such
    that the circle stays inside the image.
    """
    split = canonical_split(split)
    if image_size < 8:
        raise ValueError(f"circles image_size must be >= 8, got {image_size}")
    rng = _rng(seed, split, index)
    s = int(image_size)
    r = rng.uniform(s / 10, s / 3)
    cy, cx = rng.uniform(r, s - 1 - r, size=2)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)
    feature = rng.normal(0.0, 1.0, size=(s, s)) + np.where(label == 1, 0.5, -0.5)
    return label, feature.astype(np.float32)


def feature_to_image(feature: np.ndarray) -> np.ndarray:
    """Maps a circles feature to a grey uint8 image: ``round((clip(f, -4, 4) + 4) * 255 / 8)``."""
    grey = np.rint((np.clip(feature, -4.0, 4.0) + 4.0) * (255.0 / 8.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


DEFAULT_SIZES = {
    "shapes": {"image_size": 64, "num_train": 256, "num_validation": 64, "num_test": 64, "noise": 18.0},
    "circles": {"image_size": 50, "num_train": 10, "num_validation": 10, "num_test": 10},
}


def _num_images(name: str, split: str, options: dict) -> int:
    key = f"num_{split}"
    n = int(options.get(key, DEFAULT_SIZES[name][key]))
    if n < 1:
        raise ValueError(f"{name}: option {key} must be >= 1, got {n}")
    return n


def check_options(name: str, options: dict) -> dict:
    """Validates synthetic options and fills in defaults (image_size, num_<split>, seed)."""
    allowed = set(DEFAULT_SIZES[name]) | {"seed"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"Unknown option(s) {sorted(unknown)} for dataset {name!r}; allowed: {sorted(allowed)}")
    out = dict(DEFAULT_SIZES[name])
    out["seed"] = 0
    out.update(options)
    return out


@functools.lru_cache(maxsize=16)
def _generate_cached(name: str, split: str, image_size: int, num: int, seed: int, noise: float):
    if name == "shapes":
        pairs = [shapes_example(seed, split, i, image_size, noise) for i in range(num)]
        images = np.stack([p[0] for p in pairs])
        labels = np.stack([p[1] for p in pairs])
        return images, labels, None
    pairs = [circles_example(seed, split, i, image_size) for i in range(num)]
    labels = np.stack([p[0] for p in pairs])
    features = np.stack([p[1] for p in pairs])
    images = np.stack([feature_to_image(f) for f in features])
    return images, labels, features


def generate(name: str, split: str, **options) -> dict[str, np.ndarray]:
    """All examples of a synthetic split as NumPy arrays.

    Returns ``{"image": uint8 [N, S, S, 3], "label": uint8 [N, S, S], "id": str [N]}`` and, for
    ``circles``, ``"feature": float32 [N, S, S]``. Options: ``image_size``, ``num_train``,
    ``num_validation``, ``num_test``, ``seed`` and, for ``shapes``, ``noise`` (pixel noise sigma).
    Results are memoised (read-only arrays).
    """
    if name not in DEFAULT_SIZES:
        raise ValueError(f"Unknown synthetic dataset {name!r}; expected 'shapes' or 'circles'.")
    opts = check_options(name, options)
    split = canonical_split(split)
    num = _num_images(name, split, opts)
    noise = float(opts.get("noise", 0.0))
    if noise < 0:
        raise ValueError(f"{name}: option noise must be >= 0, got {noise}")
    images, labels, features = _generate_cached(name, split, int(opts["image_size"]), num, int(opts["seed"]), noise)
    out = {
        "image": images,
        "label": labels,
        "id": np.asarray([f"{name}_{split}_{i:06d}" for i in range(num)]),
    }
    if features is not None:
        out["feature"] = features
    for v in out.values():
        v.setflags(write=False)
    return out


def circles(seed: int = 0, num_images: int = 10, image_size: int = 50, split: str = "train") -> CirclesData:
    """The Sec. 4.1 experiment's data in one call (see :class:`CirclesData`)."""
    d = generate("circles", split, seed=seed, image_size=image_size, **{f"num_{canonical_split(split)}": num_images})
    return CirclesData(image=d["image"], label=d["label"], feature=d["feature"])
