"""Cityscapes builder on tiny zips with the official names: train ids, instances, statistics."""

import numpy as np
import pytest

import jaxseg.data as jd
from jaxseg.data import cityscapes, testing

FRAMES = {
    "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
    "val": ["frankfurt_000000_000294", "lindau_000000_000019"],
}

# labelId -> trainId, typed from the cityscapesScripts table (helpers/labels.py), independently of
# jaxseg.data.cityscapes: 19 evaluated classes, everything else void.
REFERENCE_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def _ref_train_ids(label_ids):
    out = np.full(label_ids.shape, 255, np.uint8)
    for lid, tid in REFERENCE_TRAIN_IDS.items():
        out[label_ids == lid] = tid
    return out


@pytest.fixture(scope="module")
def cs_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    manual = str(root / "manual")
    truth = testing.write_cityscapes(manual, frames=FRAMES, size=(16, 32), archive=True)
    return dict(manual=manual, data_dir=str(root / "data"), truth=truth)


def _elements(cs_data, split):
    ds = jd.get_dataset("cityscapes", split, data_dir=cs_data["data_dir"], manual_dir=cs_data["manual"])
    return {e["id"].decode(): e for e in ds.as_numpy_iterator()}


def test_info_matches_official_table():
    info = jd.dataset_info("cityscapes")
    assert info.num_classes == 19 and info.ignore_index == 255
    assert info.class_names[:3] == ("road", "sidewalk", "building") and info.class_names[-1] == "bicycle"
    assert info.instance_classes == (11, 12, 13, 14, 15, 16, 17, 18)
    assert len(info.category_names) == 7 and info.class_to_category[0] == info.category_names.index("flat")
    for lid in range(34):
        assert cityscapes.LABEL_ID_TO_TRAIN_ID[lid] == REFERENCE_TRAIN_IDS.get(lid, 255)


def test_splits_labels_and_instances(cs_data):
    for split, stems in FRAMES.items():
        els = _elements(cs_data, split)
        assert set(els) == set(stems)
        for stem, e in els.items():
            ref = cs_data["truth"][stem]
            assert e["image"].shape == (16, 32, 3) and e["label"].dtype == np.uint8
            np.testing.assert_array_equal(e["label"], _ref_train_ids(ref["label_ids"]))
            assert e["instance"].dtype == np.int32
            np.testing.assert_array_equal(e["instance"], ref["instance"])


def test_folders_work_too(tmp_path):
    manual = str(tmp_path / "manual")
    truth = testing.write_cityscapes(manual, frames={"train": ["ulm_000000_000019"], "val": ["ulm_000001_000019"]},
                                     size=(8, 16), archive=False)
    (e,) = list(jd.get_dataset("cityscapes", "validation", data_dir=str(tmp_path / "d"), manual_dir=manual)
                .as_numpy_iterator())
    np.testing.assert_array_equal(e["label"], _ref_train_ids(truth["ulm_000001_000019"]["label_ids"]))


def test_statistics_and_mean_instance_sizes(cs_data):
    st = jd.split_statistics("cityscapes", "train", data_dir=cs_data["data_dir"])
    counts = np.zeros(19, np.int64)
    sizes = {c: [] for c in range(19)}
    for stem in FRAMES["train"]:
        ref = cs_data["truth"][stem]
        tid = _ref_train_ids(ref["label_ids"])
        counts += np.bincount(tid[tid != 255].ravel(), minlength=19)
        inst = ref["instance"]
        for v in np.unique(inst[inst >= 1000]):  # brute force: one instance per distinct id
            c = REFERENCE_TRAIN_IDS.get(int(v) // 1000)
            if c is not None:
                sizes[c].append(int((inst == v).sum()))
    np.testing.assert_array_equal(st.class_pixel_counts, counts)
    ref_mean = np.array([np.mean(sizes[c]) if sizes[c] else np.nan for c in range(19)])
    np.testing.assert_allclose(st.mean_instance_sizes, ref_mean)
    assert np.isnan(st.mean_instance_sizes[:11]).all()  # stuff classes have no instances
    np.testing.assert_array_equal(st.instance_counts, [len(sizes[c]) for c in range(19)])


def test_eval_iterator_has_instances(cs_data):
    (b,) = list(jd.create_eval_iterator(name="cityscapes", split="val", data_dir=cs_data["data_dir"],
                                        manual_dir=cs_data["manual"], global_batch_size=2, process_index=0,
                                        process_count=1))
    assert b["instance"].shape == (2, 16, 32) and b["instance"].dtype == np.int32
    assert b["example_mask"].all()


def test_missing_zip_and_bad_label_id(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        jd.get_dataset("cityscapes", "train", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    assert "leftImg8bit_trainvaltest.zip" in str(e.value) and "gtFine_trainvaltest.zip" in str(e.value)
    assert str(manual) in str(e.value)
    with pytest.raises(ValueError, match=r"x_gtFine_labelIds\.png: label value 40"):
        cityscapes.labelids_to_trainids(np.array([[7, 40]], np.uint8), "x_gtFine_labelIds.png")


def test_builder_errors_name_the_file(tmp_path):
    frames = {"train": ["ulm_000000_000019"], "val": ["ulm_000001_000019"]}
    manual = tmp_path / "manual"
    testing.write_cityscapes(str(manual), frames=frames, size=(8, 16), archive=False)
    bad = np.full((8, 16), 7, np.uint8)
    bad[2, 3] = 40
    lab = manual / "gtFine" / "val" / "ulm" / "ulm_000001_000019_gtFine_labelIds.png"
    lab.write_bytes(testing.encode_png(bad))
    with pytest.raises(ValueError, match=r"ulm_000001_000019_gtFine_labelIds\.png: label value 40"):
        jd.get_dataset("cityscapes", "val", data_dir=str(tmp_path / "d1"), manual_dir=str(manual))
    lab.write_bytes(testing.encode_png(np.full((8, 16), 7, np.uint8)))
    img = manual / "leftImg8bit" / "train" / "ulm" / "ulm_000000_000019_leftImg8bit.png"
    img.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match=r"Corrupt image .*ulm_000000_000019_leftImg8bit\.png"):
        jd.get_dataset("cityscapes", "train", data_dir=str(tmp_path / "d2"), manual_dir=str(manual))


# ----------------------------------------------------------------------------------------------
# The image-only test split (leftImg8bit/test of the images archive)


def test_test_split_reads_the_images_archive_only(tmp_path):
    manual = tmp_path / "manual"
    frames = {"train": ["ulm_000000_000019"], "test": ["berlin_000000_000019", "bonn_000001_000019",
                                                       "mainz_000002_000019"]}
    truth = testing.write_cityscapes(str(manual), frames=frames, size=(8, 16), archive=True)
    (manual / cityscapes.LABELS_ARCHIVE).unlink()  # the test split needs no labels archive
    data_dir = str(tmp_path / "d")
    els = list(jd.get_dataset("cityscapes", "test", data_dir=data_dir, manual_dir=str(manual)).as_numpy_iterator())
    assert sorted(e["id"].decode() for e in els) == frames["test"]
    for e in els:
        np.testing.assert_array_equal(e["image"], truth[e["id"].decode()]["image"])
        assert (e["label"] == 255).all() and e["label"].shape == (8, 16) and "instance" not in e
    source = jd.get_source("cityscapes", "test", data_dir=data_dir)
    assert source.has_labels is False and source.has_instances is False
    assert jd.dataset_info("cityscapes").splits["test"] == 1525
    (b,) = jd.create_eval_iterator(name="cityscapes", split="test", data_dir=data_dir, global_batch_size=4,
                                   process_index=0, process_count=1)
    assert sorted(i.decode() for i in b["id"]) == [""] + frames["test"] and "instance" not in b
    with pytest.raises(FileNotFoundError, match=r"gtFine_trainvaltest\.zip"):  # train needs the labels
        jd.get_dataset("cityscapes", "train", data_dir=data_dir, manual_dir=str(manual))


def test_train_id_to_label_id_inverts_the_official_table():
    for lid, tid in REFERENCE_TRAIN_IDS.items():
        assert cityscapes.TRAIN_ID_TO_LABEL_ID[tid] == lid
    ids = np.arange(19)
    np.testing.assert_array_equal(cityscapes.LABEL_ID_TO_TRAIN_ID[cityscapes.TRAIN_ID_TO_LABEL_ID[ids]], ids)


# ----------------------------------------------------------------------------------------------
# Every bad file is named while the dataset is prepared (before any step)

ULM = {"train": ["ulm_000000_000019"], "val": ["ulm_000001_000019"]}
GT = "gtFine/val/ulm/ulm_000001_000019_gtFine"


@pytest.mark.parametrize("case", ["image_size", "instance_size", "instance_value", "corrupt_label",
                                  "missing_label", "missing_instances"])
def test_label_file_errors_name_the_files(tmp_path, case):
    manual = tmp_path / "manual"
    testing.write_cityscapes(str(manual), frames=ULM, size=(8, 16), archive=False)
    member, data, error, pattern = {
        "image_size": ("leftImg8bit/val/ulm/ulm_000001_000019_leftImg8bit.png",
                       testing.encode_png(np.zeros((8, 12, 3), np.uint8)), jd.DataError,
                       r"ulm_000001_000019_leftImg8bit\.png: image size \(8, 12\) differs from its label's size "
                       r"\(8, 16\) \(.*ulm_000001_000019_gtFine_labelIds\.png\)"),
        "instance_size": (f"{GT}_instanceIds.png", testing.encode_png(np.zeros((7, 16), np.uint16)), jd.DataError,
                          r"_gtFine_instanceIds\.png: size \(7, 16\) differs from its labelIds' size \(8, 16\)"),
        "instance_value": (f"{GT}_instanceIds.png", testing.encode_png(np.full((8, 16), 40000, np.uint16)),
                           jd.DataError, r"_gtFine_instanceIds\.png: instance id 40000 is outside 0\.\.33999"),
        "corrupt_label": (f"{GT}_labelIds.png", b"\x89PNG truncated", jd.DataError,
                          r"Corrupt label image .*ulm_000001_000019_gtFine_labelIds\.png"),
        "missing_label": (f"{GT}_labelIds.png", None, FileNotFoundError,
                          r"No label for the image .*ulm_000001_000019_leftImg8bit\.png: expected "
                          r".*ulm_000001_000019_gtFine_labelIds\.png"),
        "missing_instances": (f"{GT}_instanceIds.png", None, FileNotFoundError,
                              r"No label for the image .*: expected .*ulm_000001_000019_gtFine_instanceIds\.png"),
    }[case]
    if data is None:
        (manual / member).unlink()
    else:
        (manual / member).write_bytes(data)
    with pytest.raises(error, match=pattern):
        jd.get_dataset("cityscapes", "val", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
