"""Index-based sampling schedules: the example (and equibatch class) of every training sample.

Training samples are numbered along one global stream ``g = 0, 1, 2, ...``; the global batch at
step ``k`` holds samples ``g = k * B .. k * B + B - 1`` and host ``p`` of ``P`` takes the slice
``[p * B/P, (p + 1) * B/P)``. Everything about sample ``g`` is a pure function of ``(seed, g)``,
so a run restarted at any step, or run on a different number of hosts with the same global batch,
sees exactly the same samples.

* :class:`EpochSchedule` (plain sampling): epochs of ``N`` samples, each a fresh pseudo-random
  permutation of the ``N`` examples: ``example(g) = perm(seed, g // N)[g % N]``.
* :class:`EquibatchSchedule` (Berman et al., CVPR 2018, Sec. 3.1, "equibatch"): patches are
  sampled by cycling over the classes, so that every class is visited at least once every ``|C|``
  patches. How classes and images are picked is a jaxseg convention (the paper states only the
  cycling): the classes present in the split are put in a fixed pseudo-random order
  ``c_0 .. c_{K-1}`` (``K <= |C|``, absent classes are skipped); sample ``g`` targets class
  ``c_{g mod K}`` and its image is drawn uniformly among the images containing that class (the
  class-presence index of :mod:`jaxseg.data.statistics`); the augmentation then constrains the
  random crop to contain pixels of the target class (:func:`jaxseg.data.augment.train_augment`).
  Any ``K`` consecutive samples therefore cover every present class exactly once.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

_PERM_TAG = 0x7065726D  # "perm"
_EQUI_TAG = 0x65717569  # "equi"


class EpochSchedule:
    """``g -> (example index, -1)``: epoch-wise permutations of ``num_examples`` examples.

    ``tag`` names an independent stream of permutations for the same seed (other schedules use
    their own tag for each pool of images they permute).
    """

    def __init__(self, num_examples: int, seed: int, *, tag: int = _PERM_TAG):
        if num_examples < 1:
            raise ValueError(f"cannot sample from an empty split (num_examples={num_examples})")
        self.num_examples = int(num_examples)
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.tag = int(tag)
        self._perms: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, self.tag, int(epoch)])
                perm = rng.permutation(self.num_examples)
                self._perms[epoch] = perm
                while len(self._perms) > 4:
                    self._perms.popitem(last=False)
            return perm

    def __call__(self, g: int) -> tuple[int, int]:
        g = int(g)
        if g < 0:
            raise ValueError(f"sample number must be >= 0, got {g}")
        epoch, pos = divmod(g, self.num_examples)
        return int(self.permutation(epoch)[pos]), -1


class EquibatchSchedule:
    """``g -> (example index, target class)`` cycling over the classes present in the split.

    Args:
      presence: bool [N, C], ``presence[i, c]`` iff example ``i`` has a pixel of class ``c``.
      seed: run seed.
    """

    def __init__(self, presence: np.ndarray, seed: int):
        presence = np.asarray(presence, bool)
        if presence.ndim != 2 or presence.shape[0] < 1:
            raise ValueError(f"presence must be a non-empty bool [N, C] array, got shape {presence.shape}")
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        present = np.flatnonzero(presence.any(axis=0))
        if present.size == 0:
            raise ValueError("equibatch: no class is present in the split (all pixels void?)")
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, _EQUI_TAG])
        self.cycle = present[rng.permutation(present.size)]
        self.images_of = {int(c): np.flatnonzero(presence[:, c]) for c in present}

    def __call__(self, g: int) -> tuple[int, int]:
        g = int(g)
        if g < 0:
            raise ValueError(f"sample number must be >= 0, got {g}")
        c = int(self.cycle[g % self.cycle.size])
        images = self.images_of[c]
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, _EQUI_TAG, g])
        return int(images[rng.integers(images.size)]), c
