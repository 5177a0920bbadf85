"""Two PyTorch Lovász-Softmax losses for the benchmarks (not a jaxseg dependency).

* ``lovasz_softmax``: follows the loops of the authors' reference implementation: one
  ``torch.sort`` per present class, the increments as differences of Jaccard values (Algorithm 1
  of the paper), void pixels filtered out, and per image a Python loop over images.
* ``lovasz_softmax_vectorised``: the same loss with one batched ``torch.sort`` of all rows, as
  kornia's vectorised Lovász-Softmax does: ``[C, P]`` rows (batch-level, ``P = B H W``) or
  ``[B, C, H W]`` rows (per image), every row sorted whether its class is present or not, void
  pixels masked (zero error, no part in any count), not filtered, and no Python loop and no
  host synchronisation.

Both take logits ``[B, C, H, W]`` as in PyTorch and labels ``[B, H, W]``, and give the same value
(checked by benchmarks/bench_lovasz.py on every case it times).
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


def lovasz_softmax_vectorised(logits: torch.Tensor, labels: torch.Tensor, classes="present",
                              per_image=False, ignore_index=255):
  """logits [B, C, H, W], labels [B, H, W]; one batched sort, void pixels masked.

  ``classes`` is ``"present"`` or ``"all"`` (an absent class costs its largest error, as in the
  reference). Rows are ``[G, C, P]`` with one group (batch-level) or one group per image.
  """
  if classes not in ("present", "all"):
    raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
  batch, num_classes = logits.shape[:2]
  probs = torch.softmax(logits, dim=1).reshape(batch, num_classes, -1)     # [B, C, HW]
  labels = labels.reshape(batch, 1, -1)                                   # [B, 1, HW]
  if not per_image:
    probs = probs.permute(1, 0, 2).reshape(1, num_classes, -1)           # [1, C, B HW]
    labels = labels.reshape(1, 1, -1)
  valid = (labels != ignore_index).to(probs.dtype)                        # [G, 1, P]
  classes_ids = torch.arange(num_classes, device=logits.device).view(1, -1, 1)
  fg = (labels == classes_ids).to(probs.dtype) * valid                    # [G, C, P]
  errors = (fg - probs).abs() * valid
  errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)
  fg_sorted = torch.gather(fg, -1, perm)
  valid_sorted = torch.gather(valid.expand_as(fg), -1, perm)
  gts = fg.sum(-1, keepdim=True)                                          # [G, C, 1]
  intersection = gts - fg_sorted.cumsum(-1)
  union = gts + ((1.0 - fg_sorted) * valid_sorted).cumsum(-1)
  # A void pixel changes neither count, so its increment is 0 wherever the sort put it; before
  # the first valid pixel of a row without ground truth the union is 0 and the Jaccard loss 0.
  jaccard = torch.where(union > 0, 1.0 - intersection / union.clamp(min=1.0),
                        torch.zeros_like(union))
  increments = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
  losses = (errors_sorted * increments).sum(-1)                           # [G, C]
  has_valid = valid.sum(-1) > 0                                           # [G, 1]
  selected = (gts[..., 0] > 0) if classes == "present" else has_valid.expand_as(losses)
  selected = (selected & has_valid).to(losses.dtype)
  per_group = (losses * selected).sum(-1) / selected.sum(-1).clamp(min=1.0)
  return per_group.mean()
