"""Class-balanced batches (binary per-class fine-tuning, Berman et al. 2018 Sec. 4): every global
batch holds exactly round(f * B) crops containing the class, determinism, restart, host shards."""

import importlib.util
import math
import os
import warnings

import numpy as np
import pytest

import jaxseg.data as jd
from jaxseg.data import class_balanced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = {"image_size": 32, "num_train": 9, "num_validation": 5, "seed": 0}


def _presence():
    return jd.split_statistics("shapes", "train", **OPTS).image_class_presence


def _class_with_both(presence):
    """A class held by some but not all training images (3 of 9 for these options)."""
    counts = presence.sum(0)
    ok = np.flatnonzero((counts > 1) & (counts < presence.shape[0] - 1))
    assert ok.size, counts
    return int(ok[np.argmin(counts[ok])])


def _cfg(class_id, fraction=0.5, **kw):
    """Keyword arguments of the class-balanced ``shapes`` training iterator."""
    return dict(dict(name="shapes", split="train", options=dict(OPTS), crop_size=(8, 8),
                     scale_range=(0.5, 1.5), flip=True, mean=(127.5,) * 3, std=(64.0,) * 3,
                     class_balanced_class=class_id, class_balanced_fraction=fraction), **kw)


def _schedule_args(cfg):
    keys = ("name", "split", "options", "equibatch", "class_balanced_class", "class_balanced_fraction")
    return {k: cfg[k] for k in keys if k in cfg}


def _batches(cfg, n, **kw):
    it = jd.create_train_iterator(**cfg, **kw)
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def run():
    """One uninterrupted single-host run, shared by the pipeline tests."""
    presence = _presence()
    c = _class_with_both(presence)
    cfg = _cfg(c)
    B, steps, seed = 6, 5, 3
    batches = _batches(cfg, steps, global_batch_size=B, seed=seed, process_index=0, process_count=1)
    return dict(presence=presence, c=c, cfg=cfg, B=B, seed=seed, batches=batches)


def test_num_positives_is_fraction_of_batch_rounded_half_up():
    for B in range(1, 13):
        for f in (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.75, 1.0):
            k = class_balanced.num_positives(B, f)
            assert 0 <= k <= B and abs(k - f * B) <= 0.5
            if abs(f * B - math.floor(f * B) - 0.5) > 1e-9:
                assert k == round(f * B)
    assert class_balanced.num_positives(5, 0.5) == 3 and class_balanced.num_positives(10, 0.5) == 5
    with pytest.raises(ValueError, match="fraction"):
        class_balanced.num_positives(4, 1.5)


def test_every_batch_has_exactly_k_crops_with_the_class(run):
    c, B, presence = run["c"], run["B"], run["presence"]
    schedule = jd.pipeline.make_schedule(**_schedule_args(run["cfg"]), seed=run["seed"],
                                         global_batch_size=B)
    assert isinstance(schedule, jd.ClassBalancedSchedule) and schedule.num_positives == 3
    for k, b in enumerate(run["batches"]):
        has = (b["label"] == c).any(axis=(1, 2))
        assert has.sum() == 3, (k, has)
        for q in range(B):
            index, target = schedule(k * B + q)
            assert schedule.is_positive(k * B + q) == bool(has[q])
            # Positives: images with the class, crop constrained to it; negatives: images without.
            assert presence[index, c] == bool(has[q]) and target == (c if has[q] else -1)
        assert set(np.unique(b["label"])) <= set(range(8)) | {255}


def test_other_fractions_on_the_crops():
    presence = _presence()
    c = _class_with_both(presence)
    for B, f, k in ((4, 0.25, 1), (3, 1.0, 3)):
        for b in _batches(_cfg(c, f), 2, global_batch_size=B, seed=1, process_index=0, process_count=1):
            assert (b["label"] == c).any(axis=(1, 2)).sum() == k


def test_deterministic_and_seed_dependent(run):
    again = _batches(run["cfg"], 3, global_batch_size=run["B"], seed=run["seed"], process_index=0,
                     process_count=1)
    for x, y in zip(run["batches"], again):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    other = _batches(run["cfg"], 3, global_batch_size=run["B"], seed=run["seed"] + 1, process_index=0,
                     process_count=1)
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(run["batches"], other))


def test_restart_at_step_reproduces_uninterrupted_run(run):
    resumed = _batches(run["cfg"], 2, global_batch_size=run["B"], seed=run["seed"], start_step=3,
                       process_index=0, process_count=1)
    for x, y in zip(run["batches"][3:], resumed):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_hosts_read_disjoint_slices_of_the_same_global_batch(run):
    kw = dict(global_batch_size=run["B"], seed=run["seed"], process_count=2)
    h0 = _batches(run["cfg"], 3, process_index=0, **kw)
    h1 = _batches(run["cfg"], 3, process_index=1, **kw)
    for g, a, b in zip(run["batches"], h0, h1):
        assert a["label"].shape[0] == b["label"].shape[0] == run["B"] // 2
        np.testing.assert_array_equal(np.concatenate([a["label"], b["label"]]), g["label"])
        np.testing.assert_array_equal(np.concatenate([a["image"], b["image"]]), g["image"])


def test_schedule_pools_epochs_and_positions():
    presence = _presence()
    c = _class_with_both(presence)
    pos, neg = np.flatnonzero(presence[:, c]), np.flatnonzero(~presence[:, c])
    B, seed = 5, 7
    s = jd.ClassBalancedSchedule(presence, c, B, seed, fraction=0.4)
    k = s.num_positives
    assert k == 2
    steps = 3 * len(pos) * len(neg)
    samples = [s(g) for g in range(steps * B)]
    positives, negatives, positions = [], [], np.zeros(B, int)
    for step in range(steps):
        batch = samples[step * B:(step + 1) * B]
        flags = [t == c for _, t in batch]
        assert sum(flags) == k
        assert all(t in (c, -1) for _, t in batch)
        ranks = s.ranks(step)
        assert sorted(ranks.tolist()) == list(range(B))
        # Rank order inside the batch: the r-th positive is positive sample step * k + r.
        positives += [batch[q][0] for q in np.argsort(ranks)[:k]]
        negatives += [batch[q][0] for q in np.argsort(ranks)[k:]]
        positions += np.asarray(flags)
    assert set(positives) <= set(pos.tolist()) and set(negatives) <= set(neg.tolist())
    # Epoch-wise permutations of each pool: every positive (negative) image once per epoch.
    for stream, pool in ((positives, pos), (negatives, neg)):
        for e in range(len(stream) // len(pool)):
            assert sorted(stream[e * len(pool):(e + 1) * len(pool)]) == pool.tolist()
    assert (positions > 0).all()  # positives move around the batch (and across host shards)
    # Pure function of (seed, g): a fresh schedule queried in another order agrees.
    fresh = jd.ClassBalancedSchedule(presence, c, B, seed, fraction=0.4)
    for g in np.random.default_rng(0).permutation(len(samples))[:40]:
        assert fresh(int(g)) == samples[g]


def test_schedule_errors_and_empty_pools():
    presence = _presence()
    with pytest.raises(ValueError, match="class_id"):
        jd.ClassBalancedSchedule(presence, presence.shape[1], 4, 0)
    with pytest.raises(ValueError, match="presence"):
        jd.ClassBalancedSchedule(np.zeros((0, 3), bool), 1, 4, 0)
    with pytest.raises(ValueError, match="sample number"):
        jd.ClassBalancedSchedule(presence, 1, 4, 0)(-1)
    # Class 0 (background) is in every image: no negative pool; an absent class: no positives.
    with pytest.warns(RuntimeWarning, match="every training image contains class 0"):
        s = jd.ClassBalancedSchedule(presence, 0, 4, 0)
    assert all(s(g)[1] == 0 for g in range(8))
    absent = np.zeros((4, 3), bool)
    absent[:, 0] = True
    with pytest.warns(RuntimeWarning, match="no training image contains class 2"):
        s = jd.ClassBalancedSchedule(absent, 2, 4, 0)
    assert all(s(g)[1] == -1 for g in range(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jd.ClassBalancedSchedule(presence, _class_with_both(presence), 4, 0, fraction=0.0)


def test_config_fields():
    from configs import common

    cfg = common.data_config("voc2012_segmentation")
    assert cfg.class_balanced.class_id == -1 and cfg.class_balanced.fraction == 0.5
    assert isinstance(jd.pipeline.make_schedule(**_schedule_args(_cfg(-1)), seed=0), jd.EpochSchedule)
    bad = _cfg(1, equibatch=True)
    with pytest.raises(ValueError, match="only one"):
        jd.pipeline.make_schedule(**_schedule_args(bad), seed=0, global_batch_size=4)
    with pytest.raises(ValueError, match="global_batch_size"):
        jd.pipeline.make_schedule(**_schedule_args(_cfg(1)), seed=0)
    spec = importlib.util.spec_from_file_location(
        "cfg_voc_binary", os.path.join(ROOT, "configs", "voc_binary_lovasz_hinge.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    b = module.get_config("7")
    assert not b.data.equibatch
    assert (b.data.class_balanced.class_id, b.data.class_balanced.fraction, b.binary_class) == (7, 0.5, 7)


def test_binary_labels_of_the_pipeline_on_balanced_batches(run):
    """The pipeline's binary labels (``binary_class``, as the trainer passes it) keep the balance:
    k images with foreground 1, labels in {0, 1, 255}, void where the multi-class label is void."""
    binary = _batches(dict(run["cfg"], binary_class=run["c"]), len(run["batches"]),
                      global_batch_size=run["B"], seed=run["seed"], process_index=0, process_count=1)
    for b, y in zip(run["batches"], (x["label"] for x in binary)):
        assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1, 255}
        np.testing.assert_array_equal(y == 255, b["label"] == 255)
        np.testing.assert_array_equal(y == 1, b["label"] == run["c"])
        assert (y == 1).any(axis=(1, 2)).sum() == 3
