"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with
atrous (dilated) stages for dense prediction (Chen et al., DeepLab, TPAMI 2017, Sec. 3.1).

Layout and names follow torchvision so that its state dicts import key for key
(:mod:`jaxseg.models.torch_import`): ``conv1``/``bn1`` (7x7 stride-2 stem, then a 3x3 stride-2
max-pool with padding 1), stages ``layer1..layer4`` made of blocks ``layer{i}_{j}`` (torchvision's
``layer{i}.{j}``), each with ``conv1, bn1, conv2, bn2[, conv3, bn3]`` and, where the shape changes,
``downsample_0`` (1x1 conv) and ``downsample_1`` (its BatchNorm). The classifier (``fc``) is not
part of the backbone.

Bottleneck block: ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))`` with
``conv1`` 1x1 to ``planes``, ``conv2`` 3x3 (dilation ``d``, padding ``d``), ``conv3`` 1x1 to
``4 * planes``. The stride of the first block of a stage sits in ``conv2`` (torchvision,
"ResNet v1.5") or, with ``stride_in_1x1=True``, in ``conv1`` as in the original Caffe models
(MSRA's ResNet-101, and DeepLab-v2's COCO/VOC initialisations). Both placements have the same
parameters; only the outputs differ.

Output stride (``output_stride`` 32, 16 or 8): the strides of the last one or two stages are
replaced by dilation, DeepLab style: every block of a dilated stage uses the stage's dilation
(2 for stride 16 in ``layer4``; 2 in ``layer3`` and 4 in ``layer4`` for stride 8), unlike
torchvision's ``replace_stride_with_dilation`` which keeps the previous dilation in the stage's
first block. With ``torchvision_dilation=True`` the first block of a dilated stage keeps the
previous stage's dilation, as torchvision's ``replace_stride_with_dilation`` does (stride 8:
``layer3`` dilations 1, 2, 2, ...; ``layer4`` 2, 4, 4): the backbone of torchvision's segmentation
networks (:mod:`jaxseg.models.torchvision_seg`). ``multi_grid`` (DeepLab-v3, Sec. 3.2) multiplies
the dilation of the blocks of ``layer4`` by ``multi_grid[j]``.

A stride-``s`` feature map of an ``H x W`` image is ``ceil(H/s) x ceil(W/s)`` (every strided layer
maps ``n`` to ``ceil(n / 2)``).

Parameter counts (backbone without ``fc``, torchvision's numbers minus the 2,049,000 parameters of
the 1000-way classifier): ResNet-18 11,176,512; ResNet-50 23,508,032; ResNet-101 42,500,160.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers

STAGE_SIZES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _add_shortcut(block, x, y, train: bool):
    """``relu(y + shortcut(x))`` of a residual block (He et al. 2016, Sec. 3.3): the identity, or
    with ``block.downsample`` the projection ``downsample_0`` (1x1 conv to
    ``planes * expansion`` channels at the block's stride) followed by ``downsample_1`` (BN),
    both created in ``block``'s compact ``__call__`` (torchvision's parameter names)."""
    identity = x
    if block.downsample:
        identity = layers.conv(
            block.planes * block.expansion, 1, stride=block.stride, dtype=block.dtype, name="downsample_0"
        )(x)
        identity = block.norm(train, name="downsample_1")(identity)
    return nn.relu(y + identity)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    norm: Any = None
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        y = layers.conv(self.planes, 3, stride=self.stride, dilation=self.dilation, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm(train, name="bn1")(y))
        y = layers.conv(self.planes, 3, dilation=self.dilation, dtype=self.dtype, name="conv2")(y)
        y = self.norm(train, name="bn2")(y)
        return _add_shortcut(self, x, y, train)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    stride_in_1x1: bool = False
    norm: Any = None
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        y = layers.conv(self.planes, 1, stride=s1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm(train, name="bn1")(y))
        y = layers.conv(self.planes, 3, stride=s3, dilation=self.dilation, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(self.norm(train, name="bn2")(y))
        y = layers.conv(self.planes * 4, 1, dtype=self.dtype, name="conv3")(y)
        y = self.norm(train, name="bn3")(y)
        return _add_shortcut(self, x, y, train)


class ResNet(nn.Module):
    """ResNet feature extractor.

    Attributes:
      depth: 18, 34, 50, 101 or 152 (ignored when ``stage_sizes`` is given).
      stage_sizes: blocks per stage, overriding ``depth`` (e.g. ``(1, 1, 1, 1)`` for tests).
      block: ``"bottleneck"`` or ``"basic"`` (only used with ``stage_sizes``).
      width: channel multiplier (1.0 = 64..512 planes).
      output_stride: 8, 16 or 32.
      stride_in_1x1: Caffe placement of the stride in bottleneck blocks.
      multi_grid: per-block dilation multipliers of ``layer4`` (cycled), or None.
      torchvision_dilation: the first block of a dilated stage keeps the previous stage's
        dilation (torchvision's ``replace_stride_with_dilation``) instead of the stage's own.
      bn_momentum, bn_epsilon, frozen_batchnorm: see :func:`jaxseg.models.layers.batch_norm`.
      dtype: compute dtype.

    ``__call__(x, train)`` returns a dict with ``stem`` (stride 4, after the max-pool) and
    ``layer1`` (stride 4) ... ``layer4`` features.
    """

    depth: int = 50
    stage_sizes: Sequence[int] | None = None
    block: str = "bottleneck"
    width: float = 1.0
    output_stride: int = 32
    stride_in_1x1: bool = False
    multi_grid: Sequence[int] | None = None
    torchvision_dilation: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_batchnorm: bool = False
    dtype: Any = jnp.float32

    def _layout(self):
        if self.stage_sizes is not None:
            if len(self.stage_sizes) != 4 or min(self.stage_sizes) < 1:
                raise ValueError(f"stage_sizes must be 4 positive ints, got {self.stage_sizes}")
            if self.block not in ("basic", "bottleneck"):
                raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
            return self.block, tuple(self.stage_sizes)
        if self.depth not in STAGE_SIZES:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {self.depth}")
        return STAGE_SIZES[self.depth]

    @nn.compact
    def __call__(self, x, train: bool):
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {self.output_stride}")
        block_kind, sizes = self._layout()
        norm = functools.partial(layers.model_batch_norm, self)
        x = x.astype(self.dtype)
        x = layers.conv(layers.scaled(64, self.width), 7, stride=2, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(norm(train, "bn1")(x))
        x = layers.max_pool(x, 3, 2, padding=1)
        feats = {"stem": x}
        strides = [1, 2, 2, 2]
        dilations = [1, 1, 1, 1]
        if self.output_stride <= 16:
            strides[3], dilations[3] = 1, 2
        if self.output_stride == 8:
            strides[2], dilations[2] = 1, 2
            dilations[3] = 4
        cls = Bottleneck if block_kind == "bottleneck" else BasicBlock
        inplanes = layers.scaled(64, self.width)
        for i, n in enumerate(sizes):
            planes = layers.scaled(64 * 2**i, self.width)
            for j in range(n):
                stride = strides[i] if j == 0 else 1
                dil = dilations[i]
                if j == 0 and self.torchvision_dilation:
                    dil = dilations[i - 1] if i else 1
                if i == 3 and self.multi_grid:
                    dil = dil * int(self.multi_grid[j % len(self.multi_grid)])
                kwargs = dict(stride_in_1x1=self.stride_in_1x1) if cls is Bottleneck else {}
                x = cls(
                    planes,
                    stride=stride,
                    dilation=dil,
                    downsample=(j == 0 and (stride != 1 or inplanes != planes * cls.expansion)),
                    norm=norm,
                    dtype=self.dtype,
                    name=f"layer{i + 1}_{j}",
                    **kwargs,
                )(x, train)
                inplanes = planes * cls.expansion
            feats[f"layer{i + 1}"] = x
        return feats

    @property
    def out_channels(self) -> int:
        kind, _ = self._layout()
        return layers.scaled(512, self.width) * (4 if kind == "bottleneck" else 1)

    @property
    def low_level_channels(self) -> int:
        kind, _ = self._layout()
        return layers.scaled(64, self.width) * (4 if kind == "bottleneck" else 1)


# The fields of a segmentation model that configure its ResNet backbone (those it has).
BACKBONE_FIELDS = ("depth", "stage_sizes", "block", "width", "output_stride", "stride_in_1x1",
                   "multi_grid", "bn_momentum", "bn_epsilon", "frozen_batchnorm", "dtype")


def backbone_of(model: nn.Module, **overrides) -> ResNet:
    """The :class:`ResNet` named ``backbone`` configured by those of ``model``'s fields that it
    has (:data:`BACKBONE_FIELDS`), then ``overrides``; for use inside ``model``'s compact
    ``__call__``."""
    kwargs = {f: getattr(model, f) for f in BACKBONE_FIELDS if hasattr(model, f)}
    kwargs.update(overrides)
    return ResNet(**kwargs, name="backbone")
