"""Fig. 3b of the Lovász-Softmax paper (Berman et al., CVPR 2018, Sec. 4.1): losses of a bias.

    python -m experiments.lovasz_fig3b --out docs/figures [--seed 0] [--num_images 10]

On the synthetic ``circles`` data (:func:`jaxseg.data.synthetic.circles`) the one-parameter
classifier ``f > -b`` is scored by four losses over a grid of biases ``b``; the program writes
``fig3b.png`` (the curves, each curve's minimiser marked) and ``fig3b_minimisers.json`` to
``--out`` and prints the minimisers. A few seconds on a CPU.
"""

import argparse
import json
import os
import sys

# jaxseg.data imports TensorFlow (the input pipelines): keep its C++ start-up logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg.losses import binary_cross_entropy, binary_hinge_loss, lovasz_hinge  # noqa: E402

# The curves, in the order of the figure's legend: key -> label.
CURVES = {
    "jaccard": "Jaccard loss 1 - IoU",
    "lovasz_hinge": "Lovász hinge",
    "hinge": "hinge",
    "cross_entropy": "binary cross-entropy",
}


def default_biases() -> np.ndarray:
  """The bias grid: -3 to 3 in steps of 0.025 (241 points), float64."""
  return np.round(np.arange(-3.0, 3.0 + 1e-9, 0.025), 10)


def _losses_of_bias(feature, label, bias):
  """The four losses of the classifier ``feature + bias > 0`` (scalars; one bias)."""
  scores = feature + bias.astype(feature.dtype)
  predicted = scores > 0
  foreground = label == 1
  intersection = jnp.sum(predicted & foreground, axis=(1, 2))
  union = jnp.sum(predicted | foreground, axis=(1, 2))
  # An image where prediction and label are both empty has IoU 1 (loss 0).
  iou = jnp.where(union > 0, intersection / jnp.maximum(union, 1), 1.0)
  return {
      "jaccard": jnp.mean(1.0 - iou),
      "lovasz_hinge": lovasz_hinge(scores, label, per_image=True),
      "hinge": binary_hinge_loss(scores, label),
      "cross_entropy": binary_cross_entropy(scores, label),
  }


def fig3b_curves(*, seed: int = 0, num_images: int = 10, image_size: int = 50,
                 biases=None) -> dict:
  r"""The curves of Fig. 3b of Berman et al., "The Lovász-Softmax loss", CVPR 2018 (Sec. 4.1).

  The data are ``num_images`` circle images (``label`` 1 inside the circle) with one feature per
  pixel, ``f_i ~ N(+1/2, 1)`` on the foreground and ``N(-1/2, 1)`` on the background
  (:func:`jaxseg.data.synthetic.circles`). The model predicts the foreground where ``f_i > -b``,
  i.e. its one-logit score is ``F_i = f_i + b``. For each bias ``b`` of the grid, with
  ``y_i in {0, 1}`` and ``s_i = 2 y_i - 1``:

  * ``jaccard``: ``mean_images (1 - |P ∩ G| / |P ∪ G|)`` with ``P = {F > 0}``, ``G = {y = 1}``
    (1 - IoU per image; an image with ``P ∪ G`` empty costs 0);
  * ``lovasz_hinge``: ``mean_images Δ̄_J(m)``, the Lovász extension of the Jaccard loss (Eq. 9-10)
    of the hinge errors ``m_i = max(0, 1 - s_i F_i)``: sort ``m`` decreasingly,
    ``Δ̄_J(m) = sum_i m_(i) g_i`` with ``g_i`` the increments of the Jaccard loss as the sorted
    pixels are added one by one to the mispredicted set
    (:func:`jaxseg.losses.lovasz_hinge`, ``per_image=True``);
  * ``hinge``: ``mean_pixels max(0, 1 - s_i F_i)`` (:func:`jaxseg.losses.binary_hinge_loss`);
  * ``cross_entropy``: ``mean_pixels -[y_i log σ(F_i) + (1 - y_i) log(1 - σ(F_i))]``
    (:func:`jaxseg.losses.binary_cross_entropy`).

  All biases are evaluated at once (one ``jit`` of a ``vmap`` over the grid), in JAX's default
  float dtype (float32 unless 64-bit mode is on).

  Args:
    seed: seed of the circles data.
    num_images: images (the paper: N = 10).
    image_size: their side (the paper: 50).
    biases: 1-D grid of biases (default :func:`default_biases`, -3 to 3 in steps of 0.025).

  Returns:
    ``{"bias": [K], "jaccard", "lovasz_hinge", "hinge", "cross_entropy": [K] each}`` as float64
    NumPy arrays, and ``"minimisers"``: for each curve ``{"index", "bias", "loss",
    "jaccard_at_bias"}`` (the first grid point of its smallest value, the loss there and the
    Jaccard loss at that bias).
  """
  # The data module's package imports TensorFlow: only when the curves are asked for.
  from jaxseg.data.synthetic import circles  # pylint: disable=g-import-not-at-top

  grid = default_biases() if biases is None else np.asarray(biases, np.float64)
  if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
    raise ValueError(f"biases must be a non-empty 1-D array of finite numbers, got {biases!r}")
  data = circles(seed=seed, num_images=num_images, image_size=image_size)
  feature = jnp.asarray(data.feature, jnp.result_type(float))
  label = jnp.asarray(data.label)
  losses = jax.jit(jax.vmap(_losses_of_bias, in_axes=(None, None, 0)))(
      feature, label, jnp.asarray(grid, feature.dtype))
  curves = {"bias": grid}
  curves.update({key: np.asarray(losses[key], np.float64) for key in CURVES})
  minimisers = {}
  for key in CURVES:
    index = int(np.argmin(curves[key]))
    minimisers[key] = {"index": index, "bias": float(grid[index]),
                       "loss": float(curves[key][index]),
                       "jaccard_at_bias": float(curves["jaccard"][index])}
  curves["minimisers"] = minimisers
  return curves


def plot_curves(curves: dict, path: str, *, seed: int, dpi: int = 100) -> None:
  """Writes the figure: each curve min-max scaled to [0, 1] over the grid (the paper's
  "relative losses"), a dashed line and a marker at each curve's minimiser."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(7.0, 4.5))
  bias = curves["bias"]
  for key, label in CURVES.items():
    values = curves[key]
    span = values.max() - values.min()
    relative = (values - values.min()) / (span if span > 0 else 1.0)
    best = curves["minimisers"][key]
    line, = ax.plot(bias, relative,
                    label=f"{label}: min {best['loss']:.4f} at b = {best['bias']:+.3f}")
    ax.axvline(best["bias"], color=line.get_color(), linestyle="--", linewidth=1.0)
    ax.plot([best["bias"]], [relative[best["index"]]], "o", color=line.get_color())
  ax.set_xlabel("bias b (foreground where f > -b)")
  ax.set_ylabel("relative loss (min-max scaled over the grid)")
  ax.set_title(f"Berman et al., CVPR 2018, Fig. 3b: losses vs bias "
               f"({bias.size} biases, seed {seed})",
               fontsize=10)
  ax.legend(fontsize=8, loc="upper center")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def write_outputs(curves: dict, out_dir: str, *, seed: int, num_images: int,
                  image_size: int) -> tuple[str, str]:
  """Writes ``fig3b.png`` and ``fig3b_minimisers.json`` to ``out_dir``; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  png = os.path.join(out_dir, "fig3b.png")
  plot_curves(curves, png, seed=seed)
  bias = curves["bias"]
  record = {
      "paper": "Berman et al., The Lovász-Softmax loss, CVPR 2018, Sec. 4.1, Fig. 3b",
      "seed": seed,
      "num_images": num_images,
      "image_size": image_size,
      "grid": {"start": float(bias[0]), "stop": float(bias[-1]), "num": int(bias.size),
               "step": round(float(bias[1] - bias[0]), 10) if bias.size > 1 else 0.0},
      "dtype": str(jnp.result_type(float)),
      "minimisers": curves["minimisers"],
  }
  path = os.path.join(out_dir, "fig3b_minimisers.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, ensure_ascii=False)
    f.write("\n")
  return png, path


def format_table(minimisers: dict) -> str:
  """The minimisers as a small text table."""
  rows = [f"{'loss':<22} {'argmin b':>9} {'loss there':>11} {'Jaccard there':>14}"]
  for key, best in minimisers.items():
    rows.append(f"{key:<22} {best['bias']:>+9.3f} {best['loss']:>11.5f} "
                f"{best['jaccard_at_bias']:>14.5f}")
  return "\n".join(rows)


def main(argv=None) -> dict:
  """The program: computes the curves, writes the two files, prints the minimisers and returns
  the curves. ``argv`` without the program name (default ``sys.argv[1:]``)."""
  parser = argparse.ArgumentParser(
      prog="python -m experiments.lovasz_fig3b",
      description="Fig. 3b of Berman et al., CVPR 2018 (Sec. 4.1): losses of the bias b of the "
                  "classifier f > -b on the synthetic circles data.")
  parser.add_argument("--out", default="docs/figures",
                      help="folder for fig3b.png and fig3b_minimisers.json (default: %(default)s)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the circles data (default: 0)")
  parser.add_argument("--num_images", type=int, default=10, help="images (the paper: 10)")
  parser.add_argument("--image_size", type=int, default=50, help="their side (the paper: 50)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if args.num_images < 1 or args.image_size < 8:
    parser.error("--num_images must be >= 1 and --image_size >= 8")
  curves = fig3b_curves(seed=args.seed, num_images=args.num_images, image_size=args.image_size)
  png, path = write_outputs(curves, args.out, seed=args.seed, num_images=args.num_images,
                            image_size=args.image_size)
  print(format_table(curves["minimisers"]))
  print(f"wrote {png} and {path}")
  return curves


if __name__ == "__main__":
  main()
