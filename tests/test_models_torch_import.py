"""PyTorch weight import: torchvision-named ResNets and VGG-16 written here in PyTorch (torchvision
itself is not needed), random weights and statistics, imported into the Flax models and compared
in eval mode to 1e-4; file formats (.pth, .safetensors, wrappers); Caffe key renaming."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn

from jaxseg import models  # noqa: E402
from jaxseg.models import layers  # noqa: E402
from jaxseg.models.resnet import ResNet  # noqa: E402
from jaxseg.models.torch_import import caffe_resnet_key_map, import_torch_state_dict, load_state_dict  # noqa: E402

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ----------------------------------------------------------------------------- torchvision-style nets


class TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, dilation, downsample, stride_in_1x1):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride=s3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class TBasic(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, dilation, downsample, stride_in_1x1):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class TResNet(tnn.Module):
    """torchvision.models.ResNet's layout and names; DeepLab dilation (whole stage dilated)."""

    def __init__(self, block, sizes, base=64, output_stride=32, stride_in_1x1=False, multi_grid=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(base)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        strides, dils = [1, 2, 2, 2], [1, 1, 1, 1]
        if output_stride <= 16:
            strides[3], dils[3] = 1, 2
        if output_stride == 8:
            strides[2], dils[2], dils[3] = 1, 2, 4
        inplanes = base
        for i, n in enumerate(sizes):
            planes = base * 2**i
            blocks = []
            for j in range(n):
                stride = strides[i] if j == 0 else 1
                ds = None
                if j == 0 and (stride != 1 or inplanes != planes * block.expansion):
                    ds = tnn.Sequential(tnn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                        tnn.BatchNorm2d(planes * block.expansion))
                dil = dils[i] * (multi_grid[j % len(multi_grid)] if (i == 3 and multi_grid) else 1)
                blocks.append(block(inplanes, planes, stride, dil, ds, stride_in_1x1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(inplanes, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (name.endswith("weight") and t.ndim == 1):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim >= 2:
                fan_in = math.prod(t.shape[1:])
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan_in))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
    return module.eval()


def flax_structure(module, shape):
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct(shape, jnp.float32))


def run_flax(module, variables, x, **kw):
    fn = lambda v, x: module.apply(v, x, train=False, **kw)  # noqa: E731
    return jax.device_get(jax.jit(fn).lower(variables, x).compile(FAST)(variables, x))


CONFIGS = [
    # (block, sizes, output stride, stride_in_1x1, multi_grid)
    ("bottleneck", (2, 1, 1, 2), 32, False, None),
    ("bottleneck", (1, 1, 2, 1), 8, True, None),
    ("basic", (1, 2, 1, 3), 16, False, (1, 2, 4)),
]


@pytest.mark.parametrize("block,sizes,os_,in1x1,mg", CONFIGS)
def test_resnet_import_matches_pytorch(block, sizes, os_, in1x1, mg):
    base = 8
    tcls = TBottleneck if block == "bottleneck" else TBasic
    tmodel = randomize(TResNet(tcls, sizes, base, os_, in1x1, mg), seed=len(sizes) + os_)
    x = np.random.default_rng(0).standard_normal((2, 37, 45, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    fmodel = ResNet(stage_sizes=sizes, block=block, width=base / 64, output_stride=os_, stride_in_1x1=in1x1,
                    multi_grid=mg)
    variables, report = import_torch_state_dict(
        flax_structure(fmodel, (1, 37, 45, 3)), tmodel.state_dict(), return_report=True)
    assert report["missing"] == [] and report["unused"] == ["fc.weight", "fc.bias"]
    out = run_flax(fmodel, variables, x)["layer4"]
    assert out.shape == ref.shape == (2, -(-37 // os_), -(-45 // os_), base * 8 * (4 if block == "bottleneck" else 1))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_stride_placement_matters():
    """Same weights, stride in the 1x1 vs the 3x3 convolution: different outputs (so the option
    is not a no-op), both equal to their PyTorch counterparts (tested above)."""
    tmodel = randomize(TResNet(TBottleneck, (1, 1, 1, 1), 8), seed=3)
    x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
    outs = []
    for in1x1 in (False, True):
        fm = ResNet(stage_sizes=(1, 1, 1, 1), width=0.125, stride_in_1x1=in1x1)
        v = import_torch_state_dict(flax_structure(fm, (1, 32, 32, 3)), tmodel.state_dict())
        outs.append(run_flax(fm, v, x)["layer4"])
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-2


@pytest.fixture(scope="module")
def small_resnet():
    tmodel = randomize(TResNet(TBottleneck, (1, 1, 2, 1), 8), seed=11)
    sd = {k: v.numpy().copy() for k, v in tmodel.state_dict().items()}
    fm = ResNet(stage_sizes=(1, 1, 2, 1), width=0.125)
    return tmodel, sd, fm, flax_structure(fm, (1, 32, 32, 3))


def _tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(p))


def test_file_formats_round_trip(small_resnet, tmp_path):
    tmodel, sd, fm, struct = small_resnet
    direct = import_torch_state_dict(struct, sd)
    # .pth written by torch, wrapped as a training checkpoint saved from DataParallel.
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tmodel.state_dict().items()}, "epoch": 3}, pth)
    loaded = load_state_dict(pth)
    assert set(loaded) == set(sd)
    _tree_equal(import_torch_state_dict(struct, str(pth)), direct)
    # .safetensors written without torch.
    from safetensors.numpy import save_file

    st = tmp_path / "w.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(st))
    _tree_equal(import_torch_state_dict(struct, st), direct)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown weight file type"):
        load_state_dict(tmp_path / "w.txt")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "absent.safetensors")


def test_import_errors_name_the_problem(small_resnet):
    _, sd, _, struct = small_resnet
    bad = dict(sd)
    bad["layer1.0.conv2.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv2\.weight.*does not match"):
        import_torch_state_dict(struct, bad)
    partial = {k: v for k, v in sd.items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match="no value.*layer4_0"):
        import_torch_state_dict(struct, partial)
    _, report = import_torch_state_dict(struct, partial, strict=False, return_report=True)
    assert any("layer4_0" in m for m in report["missing"])
    extra = dict(sd, **{"layer9.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="unused keys.*layer9"):
        import_torch_state_dict(struct, extra)


def _to_caffe(sd, s=2.5):
    """torchvision -> Caffe names (written independently of the library's inverse map), with Caffe
    BatchNorm blobs (mean*s, var*s, s) and Scale blobs (gamma, beta)."""
    out = {}
    letters = "abcdefghijklmnopqrstuvwxyz"
    for key, v in sd.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if parts[0] == "fc":
            out[f"fc1000.{ {'weight': 0, 'bias': 1}[parts[1]] }"] = v
            continue
        if parts[0] in ("conv1", "bn1"):
            conv, bn, scale = "conv1", "bn_conv1", "scale_conv1"
            mod = "conv" if parts[0] == "conv1" else "bn"
        else:
            stage = int(parts[0][5:]) + 1
            block = int(parts[1])
            name = letters[block] if stage != 4 or block == 0 else f"b{block}"
            if parts[2] == "downsample":
                branch = "1"
                mod = "conv" if parts[3] == "0" else "bn"
            else:
                branch = "2" + "abc"[int(parts[2][-1]) - 1]
                mod = "conv" if parts[2].startswith("conv") else "bn"
            conv, bn, scale = (f"res{stage}{name}_branch{branch}", f"bn{stage}{name}_branch{branch}",
                               f"scale{stage}{name}_branch{branch}")
        leaf = parts[-1]
        if mod == "conv":
            out[f"{conv}.0"] = v
        elif leaf == "running_mean":
            out[f"{bn}.0"] = v * s
            out[f"{bn}.2"] = np.array([s], np.float32)
        elif leaf == "running_var":
            out[f"{bn}.1"] = v * s
        else:
            out[f"{scale}.{ {'weight': 0, 'bias': 1}[leaf] }"] = v
    return out


def test_caffe_keys_import_like_torchvision_keys(small_resnet):
    _, sd, _, struct = small_resnet
    caffe = _to_caffe(sd)
    assert "res4b1_branch2a.0" in caffe and "scale2a_branch1.0" in caffe and "bn_conv1.2" in caffe
    via_caffe = import_torch_state_dict(struct, caffe, key_map="caffe_resnet")
    direct = import_torch_state_dict(struct, sd)
    la = jax.tree_util.tree_leaves(via_caffe)
    lb = jax.tree_util.tree_leaves(direct)
    for a, b in zip(la, lb):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    names = caffe_resnet_key_map({"res4b22_branch2c.weight": 0, "bn5c_branch2b.running_var": 0,
                                  "res3a_branch1.weight": 0})
    assert set(names) == {"layer3.22.conv3.weight", "layer4.2.bn2.running_var", "layer2.0.downsample.0.weight"}


def test_import_into_deeplab_backbone():
    tmodel = randomize(TResNet(TBasic, (2, 2, 2, 2), 16), seed=5)
    m = models.create("deeplabv2_resnet18_small", 21)
    struct = flax_structure(m, (1, 33, 33, 3))
    v, report = import_torch_state_dict(struct, tmodel.state_dict(), return_report=True)
    assert report["missing"] == [] and sorted(report["unused"]) == ["fc.bias", "fc.weight"]
    np.testing.assert_array_equal(v["params"]["backbone"]["layer2_0"]["downsample_0"]["kernel"],
                                  tmodel.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["batch_stats"]["backbone"]["layer4_1"]["bn2"]["var"],
                                  tmodel.layer4[1].bn2.running_var.numpy())
    # The ASPP heads are untouched (still the shapes the structure had).
    assert isinstance(v["params"]["aspp_0"]["kernel"], jax.ShapeDtypeStruct)


# ----------------------------------------------------------------------------- VGG-16 / FCN-8s


class TVGG16(tnn.Module):
    """torchvision.models.vgg16 layout (features / avgpool / classifier indices) at reduced width."""

    def __init__(self, width, fc):
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        mods, cin = [], 3
        for c in cfg:
            if c == "M":
                mods.append(tnn.MaxPool2d(2, 2))
            else:
                c = int(round(c * width))
                mods += [tnn.Conv2d(cin, c, 3, padding=1), tnn.ReLU()]
                cin = c
        self.features = tnn.Sequential(*mods)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(tnn.Linear(cin * 49, fc), tnn.ReLU(), tnn.Dropout(),
                                         tnn.Linear(fc, fc), tnn.ReLU(), tnn.Dropout(), tnn.Linear(fc, 1000))

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:4](x)  # fc7 before its ReLU


def test_vgg16_import_into_fcn8s_matches_pytorch():
    width, fc = 1 / 16, 32
    tmodel = randomize(TVGG16(width, fc), seed=2)
    x = np.random.default_rng(3).standard_normal((1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    m = models.create("fcn8s_vgg16", 5, width=width, fc_channels=fc)
    v, report = import_torch_state_dict(flax_structure(m, (1, 224, 224, 3)), tmodel.state_dict(), return_report=True)
    assert sorted(report["unused"]) == ["classifier.6.bias", "classifier.6.weight"]
    assert report["missing"] == []
    # Fill the FCN-only layers (left as structures by the import) with zeros to run the model.
    v = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype) if isinstance(a, jax.ShapeDtypeStruct) else a, v)
    _, state = run_flax(m, v, x, capture_intermediates=True, mutable=["intermediates"])
    fc7 = state["intermediates"]["classifier_3"]["__call__"][0]
    # pool5 is 7x7; fc6 as a padded 7x7 convolution equals the linear layer at the centre.
    assert fc7.shape == (1, 7, 7, fc)
    np.testing.assert_allclose(fc7[0, 3, 3], ref[0], rtol=1e-4, atol=1e-4)


def test_conv_transpose_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    for k, s, p, op in [(4, 2, 1, 0), (3, 2, 1, 1), (2, 2, 0, 0)]:
        t = tnn.ConvTranspose2d(3, 5, k, stride=s, padding=p, output_padding=op, bias=False)
        with torch.no_grad():
            t.weight.copy_(torch.randn(t.weight.shape, generator=g))
        x = np.random.default_rng(k).standard_normal((2, 5, 6, 3)).astype(np.float32)
        with torch.no_grad():
            ref = t(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        mod = layers.ConvTranspose(5, k, s, padding=p, output_padding=op)
        out = mod.apply({"params": {"kernel": t.weight.detach().numpy().transpose(2, 3, 0, 1)}}, x)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,p,ceil", [(2, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True), (3, 2, 0, True)])
@pytest.mark.parametrize("h", [6, 7, 9])
def test_max_pool_matches_pytorch(k, s, p, ceil, h):
    x = np.random.default_rng(h).standard_normal((1, h, h + 1, 2)).astype(np.float32)
    ref = tnn.MaxPool2d(k, s, p, ceil_mode=ceil)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(layers.max_pool(jnp.asarray(x), k, s, padding=p, ceil_mode=ceil)), ref)
