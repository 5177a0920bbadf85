"""Tests of jaxseg.models: registry, shapes for odd sizes, gradients, BatchNorm modes, bfloat16,
parameter counts against published figures, and the shared layers against NumPy references.

Cost control: big models are only traced (``jax.eval_shape``), never compiled; variables are made
from ``eval_shape`` structures with NumPy random values (compiling a model's ``init`` costs as much
as its forward pass on this CPU); one jitted train step per small model checks shapes, gradients
and BatchNorm updates together.
"""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models
from jaxseg.models import layers
from jaxseg.models.resnet import ResNet


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def shapes_of(module, image_shape):
    return jax.eval_shape(
        lambda x: module.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct(image_shape, jnp.float32),
    )


def random_variables(module, image_shape, seed=0):
    """Variables with the module's structure and random non-degenerate NumPy values: conv
    kernels ~ N(0, 1/fan_in), biases, BN affine parameters and statistics random (nothing zero, so
    that every parameter influences the output)."""
    rng = np.random.default_rng(seed)
    struct = shapes_of(module, image_shape)

    def fill(path, leaf):
        name = path[-1].key
        shape = leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        if name == "alpha":
            return rng.uniform(0.1, 0.4, shape).astype(np.float32)
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, struct)


# ----------------------------------------------------------------------------- registry


def test_available_lists_required_names():
    names = set(models.available())
    for required in [
        "deeplabv2_resnet101",
        "deeplabv3plus_resnet50",
        "deeplabv3plus_resnet101",
        "fcn8s_vgg16",
        "unet",
        "segnet",
        "enet",
        "unet_small",
        "deeplabv3plus_resnet18_small",
        "deeplabv2_resnet18_small",
    ]:
        assert required in names


def test_create_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown model"):
        models.create("deeplabv9", 3)
    with pytest.raises(ValueError, match="does not take options.*output_strid"):
        models.create("deeplabv3plus_resnet50", 3, output_strid=8)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("unet", 0)
    with pytest.raises(ValueError, match="dtype"):
        models.create("unet", 3, dtype="int8")
    m = models.create("unet_small", 3)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False),
                       jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
    m = models.create("deeplabv3plus_resnet18_small", 3, output_stride=32)
    with pytest.raises(ValueError, match="output_stride"):
        shapes_of(m, (1, 32, 32, 3))


def test_init_variables_structure_and_num_classes_types():
    m = models.create("unet_small", np.int64(3), depth=1)
    v = models.init_variables(m, 0, (1, 16, 16, 3))
    ref = shapes_of(m, (1, 16, 16, 3))
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(ref)
    assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(ref)))
    k = np.asarray(v["params"]["down0_conv0"]["kernel"])
    assert k.std() > 0 and np.all(np.asarray(v["batch_stats"]["down0_bn0"]["var"]) == 1)


def test_create_options_are_applied():
    m = models.create("deeplabv3plus_resnet50", 5, output_stride=8, dtype="bfloat16", aspp_rates=[1, 2, 3],
                      bn_momentum=0.99, frozen_batchnorm=True)
    assert m.output_stride == 8 and m.dtype == jnp.bfloat16 and m.aspp_rates == (1, 2, 3)
    assert m.bn_momentum == 0.99 and m.frozen_batchnorm
    assert "logits_stride" in models.options("unet")


# ----------------------------------------------------------------------------- parameter counts

# Published figures: torchvision's ResNet-50/101 have 25,557,032 / 44,549,160 parameters, of which
# the 1000-way fc layer is 2048 * 1000 + 1000 = 2,049,000 (He et al. 2016; torchvision model docs).
# Our backbones must match exactly.
@pytest.mark.parametrize("depth,expected", [(50, 25_557_032 - 2_049_000), (101, 44_549_160 - 2_049_000),
                                            (18, 11_689_512 - 513_000)])
def test_resnet_backbone_parameter_count(depth, expected):
    assert count(shapes_of(ResNet(depth=depth), (1, 64, 64, 3))["params"]) == expected


def _deeplabv3plus_head_count(c_in, c_low, classes, aspp=256, low=48, dec=256):
    bn = 2  # scale and bias per channel
    n = aspp * c_in + aspp * bn  # 1x1 branch
    n += 3 * (9 * c_in * aspp + aspp * bn)  # atrous branches
    n += aspp * c_in + aspp * bn  # image pooling
    n += 5 * aspp * aspp + aspp * bn  # projection
    n += c_low * low + low * bn  # low-level reduction
    n += 9 * (aspp + low) * dec + dec * bn + 9 * dec * dec + dec * bn  # decoder convs
    n += dec * classes + classes  # classifier
    return n


@pytest.mark.parametrize(
    "name,classes,expected,rel,source",
    [
        # ENet paper (Paszke et al. 2016), Table 3: 0.37M parameters.
        ("enet", 19, 0.37e6, 0.02, "ENet paper Table 3"),
        # SegNet paper (Badrinarayanan et al. 2017), Table 6: 29.5M; 29.46M is the usual exact figure.
        ("segnet", 12, 29.46e6, 0.02, "SegNet paper Table 6"),
        # U-Net 64..1024 as in milesial/Pytorch-UNet (31,037,698 with 3 inputs, 2 classes).
        ("unet", 2, 31_037_698, 0.0, "milesial/Pytorch-UNet"),
        # FCN paper (Long et al. 2015), Table 1: FCN-VGG16 134M parameters.
        ("fcn8s_vgg16", 21, 134e6, 0.02, "FCN paper Table 1"),
        # DeepLab-v2 ResNet-101: backbone 42,500,160 + four 3x3 2048->21 ASPP-L heads with bias.
        ("deeplabv2_resnet101", 21, 42_500_160 + 4 * (9 * 2048 * 21 + 21), 0.0, "ResNet-101 + ASPP-L"),
        ("deeplabv3plus_resnet101", 21, 42_500_160 + _deeplabv3plus_head_count(2048, 256, 21), 0.0,
         "ResNet-101 + DeepLab-v3+ head (paper Sec. 3)"),
        ("deeplabv3plus_resnet50", 21, 23_508_032 + _deeplabv3plus_head_count(2048, 256, 21), 0.0,
         "ResNet-50 + DeepLab-v3+ head"),
    ],
)
def test_parameter_counts(name, classes, expected, rel, source):
    n = count(shapes_of(models.create(name, classes), (1, 64, 64, 3))["params"])
    assert abs(n - expected) <= rel * expected, f"{name}: {n} parameters vs {expected} ({source})"


def test_batchnorm_statistics_are_not_parameters():
    v = shapes_of(models.create("deeplabv2_resnet101", 21), (1, 64, 64, 3))
    # 104 BatchNorm layers in ResNet-101, each with a mean and a variance.
    stats = jax.tree_util.tree_leaves(v["batch_stats"])
    assert len(stats) == 2 * 104


# ----------------------------------------------------------------------------- shapes (traced)

ALL = models.available()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [(65, 47)])
def test_output_shape_odd_sizes_all_models(name, size):
    m = models.create(name, 7)
    out = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x, train=False)[0],
                         jax.ShapeDtypeStruct((2, *size, 3), jnp.float32))
    assert out.shape == (2, *size, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize("size", [(33, 33), (64, 64), (97, 51), (17, 130)])
@pytest.mark.parametrize("name,stride", [("deeplabv2_resnet18_small", 8), ("deeplabv3plus_resnet18_small", 4),
                                         ("fcn8s_vgg16_small", 8)])
def test_logits_stride_shapes(name, stride, size):
    m = models.create(name, 3, logits_stride=True)
    assert m.feature_stride == stride
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    out = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x, train=False)[0], x)
    labels = models.downsample_labels(jnp.zeros((2, *size), jnp.int32), stride)
    assert out.shape == (2, -(-size[0] // stride), -(-size[1] // stride), 3)
    assert out.shape[:3] == labels.shape


@pytest.mark.parametrize("os_", [8, 16])
def test_deeplabv3plus_output_stride_changes_feature_size(os_):
    m = models.create("deeplabv3plus_resnet18_small", 3, output_stride=os_)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: m.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"]),
        shapes_of(m, (1, 64, 64, 3)), x)
    inter = state["intermediates"]["backbone"]["__call__"][0]
    assert inter["layer4"].shape[1:3] == (64 // os_, 64 // os_)
    assert inter["layer1"].shape[1:3] == (16, 16)


# ----------------------------------------------------------------------------- compiled checks

SMALL = ["unet_small", "deeplabv3plus_resnet18_small", "deeplabv2_resnet18_small", "fcn8s_vgg16_small",
         "segnet_small", "enet_small"]

# Compile with XLA's cheap backend settings: these tests check structure, not speed.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST)(*args)


# Reduced depth where the small variant repeats identical blocks (compile time grows with depth):
# every block type of each family is still present.
@pytest.mark.parametrize(
    "name,opts",
    [
        ("unet_small", {"depth": 2}),
        ("deeplabv3plus_resnet18_small", {"stage_sizes": (1, 1, 1, 1)}),
        ("deeplabv2_resnet18_small", {"stage_sizes": (1, 1, 1, 1), "block": "bottleneck", "width": 0.125}),
        ("fcn8s_vgg16_small", {"width": 1 / 16, "fc_channels": 32}),
        ("segnet_small", {"width": 1 / 16}),
        ("enet_small", {"width": 0.25}),
    ],
)
def test_train_step_shapes_gradients_and_batch_stats(name, opts):
    """One jitted value_and_grad on an odd-sized batch: logits shape, finite values, a non-zero
    gradient for every parameter leaf, and updated BatchNorm statistics."""
    h, w, classes = 35, 29, 4
    m = models.create(name, classes, **opts)
    v = random_variables(m, (1, h, w, 3))
    stats0 = v.get("batch_stats", {})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
    y = rng.integers(0, classes, (2, h, w)).astype(np.int32)

    def step(params, stats):
        def loss(p):
            logits, upd = m.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(3)})
            ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1).mean()
            return ce, (logits, upd.get("batch_stats", {}))

        return jax.value_and_grad(loss, has_aux=True)(params)

    # NumPy from here on: eager jnp ops would compile once per leaf shape.
    (l, (logits, new_stats)), grads = jax.device_get(fast_jit(step, v["params"], stats0))
    assert logits.shape == (2, h, w, classes) and logits.dtype == np.float32
    assert np.isfinite(l) and np.all(np.isfinite(logits))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(p) for p, g in flat if not (np.all(np.isfinite(g)) and np.any(g != 0))]
    assert not dead, f"{name}: no gradient reaches {dead}"
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), stats0, new_stats)
    assert all(jax.tree_util.tree_leaves(changed)), f"{name}: some BatchNorm statistics were not updated"


@pytest.fixture(scope="module")
def v2_small():
    m = models.create("deeplabv2_resnet18_small", 3, frozen_batchnorm=True)
    return m, random_variables(m, (1, 32, 32, 3), seed=4)


def test_frozen_batchnorm_keeps_statistics_and_matches_eval(v2_small):
    m, v = v2_small
    x = np.random.default_rng(0).standard_normal((2, 41, 37, 3)).astype(np.float32)
    (train_out, upd), eval_out = fast_jit(
        lambda v, x: (m.apply(v, x, train=True, mutable=["batch_stats"]), m.apply(v, x, train=False)), v, x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, upd["batch_stats"], v["batch_stats"])
    np.testing.assert_allclose(train_out, eval_out, rtol=1e-6, atol=1e-6)
    assert train_out.shape == (2, 41, 37, 3)


def test_upsampled_logits_are_bilinear_resize_of_strided_logits(v2_small):
    m, v = v2_small
    ms = m.clone(logits_stride=True)
    x = np.random.default_rng(5).standard_normal((1, 41, 37, 3)).astype(np.float32)
    full, strided = jax.device_get(
        fast_jit(lambda v, x: (m.apply(v, x, train=False), ms.apply(v, x, train=False)), v, x))
    assert strided.shape == (1, 6, 5, 3)
    # Independent float64 bilinear interpolation (half-pixel centres, edge clamping).
    def interp_matrix(n_out, n_in):
        a = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            lo = int(np.floor(src))
            hi = min(lo + 1, n_in - 1)
            a[i, lo] += 1 - (src - lo)
            a[i, hi] += src - lo
        return a

    ref = np.einsum("ih,jw,bhwc->bijc", interp_matrix(41, 6), interp_matrix(37, 5), strided.astype(np.float64))
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-5)


def _np_dilated_conv3x3(x, kernel, bias, rate):
    """float64 'same' 3x3 convolution with dilation ``rate`` and zero padding, by taps."""
    b, h, w, _ = x.shape
    out = np.zeros((b, h, w, kernel.shape[-1])) + bias
    xp = np.pad(x.astype(np.float64), ((0, 0), (rate, rate), (rate, rate), (0, 0)))
    for ky in range(3):
        for kx in range(3):
            out += xp[:, ky * rate:ky * rate + h, kx * rate:kx * rate + w] @ kernel[ky, kx].astype(np.float64)
    return out


def test_deeplabv2_aspp_sums_four_dilated_branches(v2_small):
    """ASPP-L: logits at stride 8 = sum over rates 6, 12, 18, 24 of 3x3 dilated convs of layer4."""
    m, v = v2_small
    ms = m.clone(logits_stride=True)
    x = np.random.default_rng(9).standard_normal((1, 105, 97, 3)).astype(np.float32)
    logits, state = jax.device_get(fast_jit(
        lambda v, x: ms.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"]), v, x))
    feats = state["intermediates"]["backbone"]["__call__"][0]["layer4"]
    assert feats.shape[1:3] == (14, 13)
    ref = sum(_np_dilated_conv3x3(feats, v["params"][f"aspp_{i}"]["kernel"], v["params"][f"aspp_{i}"]["bias"], r)
              for i, r in enumerate((6, 12, 18, 24)))
    assert set(k for k in v["params"] if k.startswith("aspp")) == {"aspp_0", "aspp_1", "aspp_2", "aspp_3"}
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_float32_params():
    m32 = models.create("unet_small", 3, depth=2)
    m16 = models.create("unet_small", 3, depth=2, dtype="bfloat16")
    v = random_variables(m32, (1, 32, 32, 3), seed=7)
    x = np.random.default_rng(8).standard_normal((2, 32, 32, 3)).astype(np.float32)
    (o32, s32), (o16, s16) = jax.device_get(
        fast_jit(lambda v, x: (m32.apply(v, x, train=True, mutable=["batch_stats"]),
                               m16.apply(v, x, train=True, mutable=["batch_stats"])), v, x))
    assert o16.dtype == np.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(s16))
    # Parameter structure identical; bf16 compute changes the result by ~bf16 rounding only.
    struct16 = jax.eval_shape(lambda x: m16.init(jax.random.key(0), x, train=False), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(struct16["params"]))
    err = float(np.max(np.abs(o16 - o32)) / np.max(np.abs(o32)))
    assert 0 < err < 0.1, err
    hlo = jax.jit(lambda v, x: m16.apply(v, x, train=False)).lower(v, x).as_text()
    assert "bf16" in hlo and "convolution" in hlo


def test_sharded_batchnorm_uses_global_batch_statistics():
    """Under jit with the batch sharded over 2 (forced host) devices, BatchNorm statistics equal
    those of the whole batch (no axis_name needed)."""
    code = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ["JAX_PLATFORMS"] = "cpu"
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        import flax.linen as nn
        from jaxseg.models import layers

        class M(nn.Module):
            @nn.compact
            def __call__(self, x, train):
                return layers.batch_norm(train, momentum=0.0)(x)

        assert jax.device_count() == 2
        mesh = jax.make_mesh((2,), ("data",))
        x = np.random.default_rng(0).normal(size=(4, 5, 3, 2)).astype(np.float32)
        x[:2] += 3.0  # the two shards have very different statistics
        m = M()
        v = m.init(jax.random.key(0), x[:1], train=False)
        f = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        y, upd = f(v, xs)
        mean = x.reshape(-1, 2).mean(0)
        np.testing.assert_allclose(upd["batch_stats"]["BatchNorm_0"]["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y, (x - mean) / np.sqrt(x.reshape(-1, 2).var(0) + 1e-5), rtol=1e-4, atol=1e-4)
        print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


# ----------------------------------------------------------------------------- layers vs NumPy


def _np_pool_indices(x):
    b, h, w, c = x.shape
    H, W = -(-h // 2), -(-w // 2)
    pooled = np.zeros((b, H, W, c), x.dtype)
    idx = np.zeros((b, H, W, c), np.int32)
    for n in range(b):
        for i in range(H):
            for j in range(W):
                for ch in range(c):
                    best, arg = -np.inf, 0
                    for k, (di, dj) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                        ii, jj = 2 * i + di, 2 * j + dj
                        if ii < h and jj < w and x[n, ii, jj, ch] > best:
                            best, arg = x[n, ii, jj, ch], k
                    pooled[n, i, j, ch], idx[n, i, j, ch] = best, arg
    return pooled, idx


@pytest.mark.parametrize("h,w", [(4, 6), (5, 7), (1, 3)])
def test_max_pool_with_indices_and_unpool_match_bruteforce(h, w):
    x = np.random.default_rng(h * w).standard_normal((2, h, w, 3)).astype(np.float32)
    pooled, idx, size = layers.max_pool_with_indices(jnp.asarray(x))
    ref_p, ref_i = _np_pool_indices(x)
    np.testing.assert_array_equal(pooled, ref_p)
    np.testing.assert_array_equal(idx, ref_i)
    assert size == (h, w)
    vals = np.random.default_rng(1).standard_normal(ref_p.shape).astype(np.float32)
    up = np.asarray(layers.max_unpool(jnp.asarray(vals), idx, size))
    ref = np.zeros_like(x)
    offs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for n, i, j, ch in np.ndindex(*vals.shape):
        di, dj = offs[ref_i[n, i, j, ch]]
        ref[n, 2 * i + di, 2 * j + dj, ch] = vals[n, i, j, ch]
    np.testing.assert_array_equal(up, ref)
    # Unpooling the pooled values puts every window maximum back in place.
    back = np.asarray(layers.max_unpool(pooled, idx, size))
    assert np.all((back == x) | (back == 0))


@pytest.mark.parametrize("k,s,p,op", [(4, 2, 1, 0), (3, 2, 1, 1), (2, 2, 0, 0)])
def test_conv_transpose_matches_scatter_definition(k, s, p, op):
    rng = np.random.default_rng(k + s + p)
    x = rng.standard_normal((1, 3, 4, 2)).astype(np.float32)
    mod = layers.ConvTranspose(3, k, s, padding=p, output_padding=op)
    v = mod.init(jax.random.key(0), x)
    kern = np.asarray(v["params"]["kernel"], np.float64)  # [kh, kw, in, out]
    y = np.asarray(mod.apply(v, x))
    H = (3 - 1) * s - 2 * p + k + op
    W = (4 - 1) * s - 2 * p + k + op
    full = np.zeros((1, (3 - 1) * s + k + op, (4 - 1) * s + k + op, 3))
    for i in range(3):
        for j in range(4):
            full[0, i * s:i * s + k, j * s:j * s + k] += np.einsum("c,hwco->hwo", x[0, i, j], kern)
    ref = full[:, p:p + H, p:p + W]
    assert y.shape == (1, H, W, 3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_bilinear_deconvolution_upsamples_constants_and_ramps():
    kern = layers.bilinear_kernel(4, 1)
    mod = layers.ConvTranspose(1, 4, 2, padding=1)
    x = np.arange(5, dtype=np.float32)[None, None, :, None] * np.ones((1, 5, 1, 1), np.float32)
    y = np.asarray(mod.apply({"params": {"kernel": kern}}, x))[0, 1:-1, 1:-1, 0]
    # Interior of a bilinear x2 upsampling of a ramp 0..4 along W: half-pixel-centre positions.
    expected = (np.arange(1, 9) - 0.5) / 2.0
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), atol=1e-6)


@pytest.mark.parametrize("h", [5, 6, 7])
def test_max_pool_ceil_mode_and_padding(h):
    x = np.random.default_rng(h).standard_normal((1, h, h, 1)).astype(np.float32)
    y = np.asarray(layers.max_pool(jnp.asarray(x), 2, 2, ceil_mode=True))
    assert y.shape[1] == -(-h // 2)
    for i in range(y.shape[1]):
        np.testing.assert_allclose(y[0, i, 0, 0], x[0, 2 * i:2 * i + 2, 0:2, 0].max())
    y = np.asarray(layers.max_pool(jnp.asarray(x), 3, 2, padding=1))
    assert y.shape[1] == (h + 2 - 3) // 2 + 1
    np.testing.assert_allclose(y[0, 0, 0, 0], x[0, 0:2, 0:2, 0].max())


def test_downsample_labels():
    labels = jnp.arange(2 * 9 * 10).reshape(2, 9, 10)
    out = models.downsample_labels(labels, 4)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, np.asarray(labels)[:, ::4, ::4])
    with pytest.raises(ValueError, match="labels"):
        models.downsample_labels(jnp.zeros((9, 10), jnp.int32), 4)
