"""Building blocks shared by the jaxseg models.

Conventions (all models):

* Channels-last arrays, ``[B, H, W, C]``.
* Parameters are always stored in ``param_dtype`` (float32); ``dtype`` is the *compute* dtype
  (e.g. ``jnp.bfloat16``), used for convolutions and activations. Batch-norm statistics are
  reduced in float32 whatever the compute dtype (``force_float32_reductions``), and the models
  return their logits as float32.
* Convolutions use PyTorch's explicit symmetric padding ``p = dilation * (k - 1) // 2`` rather
  than XLA's ``'SAME'``: with stride 2 and an even input, ``'SAME'`` pads asymmetrically
  (``(2, 3)`` for a 7x7 kernel) while PyTorch/Caffe pad ``(3, 3)``, so imported weights would see
  shifted inputs. With symmetric padding a stride-``s`` convolution maps ``H`` to
  ``floor((H + 2p - k) / s) + 1`` exactly as PyTorch does (``ceil(H / s)`` for the usual
  ``k = 2p + 1`` kernels).

Batch normalisation
-------------------
:func:`batch_norm` returns a ``flax.linen.BatchNorm`` whose statistics live in the
``batch_stats`` collection. ``momentum`` follows Flax's convention
(``running = momentum * running + (1 - momentum) * batch``; PyTorch's ``momentum=0.1`` is Flax's
``0.9``). With ``frozen=True`` the layer always normalises with the running statistics and never
updates them, also when ``train=True`` (DeepLab-v2 was fine-tuned this way, Chen et al. 2017,
Sec. 4, because its batch of 10 321x321 crops is too small for reliable statistics).

Cross-device statistics: the layers are built without ``axis_name``. Under ``jax.jit`` with the
batch sharded along a mesh axis (``NamedSharding(mesh, P('data'))``), the batch mean and variance
are ordinary ``jnp.mean`` reductions over the *global* (logical) batch axis, and XLA's SPMD
partitioner inserts the all-reduce itself: every device normalises with the statistics of the
whole global batch ("synchronised" batch norm) and the result does not depend on the number of
devices. Do not use ``pmap``/``axis_name`` with these models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# He (Kaiming) normal initialisation with fan_out, as torchvision uses for ResNet/VGG convs.
he_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
he_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def batch_norm(
    train: bool,
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    frozen: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    scale_init=nn.initializers.ones,
) -> nn.BatchNorm:
    """A BatchNorm layer (see the module docstring for momentum, freezing and multi-device use).

    ``use_running_average = (not train) or frozen``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"bn_momentum must lie in [0, 1] (Flax convention), got {momentum}")
    if epsilon <= 0:
        raise ValueError(f"bn_epsilon must be positive, got {epsilon}")
    return nn.BatchNorm(
        use_running_average=(not train) or frozen,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=scale_init,
        name=name,
    )


def conv(
    features: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    dilation: int = 1,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    kernel_init=he_fan_out,
    bias_init=nn.initializers.zeros,
    padding: Sequence[tuple[int, int]] | None = None,
) -> nn.Conv:
    """A ``nn.Conv`` with PyTorch-style symmetric padding ``dilation * (k - 1) // 2`` per side."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    if padding is None:
        padding = [(dilation * (kh - 1) // 2,) * 2, (dilation * (kw - 1) // 2,) * 2]
    return nn.Conv(
        features,
        (kh, kw),
        strides=(stride, stride),
        padding=padding,
        kernel_dilation=(dilation, dilation),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        bias_init=bias_init,
        name=name,
    )


def model_batch_norm(model: nn.Module, train: bool, name: str | None = None) -> nn.BatchNorm:
    """:func:`batch_norm` configured by a model's ``bn_momentum``, ``bn_epsilon``,
    ``frozen_batchnorm`` and ``dtype`` fields (every jaxseg model with BatchNorm has them).

    Like any Flax layer built inside a compact ``__call__``, the layer belongs to the module whose
    ``__call__`` is running (so ``name`` is its parameter path there), not to ``model``.
    """
    return batch_norm(
        train,
        momentum=model.bn_momentum,
        epsilon=model.bn_epsilon,
        frozen=model.frozen_batchnorm,
        dtype=model.dtype,
        name=name,
    )


def conv_bn_relu(
    model: nn.Module,
    x,
    train: bool,
    features: int,
    kernel: int | tuple[int, int],
    *,
    name: str,
    bn_name: str,
    dilation: int = 1,
    use_bias: bool = False,
):
    """``relu(BatchNorm(conv(x)))`` with :func:`conv` named ``name`` and :func:`model_batch_norm`
    named ``bn_name`` (both in ``model.dtype``), for use inside ``model``'s compact ``__call__``."""
    x = conv(features, kernel, dilation=dilation, use_bias=use_bias, dtype=model.dtype, name=name)(x)
    return nn.relu(model_batch_norm(model, train, name=bn_name)(x))


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """The fixed bilinear-interpolation kernel FCN uses to initialise its deconvolutions.

    Returns ``[size, size, channels, channels]`` (PyTorch ConvTranspose orientation, see
    :class:`ConvTranspose`) with ``K[i, j, c, c] = (1 - |i - center| / f) (1 - |j - center| / f)``,
    ``f = ceil(size / 2)``, ``center = f - 1`` (odd size) or ``f - 0.5`` (even size), and zero
    between different channels (Long et al. 2015, Sec. 3.3).
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.arange(size, dtype=np.float64)
    filt1d = 1.0 - np.abs(og - center) / factor
    filt = np.outer(filt1d, filt1d)
    kernel = np.zeros((size, size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


class ConvTranspose(nn.Module):
    """Transposed convolution with exactly PyTorch's ``nn.ConvTranspose2d`` semantics.

    Output size ``(H - 1) * stride - 2 * padding + kernel + output_padding``. The kernel is stored
    as ``[kh, kw, in, out]``, i.e. PyTorch's ``weight[in, out, kh, kw]`` transposed by
    ``(2, 3, 0, 1)`` with no spatial flip, so that imported weights need no further care. It is
    computed as a stride-1 convolution of the ``stride``-dilated input with the spatially flipped
    kernel and padding ``dilation * (k - 1) - padding`` (plus ``output_padding`` at the end).
    """

    features: int
    kernel_size: int
    stride: int
    padding: int = 0
    output_padding: int = 0
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Any = he_fan_in

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32
        )
        lo = k - 1 - self.padding
        hi = k - 1 - self.padding + self.output_padding
        if lo < 0:
            raise ValueError(f"ConvTranspose padding {self.padding} exceeds kernel_size - 1 = {k - 1}")
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            jnp.flip(kernel, (0, 1)).astype(self.dtype),
            window_strides=(1, 1),
            padding=[(lo, hi), (lo, hi)],
            lhs_dilation=(self.stride, self.stride),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class PReLU(nn.Module):
    """Per-channel parametric ReLU, ``max(0, x) + a_c min(0, x)`` with ``a_c`` initialised to 0.25
    (He et al. 2015; ENet uses one slope per channel)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        alpha = self.param(
            "alpha", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32
        )
        return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def max_pool(x, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    """PyTorch ``max_pool2d`` (padding with -inf; optional ``ceil_mode``)."""
    pads = []
    for size in x.shape[1:3]:
        lo = hi = padding
        if ceil_mode:
            out = -(-(size + 2 * padding - window) // stride) + 1
            # PyTorch drops a last window that would start inside the right padding only.
            if (out - 1) * stride >= size + padding:
                out -= 1
            hi = max((out - 1) * stride + window - size - padding, padding)
        pads.append((lo, hi))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


def max_pool_with_indices(x):
    """2x2 stride-2 max pooling that also returns, per output cell, which of its 4 inputs won.

    Odd sizes are padded with ``-inf`` at the bottom/right (ceil mode), so ``H -> ceil(H/2)``.
    Returns ``(pooled [B, ceil(H/2), ceil(W/2), C], indices int32 same shape in [0, 4),
    (H, W))``; ties go to the first position in row-major window order. Used for SegNet's and
    ENet's max-unpooling (Badrinarayanan et al. 2017, Sec. 3; Paszke et al. 2016, Sec. 3).
    """
    b, h, w, c = x.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    h2, w2 = (h + ph) // 2, (w + pw) // 2
    windows = x.reshape(b, h2, 2, w2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h2, w2, c, 4)
    indices = jnp.argmax(windows, axis=-1).astype(jnp.int32)
    pooled = jnp.max(windows, axis=-1)
    return pooled, indices, (h, w)


def max_unpool(x, indices, size: tuple[int, int]):
    """Inverse of :func:`max_pool_with_indices`: each value goes back to the position its window's
    maximum came from, the other three positions of the window are zero; the result is cropped to
    ``size`` (the pre-pooling spatial size)."""
    b, h2, w2, c = x.shape
    if indices.shape != x.shape:
        raise ValueError(f"max_unpool: indices shape {indices.shape} != values shape {x.shape}")
    onehot = jax.nn.one_hot(indices, 4, dtype=x.dtype)  # [B, h2, w2, C, 4]
    out = (onehot * x[..., None]).reshape(b, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    out = out.reshape(b, 2 * h2, 2 * w2, c)
    return out[:, : size[0], : size[1], :]


def resize_bilinear(x, size: tuple[int, int]):
    """Bilinear resize of ``[B, h, w, C]`` to ``[B, size[0], size[1], C]`` with half-pixel centres
    (PyTorch's ``align_corners=False``). No-op when the size already matches."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], size[0], size[1], x.shape[3]), "bilinear", antialias=False)


def check_images(images, name: str):
    """Raise a clear error unless ``images`` is a floating ``[B, H, W, 3]`` array with ``H, W >= 1``
    (``B = 0`` is allowed): a ``TypeError`` for something that is not an array or a dtype that is
    not floating, a ``ValueError`` for the shape (the project's error contract)."""
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(f"{name}: images must be an array [B, H, W, 3] (jax or NumPy), got "
                        f"{type(images).__name__}: convert it with jnp.asarray first")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: images must be [B, H, W, 3], got shape {images.shape}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"{name}: images must have H, W >= 1, got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"{name}: images must be floating point (normalised), got dtype {images.dtype}"
        )


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


def finish_logits(logits, image_size, logits_stride: bool):
    """Cast logits to float32 and, unless ``logits_stride``, upsample them bilinearly to the image
    size."""
    logits = logits.astype(jnp.float32)
    if logits_stride:
        return logits
    return resize_bilinear(logits, image_size)


__all__ = [
    "batch_norm",
    "model_batch_norm",
    "conv",
    "conv_bn_relu",
    "ConvTranspose",
    "PReLU",
    "bilinear_kernel",
    "max_pool",
    "max_pool_with_indices",
    "max_unpool",
    "resize_bilinear",
    "check_images",
    "scaled",
    "finish_logits",
    "he_fan_out",
    "he_fan_in",
]
