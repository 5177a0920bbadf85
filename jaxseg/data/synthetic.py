"""Synthetic segmentation datasets generated in memory with NumPy (no files, no network).

Three datasets:

* ``shapes``: multi-class scenes in the spirit of Pascal VOC. A dominant, textured background
  (class 0) and seven object classes, each with its own colour, texture and geometry, drawn with
  very different sizes and frequencies (a large frequent class down to tiny rare ones), so that the
  pixel frequencies are as imbalanced as VOC's. Images are corrupted with per-image brightness and
  colour jitter plus per-pixel Gaussian noise, so that a network has to learn colour *and* texture
  from a small neighbourhood rather than read the label off one pixel. Class identity is always
  decidable from a small receptive field (colour + texture of the object interior), which keeps the
  dataset learnable by a small UNet in minutes on a CPU.
* ``streets``: street scenes built to be hard the way real segmentation is (for loss studies):
  nine classes from sky and road (about a third of the pixels each) down to 1-pixel cracks (a few
  hundredths of a percent), i.e. a most-to-least frequent pixel ratio above 100; small objects
  (windows, cars, signs); three classes of structures at most 3 pixels wide (wires, poles, cracks)
  drawn without anti-aliasing; classes that only occur with others (windows inside buildings, cars
  on the road, signs on top of poles, cracks in the road); colours that partly overlap between
  classes (wire / crack / window dark, pole / road / building grey), textures, per-image
  brightness, contrast and colour jitter and per-pixel Gaussian noise.
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
STREETS_CLASS_NAMES: tuple[str, ...] = (
    "sky",
    "building",
    "window",
    "road",
    "car",
    "pole",
    "sign",
    "wire",
    "crack",
)

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


# ``streets``: class ids and the mean RGB colours of the scene's parts. Colours overlap on purpose:
# wire, crack and window are dark; pole, road and grey buildings are mid greys; lit windows and
# yellow signs are alike, and cars take the colours of buildings and signs.
_SKY, _BUILDING, _WINDOW, _ROAD, _CAR, _POLE, _SIGN, _WIRE, _CRACK = range(9)
_STREETS_SKY = ((150, 185, 225), (175, 180, 190), (205, 175, 150))  # blue, overcast, dusk
_STREETS_BUILDING = ((190, 170, 140), (140, 140, 145), (160, 90, 70), (115, 100, 90))
_STREETS_WINDOW = ((60, 75, 95), (45, 50, 60), (215, 195, 110))  # dark, darker, lit
_STREETS_ROAD = (95, 95, 100)
_STREETS_CAR = ((190, 45, 40), (220, 220, 215), (50, 55, 60), (45, 75, 165), (140, 140, 145))
_STREETS_POLE = (60, 115, 60)
_STREETS_SIGN = ((200, 40, 40), (40, 70, 190), (225, 200, 60))
_STREETS_WIRE = (35, 35, 40)
_STREETS_CRACK = (40, 38, 40)


def _line_pixels(y0: float, x0: float, y1: float, x1: float, width: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the segment (y0, x0)-(y1, x1), no anti-aliasing, clipped to the [s, s] image.

    One pixel per step along the major axis (the 8-connected digital line: ``n = max(|dy|, |dx|)``
    steps, ``(y, x) = round(p0 + (p1 - p0) k / n)``), thickened to ``width`` pixels along the minor
    axis, so that the run across the line is ``width`` pixels and its width normal to the line is
    ``width * |cos(angle to the major axis)| <= width``.
    """
    n = int(np.ceil(max(abs(y1 - y0), abs(x1 - x0)))) + 1
    t = np.linspace(0.0, 1.0, n)
    y, x = np.rint(y0 + (y1 - y0) * t).astype(np.int64), np.rint(x0 + (x1 - x0) * t).astype(np.int64)
    horizontal = abs(x1 - x0) >= abs(y1 - y0)
    offsets = np.arange(width) - (width - 1) // 2
    if horizontal:
        y = (y[:, None] + offsets[None, :]).ravel()
        x = np.repeat(x, width)
    else:
        x = (x[:, None] + offsets[None, :]).ravel()
        y = np.repeat(y, width)
    keep = (y >= 0) & (y < s) & (x >= 0) & (x < s)
    return y[keep], x[keep]


def streets_example(
    seed: int, split: str, index: int, image_size: int = 64, noise: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates image ``index`` of the ``streets`` split: (uint8 [S, S, 3], uint8 [S, S]).

    Scene model (lengths for S = 64; they scale with ``S / 64``), painted back to front:

    * sky (0) above a horizon at ``h ~ U(0.45, 0.6) S``, one of three sky colours with a vertical
      gradient; road (3) below it, grey with a coarse grain and white lane dashes (labelled road);
    * buildings (1): a row of blocks standing on the horizon, widths ``U(9, 22)`` px, each present
      with probability 0.8, roofs at ``U(0.08, 0.4) S``, one of four colours with faint horizontal
      courses; windows (2): a grid of 3-4 px squares inside each block (margins >= 2 px, gaps
      2 px), each present with probability 0.85, dark or lit;
    * cracks (8): ``Poisson(0.8)`` polylines in the road, 1 px wide, 3-5 segments of 3-7 px whose
      direction turns by at most 40 degrees, only where the label is road;
    * cars (4): ``Poisson(2.5)`` boxes of ``w x 0.5 w`` px, ``w ~ U(10, 18)``, with a narrower
      cabin and dark wheels, entirely below the horizon (on the road);
    * wires (7): with probability 0.8 a bundle of 1-3 parallel straight lines 1 or 2 px wide
      across the whole image at a random angle, at least 6 px apart (so they never touch);
    * poles (5), in front of the wires: ``Poisson(3)`` (at most 4) vertical lines 2 or 3 px wide,
      at least 8 px apart, from 1-6 px below the horizon up to ``U(0.05, 0.3) S``, green-grey; a
      sign (6) of 5-8 x 5-7 px on top of each pole with probability 0.8 (it covers the pole's
      top);

    then per-image contrast ``U(0.8, 1.2)``, brightness ``U(-20, 20)``, a colour cast ``N(0, 8)``
    per channel and per-pixel Gaussian noise of sigma ``noise`` (8 by default).
    Every class but sky and road is a small or thin structure whose colour is shared with another
    class, so it has to be recognised from a small neighbourhood and its context. Labels are
    0 (sky) .. 8 (crack); no void pixels. Every structure of wire, pole and crack is at most 3 px
    wide: no 4 x 4 block of pixels (corners excepted) fits in it, whatever its orientation.
    """
    split = canonical_split(split)
    if image_size < 32:
        raise ValueError(f"streets image_size must be >= 32, got {image_size}")
    rng = _rng(seed, split, index)
    s = int(image_size)
    k = s / 64.0  # lengths are given for S = 64
    yy, xx = np.mgrid[0:s, 0:s]
    image = np.empty((s, s, 3), np.float64)
    label = np.zeros((s, s), np.uint8)

    def paint(mask, colour, cls, jitter=10.0, tex=None):
        c = np.asarray(colour, np.float64) + rng.normal(0.0, jitter, size=3)
        value = c[None, None, :] if tex is None else c[None, None, :] + tex[..., None]
        image[mask] = np.broadcast_to(value, image.shape)[mask]
        label[mask] = cls

    # Sky and road.
    h = int(round(rng.uniform(0.45, 0.6) * s))
    sky = yy < h
    sky_colour = np.asarray(_STREETS_SKY[rng.integers(len(_STREETS_SKY))], np.float64)
    gradient = (yy / max(h, 1) - 0.5) * rng.uniform(-30, 30)
    paint(sky, sky_colour, _SKY, tex=gradient)
    road_tex = rng.normal(0.0, 8.0, size=(s, s)) + 6.0 * _texture("checker", yy, xx, 2, int(rng.integers(0, 2)))
    paint(~sky, _STREETS_ROAD, _ROAD, tex=road_tex)
    lane_y = int(rng.integers(h + 3, s)) if h + 3 < s else None
    if lane_y is not None and rng.uniform() < 0.5:
        period, phase = int(rng.integers(6, 10)), int(rng.integers(0, 10))
        dashes = (yy == lane_y) & (((xx + phase) // (period // 2)) % 2 == 0)
        image[dashes] = np.asarray((215, 215, 205), np.float64) + rng.normal(0.0, 8.0, size=3)

    # Buildings with their windows.
    x = int(rng.integers(-8, 4) * k)
    while x < s:
        w = max(4, int(round(rng.uniform(9, 22) * k)))
        if rng.uniform() < 0.8:
            top = int(round(rng.uniform(0.08, 0.4) * s))
            x0, x1 = max(x, 0), min(x + w, s)
            block = (yy >= top) & (yy < h) & (xx >= x0) & (xx < x1)
            if block.any():
                courses = 6.0 * _texture("hstripes", yy, xx, int(rng.integers(2, 4)), int(rng.integers(0, 4)))
                paint(block, _STREETS_BUILDING[rng.integers(len(_STREETS_BUILDING))], _BUILDING, tex=courses)
                ws = int(rng.integers(3, 5))  # window side
                gap = 2
                lit = rng.uniform() < 0.3
                wc = np.asarray(_STREETS_WINDOW[2 if lit else rng.integers(2)], np.float64)
                for wy in range(top + 2, h - ws - 1, ws + gap):
                    for wx in range(x0 + 2, x1 - ws - 1, ws + gap):
                        if rng.uniform() < 0.85:
                            win = (yy >= wy) & (yy < wy + ws) & (xx >= wx) & (xx < wx + ws)
                            paint(win, wc, _WINDOW, jitter=8.0)
        x += w + int(rng.integers(0, 6))

    # Cracks in the road (1 px polylines, painted where the label is road only).
    for _ in range(rng.poisson(0.8)):
        if s - h < 6:
            break
        py, px = rng.uniform(h + 2, s - 1), rng.uniform(0, s - 1)
        angle = rng.uniform(0, 2 * np.pi)
        crack = np.zeros((s, s), bool)
        for _ in range(int(rng.integers(3, 6))):
            length = rng.uniform(3, 7) * k
            qy, qx = py + length * np.sin(angle), px + length * np.cos(angle)
            cy, cx = _line_pixels(py, px, qy, qx, 1, s)
            crack[cy, cx] = True
            py, px = qy, qx
            angle += rng.uniform(-0.7, 0.7)
        paint(crack & (label == _ROAD), _STREETS_CRACK, _CRACK, jitter=6.0)

    # Cars, entirely on the road.
    for _ in range(rng.poisson(2.5)):
        w = max(4, int(round(rng.uniform(10, 18) * k)))
        ch = max(3, int(round(0.5 * w)))
        if s - 1 - (h + ch + 1) < 0:
            continue
        bottom = int(rng.integers(h + ch + 1, s))
        left = int(rng.integers(-w // 3, s - 2 * w // 3))
        body = (yy > bottom - ch // 2 - 1) & (yy <= bottom) & (xx >= left) & (xx < left + w)
        cabin = (yy > bottom - ch) & (yy <= bottom - ch // 2 - 1) & (xx >= left + w // 4) & (xx < left + w - w // 4)
        colour = _STREETS_CAR[rng.integers(len(_STREETS_CAR))]
        paint(body | cabin, colour, _CAR)
        glass = cabin & (yy == bottom - ch + 1) & (xx > left + w // 4) & (xx < left + w - w // 4 - 1)
        image[glass] = np.asarray(_STREETS_WINDOW[0], np.float64)
        wheels = (yy == bottom) & ((np.abs(xx - (left + 1.5)) <= 1) | (np.abs(xx - (left + w - 2.5)) <= 1))
        image[wheels] = 30.0

    # A bundle of parallel wires across the image, behind the poles (at least 6 px apart: never
    # touching).
    if rng.uniform() < 0.8:
        angle = rng.uniform(0, np.pi)
        dy, dx = np.sin(angle), np.cos(angle)
        cy, cx = rng.uniform(0.1 * s, 0.6 * s), rng.uniform(0.2 * s, 0.8 * s)
        width = int(rng.integers(1, 3))
        spacing = rng.uniform(6, 9) * k
        for j in range(int(rng.integers(1, 4))):
            oy, ox = cy + j * spacing * dx, cx - j * spacing * dy  # shifted along the normal
            wy, wx = _line_pixels(oy - 2 * s * dy, ox - 2 * s * dx, oy + 2 * s * dy, ox + 2 * s * dx, width, s)
            mask = np.zeros((s, s), bool)
            mask[wy, wx] = True
            paint(mask, _STREETS_WIRE, _WIRE, jitter=6.0)

    # Poles with their signs (poles at least 8 px apart: never touching).
    poles = []
    for _ in range(min(4, rng.poisson(3.0))):
        px = int(rng.integers(1, s - 4))
        if all(abs(px - q) >= 8 for q in poles):
            poles.append(px)
    for px in poles:
        pw = int(rng.integers(2, 4))
        base = min(s, h + int(rng.integers(1, 7)))
        top = int(round(rng.uniform(0.05, 0.3) * s))
        pole = (yy >= top) & (yy < base) & (xx >= px) & (xx < px + pw)
        paint(pole, _STREETS_POLE, _POLE, jitter=12.0, tex=8.0 * _texture("vstripes", yy, xx, 1, px))
        if rng.uniform() < 0.8:
            sw, sh = int(rng.integers(5, 9)), int(rng.integers(5, 8))
            sx = px + pw // 2 - sw // 2
            sign = (yy >= top - 1) & (yy < top - 1 + sh) & (xx >= sx) & (xx < sx + sw)
            paint(sign, _STREETS_SIGN[rng.integers(len(_STREETS_SIGN))], _SIGN)

    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-20, 20)
    cast = rng.normal(0.0, 8.0, size=3)
    image = (image - 128.0) * contrast + 128.0 + brightness + cast
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
    "streets": {"image_size": 64, "num_train": 256, "num_validation": 64, "num_test": 64, "noise": 8.0},
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
    if name in ("shapes", "streets"):
        example = shapes_example if name == "shapes" else streets_example
        pairs = [example(seed, split, i, image_size, noise) for i in range(num)]
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
    ``num_validation``, ``num_test``, ``seed`` and, for ``shapes`` and ``streets``, ``noise`` (pixel
    noise sigma).
    Results are memoised (read-only arrays).
    """
    if name not in DEFAULT_SIZES:
        raise ValueError(f"Unknown synthetic dataset {name!r}; expected one of {sorted(DEFAULT_SIZES)}.")
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
