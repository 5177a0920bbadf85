"""VOC 2012 + SBD builder on tiny archives in the official layouts."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import jaxseg.data as jd
from jaxseg.data import testing, voc

SPLITS = dict(
    voc_train=["2007_000032", "2007_000039", "2008_000002", "2008_000003"],
    voc_val=["2007_000033", "2007_000042", "2008_000008"],
    sbd_train=["2007_000039", "2008_000010", "2008_000011", "2007_000042"],  # overlaps VOC train and val
    sbd_val=["2008_000012", "2008_000003"],
)
SIZES = [(24, 32), (20, 28), (26, 18)]


@pytest.fixture(scope="module")
def voc_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    manual = str(root / "manual")
    truth = testing.write_voc_sbd(manual, size=SIZES, archive=True, **SPLITS)
    return dict(manual=manual, data_dir=str(root / "data"), truth=truth)


def _elements(voc_data, split):
    ds = jd.get_dataset("voc2012_segmentation", split, data_dir=voc_data["data_dir"], manual_dir=voc_data["manual"])
    return {e["id"].decode(): e for e in ds.as_numpy_iterator()}


def _expected_ids():
    val = set(SPLITS["voc_val"])
    aug = set(SPLITS["voc_train"]) | set(SPLITS["sbd_train"]) | set(SPLITS["sbd_val"])
    return {"train": set(SPLITS["voc_train"]), "val": val, "train_aug": aug - val}


def test_split_counts_and_ids(voc_data):
    for split, ids in _expected_ids().items():
        els = _elements(voc_data, split)
        assert set(els) == ids, split
        assert len(els) == len(ids)
    assert len(_expected_ids()["train_aug"]) == 7


def test_labels_images_and_sources(voc_data):
    truth = voc_data["truth"]
    els = _elements(voc_data, "train_aug")
    for i, e in els.items():
        # VOC's label (with its void rim) wins where it exists; SBD's otherwise.
        ref = truth["voc"][i] if i in truth["voc"] else truth["sbd"][i]
        assert e["label"].dtype == np.uint8 and e["label"].shape == ref.shape
        np.testing.assert_array_equal(e["label"], ref)
        assert e["image"].shape == ref.shape + (3,) and e["image"].dtype == np.uint8
    assert any((e["label"] == 255).any() for e in els.values())
    # Images are stored byte for byte: identical to decoding the archive's JPEG with TF.
    import tarfile

    with tarfile.open(os.path.join(voc_data["manual"], voc.VOC_ARCHIVE)) as t:
        data = t.extractfile(f"{voc.VOC_FOLDER}/JPEGImages/2008_000010.jpg").read()
    np.testing.assert_array_equal(els["2008_000010"]["image"], tf.io.decode_jpeg(data).numpy())


def test_extracted_folders_give_the_same_data(voc_data, tmp_path):
    manual = str(tmp_path / "manual")
    testing.write_voc_sbd(manual, size=SIZES, archive=False, **SPLITS)
    ds = jd.get_dataset("voc2012_segmentation", "val", data_dir=str(tmp_path / "data"), manual_dir=manual)
    folder = {e["id"].decode(): e for e in ds.as_numpy_iterator()}
    arch = _elements(voc_data, "val")
    assert set(folder) == set(arch)
    for i in folder:
        np.testing.assert_array_equal(folder[i]["label"], arch[i]["label"])
        np.testing.assert_array_equal(folder[i]["image"], arch[i]["image"])


def test_statistics_cached_next_to_prepared_data(voc_data):
    st = jd.split_statistics("voc2012_segmentation", "train_aug", data_dir=voc_data["data_dir"])
    truth = voc_data["truth"]
    els = _elements(voc_data, "train_aug")
    labels = [truth["voc"][i] if i in truth["voc"] else truth["sbd"][i] for i in els]
    ref = np.zeros(21, np.int64)
    for lab in labels:
        ref += np.bincount(lab.ravel(), minlength=256)[:21]
    np.testing.assert_array_equal(st.class_pixel_counts, ref)
    assert st.void_pixel_count == sum(int((lab == 255).sum()) for lab in labels)
    assert st.num_examples == 7 and (st.max_height, st.max_width) == (26, 32)
    builder = jd.prepared_builder("voc2012_segmentation", voc_data["data_dir"])
    path = os.path.join(os.fspath(builder.data_dir), "jaxseg_statistics_train_aug.json")
    assert os.path.exists(path)
    with open(path) as f:
        assert json.load(f)["class_pixel_counts"] == ref.tolist()
    again = jd.split_statistics("voc2012_segmentation", "train_aug", data_dir=voc_data["data_dir"], recompute=True)
    np.testing.assert_array_equal(again.image_class_presence, st.image_class_presence)


def test_train_and_eval_iterators_on_voc(voc_data):
    from configs import common

    voc = common.data_config("voc2012_segmentation")
    location = dict(name=voc.name, data_dir=voc_data["data_dir"], manual_dir=voc_data["manual"])
    cfg = dict(location, split=voc.train_split, crop_size=(16, 16), scale_range=voc.scale_range,
               flip=voc.flip, mean=voc.mean, std=voc.std)
    it = jd.create_train_iterator(**cfg, global_batch_size=4, seed=0, process_index=0, process_count=1)
    b = next(it)
    assert b["image"].shape == (4, 16, 16, 3) and b["label"].shape == (4, 16, 16)
    assert set(np.unique(b["label"])) <= set(range(21)) | {255}
    again = next(jd.create_train_iterator(**cfg, global_batch_size=4, seed=0, process_index=0, process_count=1))
    np.testing.assert_array_equal(b["image"], again["image"])
    eb = next(jd.create_train_iterator(**cfg, equibatch=True, global_batch_size=4, seed=0, process_index=0,
                                       process_count=1))
    sched = jd.pipeline.make_schedule(**location, split=voc.train_split, equibatch=True, seed=0)
    for j in range(4):
        assert (eb["label"][j] == sched(j)[1]).any()
    batches = list(jd.create_eval_iterator(**location, split=voc.eval_split, pad_size=(32, 32), mean=voc.mean,
                                           std=voc.std, global_batch_size=2, process_index=0, process_count=1))
    assert len(batches) == 2
    mask = np.concatenate([x["example_mask"] for x in batches])
    np.testing.assert_array_equal(mask, [True, True, True, False])
    sizes = np.concatenate([x["size"] for x in batches])
    labels = np.concatenate([x["label"] for x in batches])
    els = list(jd.get_dataset("voc2012_segmentation", "val", data_dir=voc_data["data_dir"]).as_numpy_iterator())
    for k, e in enumerate(els):
        h, w = e["label"].shape
        assert tuple(sizes[k]) == (h, w)
        np.testing.assert_array_equal(labels[k, :h, :w], e["label"])
        assert (labels[k, h:] == 255).all() and (labels[k, :, w:] == 255).all()


def test_missing_archive_names_file_and_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        jd.get_dataset("voc2012_segmentation", "val", data_dir=str(tmp_path / "data"), manual_dir=str(manual))
    assert "VOCtrainval_11-May-2012.tar" in str(e.value) and str(manual) in str(e.value)
    assert "benchmark.tgz" in str(e.value)


def _rewrite_member(manual, member, data):
    import tarfile

    path = os.path.join(manual, voc.VOC_ARCHIVE)
    with tarfile.open(path) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    members[member] = data
    with tarfile.open(path, "w") as t:
        for name, d in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(d)
            t.addfile(info, io.BytesIO(d))


SMALL = dict(voc_train=["a1", "a2"], voc_val=["b1"], sbd_train=["c1"], sbd_val=["a2"])


def test_corrupt_image_names_the_file(tmp_path):
    manual = str(tmp_path / "manual")
    testing.write_voc_sbd(manual, size=(12, 12), **SMALL)
    _rewrite_member(manual, f"{voc.VOC_FOLDER}/JPEGImages/a2.jpg", b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"Corrupt image .*JPEGImages/a2\.jpg"):
        jd.get_dataset("voc2012_segmentation", "train", data_dir=str(tmp_path / "data"), manual_dir=manual)


def test_out_of_range_label_names_file_and_value(tmp_path):
    manual = str(tmp_path / "manual")
    testing.write_voc_sbd(manual, size=(12, 12), **SMALL)
    bad = np.zeros((12, 12), np.uint8)
    bad[3, 4] = 42
    _rewrite_member(manual, f"{voc.VOC_FOLDER}/SegmentationClass/b1.png", testing.encode_png(bad, palette=True))
    with pytest.raises(ValueError, match=r"SegmentationClass/b1\.png: label value 42"):
        jd.get_dataset("voc2012_segmentation", "val", data_dir=str(tmp_path / "data"), manual_dir=manual)


def test_sbd_out_of_range_label(tmp_path):
    import scipy.io

    with pytest.raises(ValueError, match=r"x\.mat: label value 30"):
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"GTcls": {"Segmentation": np.full((3, 3), 30, np.uint8)}})
        voc.decode_sbd_label(buf.getvalue(), "cls/x.mat")


# ----------------------------------------------------------------------------------------------
# The image-only test split (VOC2012test.tar)

TEST_IDS = ["2008_000001", "2008_000004", "2009_000012", "2010_000005", "2011_000009"]


def test_test_split_reads_voc2012test_tar(tmp_path):
    manual = str(tmp_path / "manual")
    jpegs = testing.write_voc_test(manual, ids=TEST_IDS, size=[(20, 30), (26, 18)])
    data_dir = str(tmp_path / "data")
    # No trainval or SBD archive: the test split needs only its own.
    ds = jd.get_dataset("voc2012_segmentation", "test", data_dir=data_dir, manual_dir=manual)
    els = [e for e in ds.as_numpy_iterator()]
    assert sorted(e["id"].decode() for e in els) == TEST_IDS
    for e in els:
        np.testing.assert_array_equal(e["image"], tf.io.decode_jpeg(jpegs[e["id"].decode()]).numpy())
        assert e["label"].shape == e["image"].shape[:2] and (e["label"] == 255).all()
    assert jd.get_source("voc2012_segmentation", "test", data_dir=data_dir).has_labels is False
    info = jd.dataset_info("voc2012_segmentation")
    assert info.splits["test"] == 1456 and info.image_only_splits == ("test",)
    st = jd.split_statistics("voc2012_segmentation", "test", data_dir=data_dir)
    assert (st.max_height, st.max_width) == (26, 30) and st.class_pixel_counts.sum() == 0
    batches = list(jd.create_eval_iterator(name="voc2012_segmentation", split="test", data_dir=data_dir,
                                           global_batch_size=2, process_index=0, process_count=1))
    ids = [i.decode() for i in np.concatenate([b["id"] for b in batches])]
    assert ids == [e["id"].decode() for e in els] + [""]  # in source order, one filler
    np.testing.assert_array_equal(np.concatenate([b["example_mask"] for b in batches]), [1, 1, 1, 1, 1, 0])
    assert all((b["label"] == 255).all() for b in batches)


def test_test_split_from_the_extracted_folder_next_to_trainval(tmp_path):
    manual = str(tmp_path / "manual")
    testing.write_voc_sbd(manual, size=(12, 12), archive=False, **SMALL)  # VOCdevkit/VOC2012/
    data_dir = str(tmp_path / "data")
    with pytest.raises(FileNotFoundError) as e:  # the trainval folder has no test list
        jd.get_dataset("voc2012_segmentation", "test", data_dir=data_dir, manual_dir=manual)
    assert "VOC2012test.tar" in str(e.value) and manual in str(e.value) and "test split" in str(e.value)
    testing.write_voc_test(manual, ids=TEST_IDS[:2], size=(10, 14), archive=False)  # extracted there
    els = list(jd.get_dataset("voc2012_segmentation", "test", data_dir=data_dir, manual_dir=manual)
               .as_numpy_iterator())
    assert sorted(e["id"].decode() for e in els) == TEST_IDS[:2]
    # the labelled splits are unaffected
    val = list(jd.get_dataset("voc2012_segmentation", "val", data_dir=data_dir, manual_dir=manual)
               .as_numpy_iterator())
    assert sorted(e["id"].decode() for e in val) == SMALL["voc_val"]


def test_corrupt_test_image_names_the_file(tmp_path):
    manual = tmp_path / "manual"
    testing.write_voc_test(str(manual), ids=TEST_IDS[:2], size=(10, 14), archive=False)
    (manual / voc.VOC_FOLDER / "JPEGImages" / f"{TEST_IDS[1]}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(jd.DataError, match=rf"Corrupt image .*JPEGImages/{TEST_IDS[1]}\.jpg"):
        jd.get_dataset("voc2012_segmentation", "test", data_dir=str(tmp_path / "data"), manual_dir=str(manual))


# ----------------------------------------------------------------------------------------------
# Every bad file is named while the dataset is prepared (before any step): SBD as VOC


def _sbd_case(tmp_path, member, data):
    """``SMALL`` extracted, ``member`` (relative to the manual directory) replaced by ``data``."""
    manual = tmp_path / "manual"
    testing.write_voc_sbd(str(manual), size=(12, 12), archive=False, **SMALL)
    if data is None:
        (manual / member).unlink()
    else:
        (manual / member).write_bytes(data)
    return dict(data_dir=str(tmp_path / "data"), manual_dir=str(manual))


def _mat(seg):
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": {"Segmentation": seg}})
    return buf.getvalue()


@pytest.mark.parametrize("case", ["corrupt", "bad_value", "size_mismatch", "missing"])
def test_sbd_annotation_errors_name_the_file(tmp_path, case):
    c1 = f"{voc.SBD_FOLDER}/cls/c1.mat"  # an SBD-only id of train_aug
    data = {"corrupt": b"MATLAB 5.0 MAT-file, truncated", "bad_value": _mat(np.full((12, 12), 30, np.uint8)),
            "size_mismatch": _mat(np.zeros((10, 12), np.uint8)), "missing": None}[case]
    where = _sbd_case(tmp_path, c1, data)
    error, pattern = {
        "corrupt": (jd.DataError, r"Corrupt SBD annotation .*cls/c1\.mat"),
        "bad_value": (jd.DataError, r"cls/c1\.mat: label value 30"),
        "size_mismatch": (jd.DataError, r"JPEGImages/c1\.jpg: image size \(12, 12\) differs from its label's "
                                        r"size \(10, 12\) \(.*cls/c1\.mat\)"),
        "missing": (FileNotFoundError, r"No annotation for image 'c1': expected .*SegmentationClass/c1\.png "
                                       r"or .*cls/c1\.mat"),
    }[case]
    with pytest.raises(error, match=pattern):
        jd.get_dataset("voc2012_segmentation", "train_aug", **where)


def test_voc_size_mismatch_and_missing_image_name_the_files(tmp_path):
    label = f"{voc.VOC_FOLDER}/SegmentationClass/b1.png"
    where = _sbd_case(tmp_path, label, testing.encode_png(np.zeros((12, 11), np.uint8), palette=True))
    with pytest.raises(jd.DataError, match=r"JPEGImages/b1\.jpg: image size \(12, 12\) differs from its "
                                           r"label's size \(12, 11\) \(.*SegmentationClass/b1\.png\)"):
        jd.get_dataset("voc2012_segmentation", "val", **where)
    where = _sbd_case(tmp_path / "2", f"{voc.VOC_FOLDER}/JPEGImages/b1.jpg", None)
    with pytest.raises(FileNotFoundError, match=r"Missing file .*JPEGImages/b1\.jpg"):
        jd.get_dataset("voc2012_segmentation", "val", **where)
