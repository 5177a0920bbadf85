"""jaxseg: semantic segmentation in JAX/Flax with losses that optimise IoU directly."""

__version__ = "0.1.0"
