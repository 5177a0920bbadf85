"""jaxseg.predict and the prediction inputs, without a trainer: file formats (VOC palette PNGs and
the server's archive, Cityscapes labelIds against cityscapesScripts' own table, probabilities,
overlays), files written whole or not at all, the jitted step's compilations, folders of images in
size buckets, and two simulated hosts writing every example once.
"""

import functools
import io
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxseg.data as jd
from jaxseg import evaluate as eval_lib
from jaxseg import predict
from jaxseg import sharding
from jaxseg.data import cityscapes, image_folder
from jaxseg.training import prediction


def _read(path):
  with Image.open(path) as img:
    return img.mode, np.asarray(img), img.getpalette()


# ----------------------------------------------------------------------------------------------
# Formats


def test_voc_palette_is_the_devkit_colour_map():
  from jaxseg import viz  # the figures' loop over bits: the same map, void drawn white there

  pal = predict.voc_palette()
  np.testing.assert_array_equal(pal[:255], viz.palette(256)[:255])
  assert tuple(pal[1]) == (128, 0, 0) and tuple(pal[15]) == (192, 128, 128)  # aeroplane, person
  assert tuple(pal[255]) == (224, 224, 192)  # the void boundary colour of SegmentationClass


def test_indexed_png_keeps_the_class_indices(tmp_path):
  ids = np.arange(21, dtype=np.uint8).repeat(3).reshape(7, 9)
  predict.save_png(str(tmp_path / "x.png"), ids, predict.voc_palette())
  mode, values, palette = _read(tmp_path / "x.png")
  assert mode == "P"
  np.testing.assert_array_equal(values, ids)
  np.testing.assert_array_equal(np.array(palette[:21 * 3]).reshape(21, 3), predict.voc_palette()[:21])


def test_cityscapes_predictions_are_official_label_ids(tmp_path):
  labels = pytest.importorskip("cityscapesscripts.helpers.labels")
  writer = predict.PredictionWriter(str(tmp_path), predict.cityscapes_layout(cityscapes.TRAIN_ID_TO_LABEL_ID))
  train_ids = np.tile(np.arange(19, dtype=np.uint8), (4, 2))
  writer.write("frankfurt_000000_000294", train_ids)
  mode, values, _ = _read(tmp_path / "labelIds" / "frankfurt_000000_000294.png")
  assert mode == "L"
  np.testing.assert_array_equal(values, np.vectorize(lambda t: labels.trainId2label[t].id)(train_ids))


def test_voc_test_layout_and_server_archive(tmp_path):
  layout = predict.voc_layout("test")
  assert layout.folder == "results/VOC2012/Segmentation/comp6_test_cls" and layout.archive == "results.tgz"
  assert not predict.voc_layout("val").archive
  writer = predict.PredictionWriter(str(tmp_path), layout)
  preds = {"2008_000001": np.full((5, 7), 15, np.uint8), "2010_000002": np.eye(6, dtype=np.uint8) * 3}
  for name, p in preds.items():
    writer.submit(name, p)
  writer.close()
  folder = tmp_path / layout.folder
  (folder / ".2008_000003.png.123.abc.tmp").write_bytes(b"a file being written")  # never archived
  path = predict.write_archive(str(tmp_path), layout)
  with tarfile.open(path, "r:gz") as tar:
    members = sorted(m.name for m in tar.getmembers())
    assert members == [f"results/VOC2012/Segmentation/comp6_test_cls/{n}.png" for n in sorted(preds)]
    for name, p in preds.items():
      data = tar.extractfile(f"{layout.folder}/{name}.png").read()
      img = Image.open(io.BytesIO(data))
      assert img.mode == "P"
      np.testing.assert_array_equal(np.asarray(img), p)


def test_probabilities_and_overlays(tmp_path):
  writer = predict.PredictionWriter(str(tmp_path), predict.indexed_layout(), overlays=True,
                                    probabilities=True, class_names=["a", "b", "c"])
  probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(6, 8)).astype(np.float32)
  image = np.full((6, 8, 3), 100, np.uint8)
  writer.write("sub/img", probs.argmax(-1), image=image, probabilities=probs)
  mode, ids, _ = _read(tmp_path / "predictions" / "sub" / "img.png")
  np.testing.assert_array_equal(ids, probs.argmax(-1))
  mode, overlay, _ = _read(tmp_path / "overlays" / "sub" / "img.png")
  assert mode == "RGB" and overlay.shape == (6, 8, 3) and not (overlay == 100).all()
  with np.load(tmp_path / "probabilities" / "sub" / "img.npz") as z:
    assert z["probabilities"].dtype == np.float16 and z["probabilities"].shape == (6, 8, 3)
    np.testing.assert_allclose(z["probabilities"], probs, atol=1e-3)
    assert list(z["class_names"]) == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["", "../x", "/abs/x", "a/../b", "a//b", "a\\b"])
def test_names_outside_the_output_folder_are_refused(tmp_path, name):
  writer = predict.PredictionWriter(str(tmp_path), predict.indexed_layout())
  with pytest.raises(ValueError, match="cannot write a prediction under the name"):
    writer.write(name, np.zeros((2, 2), np.uint8))


def test_files_appear_whole_or_not_at_all(tmp_path):
  path = str(tmp_path / "out" / "x.png")
  predict.save_png(path, np.ones((3, 3), np.uint8))
  before = open(path, "rb").read()

  for error in (OSError("disk full"), KeyboardInterrupt()):
    def fails_half_way(f, error=error):
      f.write(b"half of a file")
      raise error

    with pytest.raises(type(error)):
      predict.atomic_write(path, fails_half_way)
    assert open(path, "rb").read() == before  # the old file is intact
    with pytest.raises(type(error)):
      predict.atomic_write(str(tmp_path / "out" / "new.png"), fails_half_way)
    assert sorted(os.listdir(tmp_path / "out")) == ["x.png"]  # no new file, no temporary left


def test_writer_errors_surface(tmp_path):
  writer = predict.PredictionWriter(str(tmp_path), predict.indexed_layout())
  writer.submit("ok", np.zeros((2, 2), np.uint8))
  writer.submit("bad", np.full((2, 2), 300))  # not a PNG class id
  with pytest.raises(ValueError, match="0..255"):
    writer.close()
  assert os.listdir(tmp_path / "predictions") == ["ok.png"]


# ----------------------------------------------------------------------------------------------
# The jitted step


def _apply(variables, images, train=False):
  """A stand-in model: class logits from the first channel, scaled by a parameter."""
  return variables["w"] * jax.nn.one_hot(jnp.round(images[..., 0]).astype(jnp.int32) % 5, 5)


def test_predict_step_is_the_evaluations_prediction_compiled_once_per_shape():
  mesh = sharding.create_mesh()
  step = predict.make_predict_step(mesh, _apply, scales=(1.0, 0.5), flip=False, probabilities=True)
  reference = jax.jit(functools.partial(eval_lib.predict_probabilities, _apply, scales=(1.0, 0.5)))
  variables = {"w": jnp.float32(3.0)}
  rng = np.random.default_rng(0)
  for shape in [(2, 8, 8, 3), (2, 12, 8, 3), (2, 8, 8, 3), (2, 12, 8, 3)]:
    images = rng.integers(0, 5, shape).astype(np.float32)
    out = step(variables, sharding.global_batch({"image": images}, mesh)["image"])
    want = reference(variables, jnp.asarray(images))
    ids = predict.host_rows(out["prediction"])
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, np.asarray(jnp.argmax(want, -1)))
    np.testing.assert_allclose(predict.host_rows(out["probabilities"]).astype(np.float32), want, atol=1e-3)
  assert step.compilations == 2 and step.shapes == [(2, 8, 8, 3), (2, 12, 8, 3)]


def _apply_with_context(variables, images, train=False):
  """Per-pixel logits plus the mean of what the model sees: depends on the windows it gets."""
  return _apply(variables, images) + jnp.mean(images[..., :1], axis=(1, 2), keepdims=True) * jnp.arange(5.0)


def test_predict_step_slides_windows_as_the_evaluation_does():
  mesh = sharding.create_mesh()
  kwargs = dict(mode="slide", window=(8, 8), stride=(6, 6))
  step = predict.make_predict_step(mesh, _apply_with_context, probabilities=True, **kwargs)
  reference = jax.jit(functools.partial(eval_lib.predict_probabilities, _apply_with_context, **kwargs))
  images = np.random.default_rng(3).integers(0, 5, (2, 16, 16, 3)).astype(np.float32)
  sizes = np.array([[16, 16], [11, 13]], np.int32)  # the second image padded from 11 x 13
  variables = {"w": jnp.float32(0.5)}
  batch = sharding.global_batch({"image": images, "size": sizes}, mesh)
  got = predict.host_rows(step(variables, batch["image"], batch["size"])["probabilities"])
  want = reference(variables, jnp.asarray(images), sizes=jnp.asarray(sizes))
  np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-3)
  padded = reference(variables, jnp.asarray(images))  # windows aligned to the padded border
  assert np.abs(np.asarray(padded) - np.asarray(want))[1].max() > 1e-2  # the sizes were used


def test_evaluation_settings_reach_prediction_or_are_refused():
  from configs import common

  c = common.base_config(common.data_config("shapes"))
  assert prediction.eval_settings(c)["mode"] == "whole"
  c.eval.mode, c.eval.window, c.eval.stride = "slide", (64, 64), (48, 48)
  assert prediction.eval_settings(c) == dict(mode="slide", window=(64, 64), stride=(48, 48))
  c.eval.stride = (80, 80)
  with pytest.raises(prediction.ConfigError, match="config.eval.window / stride"):
    prediction.eval_settings(c)
  c.eval.crf = True
  with pytest.raises(prediction.ConfigError, match="dense CRF"):
    prediction.eval_settings(c)
  with pytest.raises(prediction.ConfigError, match="config.predict.output_dir"):
    prediction.predict_settings(c)
  c.predict.output_dir, c.predict.split, c.predict.input_dir = "out", "test", "photos"
  with pytest.raises(prediction.ConfigError, match="give one of them"):
    prediction.predict_settings(c)


# ----------------------------------------------------------------------------------------------
# Folders of images


def _write_images(folder, sizes, rng):
  os.makedirs(folder, exist_ok=True)
  truth = {}
  for i, (h, w) in enumerate(sizes):
    name = f"{'sub/' if i % 3 == 1 else ''}img{i:02d}"
    os.makedirs(os.path.dirname(os.path.join(folder, name)) or folder, exist_ok=True)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, name + ".png"))
    truth[name] = pixels
  return truth


def test_bucket_sizes_bound_the_shapes():
  assert image_folder.bucket_size(500, 375) == (512, 384)
  assert image_folder.bucket_size(1024, 2048) == (1024, 2048)
  assert image_folder.bucket_size(1, 65) == (64, 96)
  assert image_folder.bucket_size(9000, 100) == (16384, 128)
  rng = np.random.default_rng(0)
  sizes = rng.integers(1, 4097, (2000, 2))
  shapes = {image_folder.bucket_size(h, w) for h, w in sizes}
  # every image size maps to one of at most 13 x 13 shapes (sides up to 4096), each padded side
  # below 1.5 times the image's (for sides above the smallest bucket)
  assert len(shapes) <= 13 * 13
  for h, w in sizes:
    H, W = image_folder.bucket_size(h, w)
    assert h <= H and w <= W and H % 32 == 0 and W % 32 == 0
    assert (H < 1.5 * h or H == 64) and (W < 1.5 * w or W == 64)


def test_folder_batches_on_two_hosts(tmp_path):
  sizes = [(20, 30), (50, 60), (70, 40), (64, 64), (100, 120), (30, 20), (33, 47)]
  truth = _write_images(str(tmp_path / "imgs"), sizes, np.random.default_rng(1))
  (tmp_path / "imgs" / "notes.txt").write_text("not an image")
  plan = jd.plan_image_folder(str(tmp_path / "imgs"), 4)
  assert plan.num_examples == 7 and sorted(plan.names) == sorted(truth)
  assert plan.shapes == [(64, 64), (96, 64), (128, 128)]
  mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
  hosts = [list(jd.create_folder_iterator(input_dir=str(tmp_path / "imgs"), global_batch_size=4, mean=mean,
                                          std=std, process_index=p, process_count=2, num_threads=2))
           for p in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == len(plan.batches) == 4  # 5 + 1 + 1 images in 3 buckets
  seen = []
  for k, (b0, b1) in enumerate(zip(*hosts)):
    assert b0["image"].shape == b1["image"].shape == (2,) + plan.batches[k][0] + (3,)  # same shape on all hosts
    for b in (b0, b1):
      for j in np.flatnonzero(b["example_mask"]):
        name = b["id"][j].decode()
        h, w = b["size"][j]
        seen.append(name)
        np.testing.assert_allclose(b["image"][j, :h, :w] * std + mean, truth[name], atol=1e-3)
        assert (b["image"][j, h:] == 0).all() and (b["image"][j, :, w:] == 0).all()
      assert all(i == b"" for i in b["id"][~b["example_mask"]])
  assert sorted(seen) == sorted(truth)  # each image once, over the two hosts


def test_folder_errors_name_the_file(tmp_path):
  folder = tmp_path / "imgs"
  _write_images(str(folder), [(10, 12), (8, 8)], np.random.default_rng(2))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    jd.plan_image_folder(str(tmp_path / "nowhere"), 2)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="No image"):
    jd.plan_image_folder(str(tmp_path / "empty"), 2)
  (folder / "img00.jpg").write_bytes(b"x")  # img00.png and img00.jpg: one output name
  with pytest.raises(jd.DataError, match=r"img00\.jpg, img00\.png .* one name"):
    jd.plan_image_folder(str(folder), 2)
  (folder / "img00.jpg").write_bytes(b"not an image")
  (folder / "img00.jpg").rename(folder / "broken.jpg")
  with pytest.raises(jd.DataError, match=r"Cannot read the image .*broken\.jpg"):
    jd.plan_image_folder(str(folder), 2)
  # a header that reads but pixels that do not: named when its batch is read
  data = io.BytesIO()
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data, format="PNG")
  (folder / "broken.jpg").unlink()
  (folder / "truncated.png").write_bytes(data.getvalue()[:60])
  batches = jd.create_folder_iterator(input_dir=str(folder), global_batch_size=2, process_index=0, process_count=1)
  with pytest.raises(jd.DataError, match=r"Cannot decode the image .*truncated\.png"):
    list(batches)


def test_exif_orientation_is_applied(tmp_path):
  pixels = np.zeros((10, 30, 3), np.uint8)
  pixels[:, :5] = 255  # left edge white
  img = Image.fromarray(pixels)
  exif = img.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  img.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
  assert image_folder.image_size(str(tmp_path / "photo.jpg")) == (30, 10)
  shown = image_folder.load_image(str(tmp_path / "photo.jpg"))
  assert shown.shape == (30, 10, 3) and shown[:5].mean() > 200  # the white edge is now on top


# ----------------------------------------------------------------------------------------------
# Every host writes its own examples


def test_two_hosts_write_every_example_of_a_split_once(tmp_path):
  kwargs = dict(name="shapes", split="validation", options={"image_size": 16, "num_validation": 5, "seed": 0},
                mean=(127.5,) * 3, std=(64.0,) * 3, global_batch_size=4)
  truth = {e["id"].decode(): e["label"] for e in
           jd.get_dataset("shapes", "validation", **kwargs["options"]).as_numpy_iterator()}

  def oracle(batch):  # predicts the ground truth
    return np.where(batch["label"] == 255, 0, batch["label"]).astype(np.uint8), None

  counts = []
  for p in range(2):
    writer = predict.PredictionWriter(str(tmp_path), predict.indexed_layout())
    counts.append(prediction.write_batches(jd.create_eval_iterator(**kwargs, process_index=p, process_count=2),
                                           oracle, writer))
    writer.close()
  assert counts == [3, 2]  # host 0: examples 0, 1, 4; host 1: 2, 3 (and two filler rows, not written)
  files = predict.prediction_files(str(tmp_path), predict.indexed_layout())
  assert files == [f"{name}.png" for name in sorted(truth)]
  for name, label in truth.items():
    np.testing.assert_array_equal(_read(tmp_path / "predictions" / f"{name}.png")[1], label)
