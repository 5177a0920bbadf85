"""A PyTorch Lovász-Softmax that follows the loops of the authors' reference implementation.

Written for the benchmarks (not a jaxseg dependency): one ``torch.sort`` per present class, the
increments as differences of Jaccard values (Algorithm 1 of the paper), void pixels filtered
out, and per image a Python loop over images. Logits are ``[B, C, H, W]`` as in PyTorch.
"""

from __future__ import annotations

import torch


def jaccard_increments(gt_sorted: torch.Tensor) -> torch.Tensor:
  """Algorithm 1: J[k] - J[k-1] along the ground truth sorted by decreasing error."""
  gts = gt_sorted.sum()
  intersection = gts - gt_sorted.cumsum(0)
  union = gts + (1.0 - gt_sorted).cumsum(0)
  jaccard = 1.0 - intersection / union
  if gt_sorted.numel() > 1:
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
  return jaccard


def lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes="present"):
  """probs [P, C] of valid pixels, labels [P]."""
  if probs.numel() == 0:
    return probs.sum() * 0.0
  num_classes = probs.shape[1]
  ids = range(num_classes) if classes in ("all", "present") else classes
  losses = []
  for c in ids:
    fg = (labels == c).float()
    if classes == "present" and fg.sum() == 0:
      continue
    errors = (fg - probs[:, c]).abs()
    errors_sorted, perm = torch.sort(errors, 0, descending=True)
    losses.append(torch.dot(errors_sorted, jaccard_increments(fg[perm])))
  if not losses:
    return probs.sum() * 0.0
  return torch.stack(losses).mean()


def _flatten(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int):
  num_classes = probs.shape[1]
  probs = probs.permute(0, 2, 3, 1).reshape(-1, num_classes)
  labels = labels.reshape(-1)
  keep = labels != ignore_index
  return probs[keep], labels[keep]


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, classes="present",
                   per_image=False, ignore_index=255):
  """logits [B, C, H, W], labels [B, H, W]."""
  probs = torch.softmax(logits, dim=1)
  if per_image:
    return torch.stack([
        lovasz_softmax_flat(*_flatten(p[None], l[None], ignore_index), classes)
        for p, l in zip(probs, labels)
    ]).mean()
  return lovasz_softmax_flat(*_flatten(probs, labels, ignore_index), classes)
