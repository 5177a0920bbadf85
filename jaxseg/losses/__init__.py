"""Loss functions for semantic segmentation, one module per family, and their registry.

Every loss is a pure function ``loss(logits, labels, *, ignore_index=255, ...) -> scalar``:
jittable, differentiable, with static shapes. ``build_loss(config)`` makes one (or a weighted sum)
from a config entry by name; ``available_losses()`` lists the names.

One input contract for all of them (``jaxseg/_validation.py``), checked at trace time: a wrong
dtype raises ``TypeError`` (logits that are not floating point, labels that are not integers,
bool included); a wrong rank or shape, or a bad static argument (``ignore_index`` not an int, an
unknown option), raises ``ValueError``; each message names the loss and the argument and says
what was expected. Multi-class logits are ``[B, H, W, C]`` (channels last), binary logits
``[B, H, W]`` or ``[B, H, W, 1]`` (every binary loss takes both), labels ``[B, H, W]``.
Label values are never checked (under ``jit`` they are not known): a label outside ``[0, C)``
(``{0, 1}`` for the binary losses) is void, in every loss, exactly as ``ignore_index`` is; the
data layer rejects such labels on the host where it reads them. An empty batch (``B``, ``H`` or
``W`` = 0, known from the static shape) gives 0 with a zero gradient, as a batch without a valid
pixel does. A NaN or infinite logit at a valid pixel makes the loss non-finite (a diverged run
shows in its loss); at a void pixel it reaches neither the loss nor the gradient (the logits are
set to 0 at void pixels before anything is computed from them). ``tests/test_bad_input.py``
and ``tests/test_fuzz_losses.py`` check all of this for every registered loss.
"""

from jaxseg.losses.classic import (binary_cross_entropy, binary_hinge_loss, cross_entropy,
                                   enet_class_weights, focal_loss, hinge_loss, soft_dice_loss,
                                   soft_jaccard_loss, tversky_loss)
from jaxseg.losses.extension import lovasz_extension
from jaxseg.losses.lovasz import lovasz_hinge, lovasz_sigmoid, lovasz_softmax
from jaxseg.losses.margin import margin_calibration_loss, margin_offsets
from jaxseg.losses.neuroiou import load_surrogate, neuroiou_features, neuroiou_loss
from jaxseg.losses.pixiou import distance_to_mask, pixiou_loss
from jaxseg.losses.registry import available_losses, build_loss, register_loss
from jaxseg.losses.sharded_lovasz import lovasz_softmax_all_to_all

__all__ = [
    "available_losses",
    "binary_cross_entropy",
    "binary_hinge_loss",
    "cross_entropy",
    "distance_to_mask",
    "enet_class_weights",
    "focal_loss",
    "hinge_loss",
    "load_surrogate",
    "soft_dice_loss",
    "soft_jaccard_loss",
    "tversky_loss",
    "build_loss",
    "lovasz_extension",
    "lovasz_hinge",
    "lovasz_sigmoid",
    "lovasz_softmax",
    "lovasz_softmax_all_to_all",
    "margin_calibration_loss",
    "margin_offsets",
    "neuroiou_features",
    "neuroiou_loss",
    "pixiou_loss",
    "register_loss",
]
