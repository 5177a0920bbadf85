"""Float64 NumPy references written from Algorithm 1 of the Lovász-Softmax paper (CVPR 2018).

Deliberately plain: Python loops over images and classes, the increments as differences of
Jaccard values (Algorithm 1 as printed), only valid pixels kept (filtered, not masked). Used by
the tests as an independent computation.
"""

from __future__ import annotations

import numpy as np


def lovasz_grad(gt_sorted):
  """Algorithm 1: increments of the Jaccard loss along the sorted ground truth (float64)."""
  gt_sorted = np.asarray(gt_sorted, np.float64)
  gts = gt_sorted.sum()
  intersection = gts - np.cumsum(gt_sorted)
  union = gts + np.cumsum(1.0 - gt_sorted)
  jaccard = 1.0 - intersection / union
  jaccard[1:] = jaccard[1:] - jaccard[:-1]
  return jaccard


def extension(errors, gt):
  """Lovász extension of the Jaccard loss of one row of valid pixels (0 for an empty row)."""
  errors = np.asarray(errors, np.float64)
  if errors.size == 0:
    return 0.0
  order = np.argsort(-errors, kind="stable")
  return float(np.dot(errors[order], lovasz_grad(np.asarray(gt)[order])))


def weighted_jaccard_set_loss(mispredicted, gt, weights):
  """Δ_w(M) = w(M) / (w(G) + w(M \\ G)), with 0/0 = 0."""
  m, g = np.asarray(mispredicted, bool), np.asarray(gt, bool)
  w = np.asarray(weights, np.float64)
  den = w[g].sum() + w[m & ~g].sum()
  return 0.0 if den == 0 else w[m].sum() / den


def softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def lovasz_softmax_flat(probs, labels, classes="present", class_weights=None):
  """probs [P, C] float64 of valid pixels, labels [P]."""
  if probs.shape[0] == 0:
    return 0.0
  num_classes = probs.shape[1]
  ids = range(num_classes) if classes in ("all", "present") else classes
  losses, weights = [], []
  for c in ids:
    fg = (labels == c).astype(np.float64)
    if classes == "present" and fg.sum() == 0:
      continue
    losses.append(extension(np.abs(fg - probs[:, c]), fg))
    weights.append(1.0 if class_weights is None else class_weights[c])
  if not losses or sum(weights) == 0:
    return 0.0
  return float(np.dot(losses, weights) / np.sum(weights))


def lovasz_softmax(logits, labels, classes="present", per_image=False, ignore_index=255,
                   class_weights=None, from_logits=True):
  """logits [B, H, W, C], labels [B, H, W]."""
  probs = softmax(logits) if from_logits else np.asarray(logits, np.float64)
  num_classes = probs.shape[-1]

  def flat(p, l):
    p, l = p.reshape(-1, num_classes), l.reshape(-1)
    keep = l != ignore_index
    return p[keep], l[keep]

  if per_image:
    return float(np.mean([lovasz_softmax_flat(*flat(p, l), classes, class_weights)
                          for p, l in zip(probs, labels)]))
  return lovasz_softmax_flat(*flat(probs, labels), classes, class_weights)


def lovasz_hinge(logits, labels, per_image=True, ignore_index=255):
  """logits [B, H, W], labels [B, H, W] in {0, 1, ignore}."""

  def flat_loss(lg, lb):
    lg, lb = lg.reshape(-1).astype(np.float64), lb.reshape(-1)
    keep = lb != ignore_index
    lg, lb = lg[keep], lb[keep].astype(np.float64)
    if lg.size == 0:
      return 0.0
    errors = 1.0 - lg * (2.0 * lb - 1.0)
    order = np.argsort(-errors, kind="stable")
    return float(np.dot(np.maximum(errors[order], 0.0), lovasz_grad(lb[order])))

  if per_image:
    return float(np.mean([flat_loss(lg, lb) for lg, lb in zip(logits, labels)]))
  return flat_loss(logits, labels)


def numerical_gradient(fn, x, eps=1e-6):
  """Central finite differences of a float64 function of an array."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
  for i in range(flat_x.size):
    old = flat_x[i]
    flat_x[i] = old + eps
    up = fn(x)
    flat_x[i] = old - eps
    down = fn(x)
    flat_x[i] = old
    flat_g[i] = (up - down) / (2 * eps)
  return grad


def voc_like_labels(rng, b, h, w, c, void_border=True):
  """Background and one to three rectangles of random classes per image; void (255) in the
  first row and the last column with ``void_border``."""
  labels = np.zeros((b, h, w), np.int32)
  for i in range(b):
    for _ in range(rng.integers(1, 4)):
      cls = rng.integers(1, c)
      y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
      labels[i, y:y + rng.integers(2, h // 2 + 3), x:x + rng.integers(2, w // 2 + 3)] = cls
  if void_border:
    labels[:, 0, :] = 255
    labels[:, :, -1] = 255
  return labels
