"""Fig. 3b of the Lovász-Softmax paper (Berman et al., CVPR 2018, Sec. 4.1): the paper's claim on
the default seed, a float64 NumPy reference of the four curves, and the program's two files."""

import json
import os

import numpy as np
import pytest

from experiments import lovasz_fig3b


@pytest.fixture(scope="module")
def curves():
  return lovasz_fig3b.fig3b_curves(seed=0)


@pytest.fixture(scope="module")
def circles_data():
  from jaxseg.data.synthetic import circles
  return circles(seed=0, num_images=10, image_size=50)


# ----------------------------------------------------------------------------------------------
# float64 NumPy reference, written from the formulas (one image at a time)
# ----------------------------------------------------------------------------------------------


def _jaccard_loss(scores, gt):
  predicted = scores > 0
  union = np.count_nonzero(predicted | gt)
  return 0.0 if union == 0 else 1.0 - np.count_nonzero(predicted & gt) / union


def _lovasz_hinge(scores, gt):
  """Eq. (9)-(10): hinge errors sorted decreasingly, dot the increments g_k of the Jaccard loss of
  the first k sorted pixels taken as mispredicted."""
  signs = np.where(gt, 1.0, -1.0)
  errors = np.maximum(0.0, 1.0 - signs * scores)
  order = np.argsort(-errors, kind="stable")
  fg = gt[order].astype(np.float64)
  p = fg.sum()
  # Mispredicting the first k sorted pixels: foreground missed m_k, background added k - m_k.
  missed = np.cumsum(fg)
  added = np.arange(1, fg.size + 1) - missed
  loss_k = 1.0 - (p - missed) / (p + added)  # Jaccard loss of the set of the first k pixels
  increments = np.diff(np.concatenate([[0.0], loss_k]))
  return float(errors[order] @ increments)


def _reference(feature, label, bias):
  feature = np.asarray(feature, np.float64)
  gt = np.asarray(label) == 1
  scores = feature + bias
  y = gt.astype(np.float64)
  jaccard = np.mean([_jaccard_loss(s, g) for s, g in zip(scores, gt)])
  lovasz = np.mean([_lovasz_hinge(s.ravel(), g.ravel()) for s, g in zip(scores, gt)])
  hinge = np.mean(np.maximum(0.0, 1.0 - (2.0 * y - 1.0) * scores))
  # -[y log σ(s) + (1 - y) log(1 - σ(s))] = y log(1 + e^-s) + (1 - y) log(1 + e^s)
  cross_entropy = np.mean(y * np.logaddexp(0.0, -scores) + (1.0 - y) * np.logaddexp(0.0, scores))
  return {"jaccard": jaccard, "lovasz_hinge": lovasz, "hinge": hinge,
          "cross_entropy": cross_entropy}


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_grid_and_shapes(curves):
  np.testing.assert_allclose(curves["bias"], -3.0 + 0.025 * np.arange(241), atol=1e-12)
  for key in lovasz_fig3b.CURVES:
    assert curves[key].shape == (241,) and curves[key].dtype == np.float64
    best = curves["minimisers"][key]
    assert best["loss"] == curves[key].min() and best["bias"] == curves["bias"][best["index"]]


def test_paper_claim_on_default_seed(curves):
  """Sec. 4.1: "only the Lovász hinge efficiently captures the absolute minimum of the Jaccard
  loss". On seed 0 (float32): Jaccard argmin b = -0.15, Lovász hinge -0.325, hinge -1.2,
  cross-entropy -1.35. The Lovász hinge's minimiser is 0.175 from the Jaccard's, not within 0.1:
  with 400 images (less noise in the Jaccard curve) the gap is 0.2 (-0.25 vs -0.45), so it is a
  small systematic offset of the per-image Lovász hinge, not a bad seed. What holds is that it is
  several times closer than the hinge's and cross-entropy's minimisers (> 1 away), and that the
  Jaccard loss at its minimiser is within 0.01 of the minimum (> 0.1 worse at theirs)."""
  best = {key: curves["minimisers"][key] for key in lovasz_fig3b.CURVES}
  b_jaccard = best["jaccard"]["bias"]
  gap = {key: abs(best[key]["bias"] - b_jaccard) for key in ("lovasz_hinge", "hinge",
                                                             "cross_entropy")}
  assert gap["hinge"] > 0.5 and gap["cross_entropy"] > 0.5, gap
  assert gap["lovasz_hinge"] <= 0.2, gap
  assert gap["lovasz_hinge"] < 0.25 * min(gap["hinge"], gap["cross_entropy"]), gap
  j_min = best["jaccard"]["loss"]
  assert best["lovasz_hinge"]["jaccard_at_bias"] - j_min < 0.01
  assert best["hinge"]["jaccard_at_bias"] - j_min > 0.1
  assert best["cross_entropy"]["jaccard_at_bias"] - j_min > 0.1


@pytest.mark.parametrize("bias", [-2.0, -1.2, -0.325, -0.15, 0.0, 1.5])
def test_curves_match_numpy_reference(curves, circles_data, bias):
  index = int(np.argmin(np.abs(curves["bias"] - bias)))
  expected = _reference(circles_data.feature, circles_data.label, curves["bias"][index])
  for key, value in expected.items():
    np.testing.assert_allclose(curves[key][index], value, rtol=1e-5, atol=1e-5, err_msg=key)


def test_program_writes_png_and_json(tmp_path, capsys):
  lovasz_fig3b.main(["--out", str(tmp_path / "figs"), "--seed", "0"])
  png = tmp_path / "figs" / "fig3b.png"
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert 0 < os.path.getsize(png) < 150_000
  with open(tmp_path / "figs" / "fig3b_minimisers.json", encoding="utf-8") as f:
    record = json.load(f)
  assert record["seed"] == 0 and record["grid"]["num"] == 241
  assert set(record["minimisers"]) == set(lovasz_fig3b.CURVES)
  assert record["minimisers"]["jaccard"]["bias"] == pytest.approx(-0.15)
  out = capsys.readouterr().out
  assert "lovasz_hinge" in out and "argmin b" in out
