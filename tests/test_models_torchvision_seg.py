"""torchvision's segmentation networks in JAX (jaxseg.models.torchvision_seg): each against
torchvision's own module built with random weights and BatchNorm statistics (nothing downloaded),
its whole state dict imported (backbone, head, auxiliary head), the logits compared in eval mode
at input sizes not divisible by 8 (and once in training mode); the import's reports (unused keys,
re-initialised classifiers), the export back to torchvision, the auxiliary output's contract; and
the fine-tuning config run for a few steps on tiny VOC data with a reduced backbone.

``pytest -s tests/test_models_torchvision_seg.py -k torchvision_logits`` prints the measured
relative errors.
"""

import functools
import importlib.util
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxseg import models  # noqa: E402
from test_models_torch_import import FAST, flax_structure, randomize  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-4  # max |jaxseg - torchvision| / max |torchvision|


def import_torchvision():
    """torchvision's Python modules. The wheel served for torch 2.13 is a CUDA build whose import
    next to the CPU torch fails registering fake kernels for ``torchvision::nms`` (its compiled
    operators do not load): declaring the two schemas first lets the models import and run on
    CPU. A torchvision whose operators load imports at the first try."""
    try:
        import torchvision
        return torchvision
    except ImportError:
        pytest.skip("torchvision is not installed (pip install -e '.[test]')")
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision.library = lib  # the definitions live as long as this object
    import torchvision
    return torchvision


@functools.cache
def torchvision_model(name, aux):
    """torchvision's ``name`` (21 classes, no weights downloaded) with random weights and
    BatchNorm statistics, in eval mode."""
    segmentation = import_torchvision().models.segmentation
    torch.manual_seed(0)
    net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=21,
                                      aux_loss=aux)
    return randomize(net, seed=len(name) + aux)


@functools.cache
def imported(name, aux):
    """(torchvision module, jaxseg module, imported variables, import report)."""
    net = torchvision_model(name, aux)
    model = models.create(name, 21, aux_head=aux)
    variables, report = models.import_torch_state_dict(
        flax_structure(model, (1, 33, 33, 3)), net.state_dict(), return_report=True)
    return net, model, variables, report


@pytest.fixture(scope="module", autouse=True)
def release_networks():
    """The networks are built once for this file's tests (about 1 GB in all), then freed."""
    yield
    imported.cache_clear()
    torchvision_model.cache_clear()


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def relative_error(ours, reference):
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


CASES = [  # (name, auxiliary head, input [B, H, W]): no size divisible by 8
    ("deeplabv3_resnet50", True, (1, 65, 97)),
    ("deeplabv3_resnet50", True, (2, 41, 30)),
    ("fcn_resnet50", True, (1, 65, 97)),
    ("deeplabv3_resnet101", True, (1, 65, 97)),
]


@pytest.mark.parametrize("name,aux,shape", CASES)
def test_torchvision_logits_match(name, aux, shape):
    net, model, variables, report = imported(name, aux)
    assert report["unused"] == [] and report["missing"] == [] and report["reinitialised"] == []
    assert sum(p.numel() for p in net.parameters()) == sum(
        math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    x = np.random.default_rng(shape[1]).standard_normal((*shape, 3)).astype(np.float32)
    with torch.no_grad():
        ref = {k: v.permute(0, 2, 3, 1).numpy() for k, v in net(nchw(x)).items()}
    fn = lambda v, x: model.apply(v, x, train=False, return_aux=aux)  # noqa: E731
    out = jax.jit(fn).lower(variables, x).compile(FAST)(variables, x)
    out = out if aux else {"out": out}
    assert sorted(out) == sorted(ref)
    for key in ref:
        assert out[key].shape == ref[key].shape == (*shape, 21)
        err = relative_error(out[key], ref[key])
        print(f"{name} {key} {shape[1]}x{shape[2]} batch {shape[0]}: max relative error {err:.2e}")
        assert err < RTOL, (key, err)


def test_fcn_resnet101_parameter_count():
    """The one combination not run above (its parts are: the ResNet-101, the FCN heads):
    torchvision's 54,314,346 parameters with the auxiliary head, 51,949,141 without."""
    struct = flax_structure(models.create("fcn_resnet101", 21, aux_head=True), (1, 33, 33, 3))
    count = {k: sum(math.prod(p.shape) for p in jax.tree.leaves(v)) for k, v in struct["params"].items()}
    assert sum(count.values()) == 54_314_346
    assert sum(n for k, n in count.items() if not k.startswith("aux_")) == 51_949_141


def test_training_mode_matches_torchvision(x64):
    """Batch statistics in the forward pass (the image-pooling branch's BatchNorm normalises over
    the batch of 1x1 maps) and the running means afterwards (PyTorch momentum 0.1 = Flax 0.9), in
    float64 on both sides: in float32 the logits differ by 1e-4 to 5e-4 relative, because the
    pooling branch's statistics over a batch of two are ill-conditioned (its normalised values are
    differences of two nearly equal means), not because the computations differ (3e-7 here, the
    float32 logits' rounding). Dropout is off on both sides (the auxiliary dropout acts after the
    statistics and on the auxiliary logits only). Not compared: running variances, which PyTorch
    updates with the unbiased batch variance and Flax with the biased one."""
    tv = import_torchvision().models
    segmentation = tv.segmentation
    resnet = tv.resnet.ResNet(tv.resnet.Bottleneck, [1, 1, 1, 1],
                              replace_stride_with_dilation=[False, True, True])
    net = segmentation.DeepLabV3(
        tv._utils.IntermediateLayerGetter(resnet, {"layer4": "out", "layer3": "aux"}),
        segmentation.deeplabv3.DeepLabHead(2048, 21), segmentation.fcn.FCNHead(1024, 21))
    net = randomize(net, seed=3).double().train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model = models.create("deeplabv3_resnet50", 21, stage_sizes=(1, 1, 1, 1), aux_head=True,
                          dropout_rate=0.0, dtype=jnp.float64)
    variables = models.import_torch_state_dict(flax_structure(model, (1, 33, 33, 3)), net.state_dict())
    x = np.random.default_rng(5).standard_normal((2, 33, 41, 3))
    with torch.no_grad():
        ref = net(nchw(x))["out"].permute(0, 2, 3, 1).numpy()
    stats = {k: v.numpy() for k, v in net.state_dict().items() if k.endswith("running_mean")}

    def fn(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.key(0)})

    out, updates = jax.jit(fn).lower(variables, x).compile(FAST)(variables, x)
    err = relative_error(out["out"], ref)
    print(f"deeplabv3 (ResNet-50 blocks 1, 1, 1, 1) training mode, float64: max relative error "
          f"{err:.2e}")
    assert err < 1e-6
    ours = models.export_torch_state_dict(updates)
    assert set(stats) == {k for k in ours if k.endswith("running_mean")}
    for k, v in stats.items():
        np.testing.assert_allclose(ours[k], v, rtol=1e-6, atol=1e-6 * np.abs(v).max(), err_msg=k)


def test_import_reports_unused_keys_and_reinitialises_classifiers(capsys):
    net, _, _, _ = imported("deeplabv3_resnet50", True)
    sd = net.state_dict()
    aux_keys = [k for k in sd if k.startswith("aux_classifier.") and "num_batches" not in k]
    # Another class count, no auxiliary head: the classifier keeps its initial value, the
    # auxiliary head's keys are unused; both are printed.
    model = models.create("deeplabv3_resnet50", 5)
    struct = flax_structure(model, (1, 33, 33, 3))
    v, report = models.import_torch_state_dict(struct, sd, return_report=True)
    assert report["unused"] == aux_keys and report["missing"] == []
    assert report["reinitialised"] == ["classifier.4.weight", "classifier.4.bias"]
    assert v["params"]["classifier_4"] == struct["params"]["classifier_4"]
    np.testing.assert_array_equal(v["params"]["classifier_1"]["kernel"],
                                  sd["classifier.1.weight"].numpy().transpose(2, 3, 1, 0))
    printed = capsys.readouterr().out
    assert "classifier.4.weight has 21 classes, the model 5: params/classifier_4/kernel" in printed
    assert (f"{len(aux_keys)} keys of the state dict not used by the model, of aux_classifier.0, "
            "aux_classifier.1, aux_classifier.4." in printed)
    # With the auxiliary head, its classifier is re-initialised too; nothing is unused.
    aux_model = models.create("deeplabv3_resnet50", 5, aux_head=True)
    aux_struct = flax_structure(aux_model, (1, 33, 33, 3))
    _, report = models.import_torch_state_dict(aux_struct, sd, return_report=True, verbose=False)
    assert report["unused"] == [] and len(report["reinitialised"]) == 4
    assert capsys.readouterr().out == ""
    # Anything else that does not fit stays an error naming the key.
    bad = dict(sd, **{"classifier.1.weight": torch.zeros(256, 256, 1, 1)})
    with pytest.raises(ValueError, match=r"classifier\.1\.weight.*does not match"):
        models.import_torch_state_dict(struct, bad)
    no_aux = {k: t for k, t in sd.items() if not k.startswith("aux_classifier.")}
    with pytest.raises(ValueError, match="no value.*aux_classifier_0"):
        models.import_torch_state_dict(aux_struct, no_aux)
    with pytest.raises(TypeError, match="state_dict"):
        models.import_torch_state_dict(struct, [1, 2])
    with pytest.raises(TypeError, match="variables"):
        models.import_torch_state_dict(None, sd)
    with pytest.raises(TypeError, match="reinit_classifiers"):
        models.import_torch_state_dict(struct, sd, reinit_classifiers="classifier.4")
    # An ImageNet ResNet (no "backbone." prefix) still goes into the backbone only.
    resnet = {k[len("backbone."):]: t for k, t in sd.items() if k.startswith("backbone.")}
    v, report = models.import_torch_state_dict(struct, resnet, return_report=True)
    assert report["unused"] == [] and report["missing"] == []
    assert v["params"]["classifier_1"] == struct["params"]["classifier_1"]


def test_export_is_the_inverse_of_import():
    net, _, variables, _ = imported("fcn_resnet50", True)
    reference = {k: t.numpy() for k, t in net.state_dict().items() if "num_batches" not in k}
    exported = models.export_torch_state_dict(variables)
    assert sorted(exported) == sorted(reference)
    for k, v in reference.items():
        np.testing.assert_array_equal(exported[k], v, err_msg=k)
    # torchvision's module takes it as it is (BatchNorm's num_batches_tracked filled by torch).
    net.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)


def test_aux_output_contract_and_errors():
    model = models.create("deeplabv3_resnet18_small", 3, aux_head=True)
    x = jax.ShapeDtypeStruct((2, 33, 41, 3), jnp.float32)

    def shapes(m, **kw):
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        return jax.eval_shape(lambda x: m.init_with_output(rngs, x, **kw)[0], x)

    assert shapes(model, train=False).shape == (2, 33, 41, 3)
    train = shapes(model, train=True)
    assert {k: v.shape for k, v in train.items()} == {"out": (2, 33, 41, 3), "aux": (2, 33, 41, 3)}
    assert sorted(shapes(model, train=False, return_aux=True)) == ["aux", "out"]
    strided = models.create("fcn_resnet50", 3, aux_head=True, logits_stride=True)
    assert strided.feature_stride == 8
    assert {k: v.shape for k, v in shapes(strided, train=False, return_aux=True).items()} == {
        "out": (2, 5, 6, 3), "aux": (2, 5, 6, 3)}
    plain = models.create("deeplabv3_resnet18_small", 3)
    assert shapes(plain, train=True).shape == (2, 33, 41, 3)
    with pytest.raises(ValueError, match="return_aux=True needs .*aux_head=True"):
        shapes(plain, train=False, return_aux=True)
    with pytest.raises(TypeError, match="aux_head must be a bool"):
        shapes(models.create("deeplabv3_resnet18_small", 3, aux_head=1), train=False)
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        shapes(models.create("fcn_resnet50", 3, output_stride=32), train=False)
    with pytest.raises(ValueError, match="dropout_rate"):
        shapes(models.create("deeplabv3_resnet18_small", 3, dropout_rate=1.0), train=False)
    with pytest.raises(TypeError, match="images must be floating point"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jax.ShapeDtypeStruct((1, 33, 33, 3), jnp.uint8))
    assert "aux_head" in models.options("fcn_resnet101")
    assert "aspp_rates" in models.options("deeplabv3_resnet50")
    assert "aspp_rates" not in models.options("fcn_resnet50")


# ----------------------------------------------------------------------------- the config


def load_config():
    path = os.path.join(ROOT, "configs", "voc_deeplabv3_resnet101_lovasz.py")
    spec = importlib.util.spec_from_file_location("cfg_voc_deeplabv3_resnet101_lovasz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.usefixtures("compilation_cache")
def test_finetuning_config_runs_from_imported_weights(tmp_path, capsys):
    """The config's structure (model family, Lovász-Softmax, frozen BatchNorm, SGD, poly) with
    the registered reduced DeepLab-v3 (a full ResNet-101 step compiles for minutes on this CPU),
    2 steps from a torchvision-format ``.pth`` of that model, on tiny VOC data."""
    from jaxseg.data import testing
    from jaxseg.training import checkpoint as ckpt_lib
    from jaxseg.training import loop

    c = load_config()
    assert (c.model.name, c.loss.name, c.loss.kwargs.per_image) == (
        "deeplabv3_resnet101", "lovasz_softmax", False)
    assert c.model.options.frozen_batchnorm and c.data.name == "voc2012_segmentation"
    assert c.init_from.torch_weights == ""  # the user's file, given on the command line
    loop.validate_config(c)

    manual = str(tmp_path / "voc_manual")
    testing.write_voc_sbd(manual, size=(40, 44), archive=False,
                          voc_train=["2007_000032", "2007_000039"], voc_val=["2007_000033"],
                          sbd_train=["2008_000010"], sbd_val=[])
    c.data.manual_dir, c.data.data_dir = manual, str(tmp_path / "voc_data")
    c.data.crop_size, c.data.eval_pad_size = (33, 33), (40, 44)
    c.model.name = "deeplabv3_resnet18_small"
    c.batch_size = c.eval_batch_size = 2
    c.num_train_steps = c.checkpoint_every_steps = 2
    c.log_every_steps, c.eval_every_steps, c.eval.max_batches = 1, 0, 1
    c.progress_bar = c.tensorboard = c.figures = False

    # The weights a user would download: here a torchvision-format file of random weights and
    # BatchNorm statistics for the same model (drawn with NumPy: no initialisation to compile).
    model = models.create(c.model.name, 21, **c.model.options.to_dict())
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        kind = path[-1].key
        if kind == "kernel":
            return rng.normal(0, math.sqrt(2 / math.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
        if kind in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

    donor = jax.tree_util.tree_map_with_path(draw, flax_structure(model, (1, 33, 33, 3)))
    weights = str(tmp_path / "deeplabv3_small.pth")
    torch.save({k: torch.from_numpy(v) for k, v in models.export_torch_state_dict(donor).items()},
               weights)
    c.init_from.torch_weights = weights

    workdir = str(tmp_path / "run")
    summary = loop.train_and_evaluate(c, workdir)
    assert summary["step"] == 2
    assert f"Initialised from the PyTorch weights {weights}" in capsys.readouterr().out
    # The auxiliary head trained with the config's weight (torchvision's recipe).
    assert c.model.options.aux_head and c.aux_loss_weight == 0.5
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert all(math.isfinite(r["aux_loss"]) and r["loss"] > 0.5 * r["aux_loss"] for r in train)
    tree, step = ckpt_lib.restore_raw(workdir)
    assert step == 2
    # Frozen BatchNorm: the imported statistics are unchanged; the weights moved by little from
    # the imported ones (a fresh initialisation is about 100% away).
    for got, want in zip(jax.tree.leaves(tree["batch_stats"]), jax.tree.leaves(donor["batch_stats"])):
        np.testing.assert_array_equal(np.asarray(got), want)
    got, want = jax.tree.leaves(tree["params"]), jax.tree.leaves(donor["params"])
    distance = math.sqrt(sum(float(np.sum((np.asarray(a) - b) ** 2)) for a, b in zip(got, want))
                         / sum(float(np.sum(b ** 2)) for b in want))
    assert 0 < distance < 0.05, distance
