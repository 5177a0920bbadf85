"""Class-balanced batches for binary per-class fine-tuning (Berman et al., CVPR 2018, Sec. 4).

The binary Lovász-hinge experiment of the Lovász-Softmax paper fine-tunes one network per VOC
class ``c`` "with batches in which half of the images contain the class". For a global batch of
``B`` samples and a fraction ``f`` (default 1/2), :class:`ClassBalancedSchedule` makes every global
batch hold exactly

    k = floor(f * B + 1/2)      (f * B rounded half up)

*positive* samples, drawn among the images that contain ``c``, and ``B - k`` *negative* samples,
drawn among the images that do **not** contain ``c``. Negatives come from the images without the
class rather than from all images: a negative image can then never yield a crop with ``c``, so
the count of crops containing ``c`` is exactly ``k`` (not "at least ``k``", as it would be if
negatives could be images that happen to contain the class). Positives carry ``c`` as their target
class, so the augmentation constrains their random crop to contain a pixel of ``c`` (as equibatch
does, :func:`jaxseg.data.augment.train_augment`); negatives carry no target (``-1``).

Everything is a pure function of ``(seed, g)`` with ``g = s * B + q`` the global sample number
(step ``s``, position ``q`` in the global batch), like :mod:`jaxseg.data.equibatch`:

* which positions of step ``s`` are positive: the first ``k`` entries of a pseudo-random
  permutation ``slots(seed, s)`` of ``0 .. B-1`` (so positives are spread over the hosts' shards
  rather than all on the first host);
* the ``r``-th positive of step ``s`` (``r`` its rank in ``slots``) is positive sample number
  ``s * k + r`` of a stream of epoch-wise permutations of the positive images; likewise the
  negatives with ``s * (B - k) + r`` over the negative images. Over ``ceil(n_c / k)`` steps every
  one of the ``n_c`` positive images is therefore seen once, which is the paper's epoch for
  ``f = 1/2`` (``2 n_c / B`` steps).

Hence restarting at any step, or splitting the global batch over hosts, yields the same samples.
If one pool is empty (no training image has ``c``, or every image has it) the batch cannot be
balanced: all ``B`` samples then come from the other pool and a ``RuntimeWarning`` says so.
"""

from __future__ import annotations

import collections
import math
import threading
import warnings

import numpy as np

from jaxseg.data.equibatch import EpochSchedule

_SLOT_TAG = 0x736C6F74  # "slot"
_POS_TAG = 0x706F7369  # "posi"
_NEG_TAG = 0x6E656761  # "nega"


def num_positives(global_batch_size: int, fraction: float) -> int:
    """``floor(fraction * B + 1/2)``: the number of samples of each global batch holding the class."""
    B = int(global_batch_size)
    f = float(fraction)
    if B < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {B}")
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"class_balanced.fraction must be in [0, 1], got {f}")
    return int(math.floor(f * B + 0.5))


class ClassBalancedSchedule:
    """``g -> (example index, target class)``: ``k`` images with class ``c`` per global batch.

    Args:
      presence: bool [N, C], ``presence[i, c]`` iff example ``i`` has a pixel of class ``c`` (the
        class-presence index of :mod:`jaxseg.data.statistics`).
      class_id: the class ``c`` (a column of ``presence``).
      global_batch_size: ``B``, samples per global batch (all hosts together).
      seed: run seed.
      fraction: share ``f`` of each batch that contains ``c``; ``k = floor(f * B + 1/2)``.

    ``schedule(g)`` returns ``(i, c)`` for a positive sample (image ``i`` has ``c``; crop it around
    ``c``) and ``(i, -1)`` for a negative one (image ``i`` lacks ``c``).
    """

    def __init__(self, presence: np.ndarray, class_id: int, global_batch_size: int, seed: int,
                 fraction: float = 0.5):
        presence = np.asarray(presence, bool)
        if presence.ndim != 2 or presence.shape[0] < 1:
            raise ValueError(f"presence must be a non-empty bool [N, C] array, got shape {presence.shape}")
        c = int(class_id)
        if not 0 <= c < presence.shape[1]:
            raise ValueError(f"class_balanced.class_id must be in [0, {presence.shape[1]}), got {c}")
        self.class_id = c
        self.global_batch_size = int(global_batch_size)
        self.fraction = float(fraction)
        self.num_positives = num_positives(self.global_batch_size, self.fraction)
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.positive_images = np.flatnonzero(presence[:, c])
        self.negative_images = np.flatnonzero(~presence[:, c])
        B, k = self.global_batch_size, self.num_positives
        if k > 0 and self.positive_images.size == 0:
            warnings.warn(f"class_balanced: no training image contains class {c}; every sample is drawn "
                          f"among the {self.negative_images.size} images without it.", RuntimeWarning)
            self.num_positives = k = 0
        elif k < B and self.negative_images.size == 0:
            warnings.warn(f"class_balanced: every training image contains class {c}; every sample is "
                          f"drawn among them.", RuntimeWarning)
            self.num_positives = k = B
        self._positives = EpochSchedule(self.positive_images.size, seed, tag=_POS_TAG) if k > 0 else None
        self._negatives = EpochSchedule(self.negative_images.size, seed, tag=_NEG_TAG) if k < B else None
        self._ranks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def ranks(self, step: int) -> np.ndarray:
        """int [B]: ``ranks(s)[q]`` is the rank of position ``q`` in ``slots(seed, s)``; positions
        with rank ``< k`` are the positives of step ``s``."""
        with self._lock:
            r = self._ranks.get(step)
            if r is None:
                rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, _SLOT_TAG, int(step)])
                slots = rng.permutation(self.global_batch_size)
                r = np.empty_like(slots)
                r[slots] = np.arange(slots.size)
                self._ranks[step] = r
                while len(self._ranks) > 8:
                    self._ranks.popitem(last=False)
            return r

    def is_positive(self, g: int) -> bool:
        """Whether sample ``g`` is one of the ``k`` samples of its batch that contain the class."""
        step, pos = divmod(int(g), self.global_batch_size)
        return bool(self.ranks(step)[pos] < self.num_positives)

    def __call__(self, g: int) -> tuple[int, int]:
        g = int(g)
        if g < 0:
            raise ValueError(f"sample number must be >= 0, got {g}")
        B, k = self.global_batch_size, self.num_positives
        step, pos = divmod(g, B)
        rank = int(self.ranks(step)[pos])
        if rank < k:
            j, _ = self._positives(step * k + rank)
            return int(self.positive_images[j]), self.class_id
        j, _ = self._negatives(step * (B - k) + rank - k)
        return int(self.negative_images[j]), -1
