"""``predict_checkpoint(config, workdir)``: ``train.py --mode=predict``, a checkpoint's predictions
written as files (:mod:`jaxseg.predict`).

Inputs, from ``config.predict``: a split of the dataset (``split``; ``""``: the evaluation split;
``test`` for the benchmark servers), read by the evaluation pipeline at full resolution, padded to
``config.data.eval_pad_size``; or a folder of images (``input_dir``), batched in padded size
buckets (:mod:`jaxseg.data.image_folder`). The prediction is the evaluation's
(``config.eval.scales`` / ``flip`` / ``mode``, sliding windows aligned to each image's own
border; the dense CRF is not applied yet and ``config.eval.crf`` is refused), jitted once per
padded shape and sharded over the ``'data'`` mesh; every host writes the predictions of its own examples (a shared ``output_dir`` then holds
one file per image), cropped to the image's size, filler examples never written.

Format (:func:`layout_for`): Cityscapes' labelIds PNGs (19-class Cityscapes runs), the VOC
devkit's indexed PNGs (21-class VOC runs; ``results.tgz`` for the test split), indexed PNGs of
class ids otherwise (and for folders of a VOC run); ``overlays`` and ``probabilities`` add colour
overlays and float16 ``.npz`` class probabilities.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Iterable, Optional

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxseg import data as data_lib
from jaxseg import metrics as metrics_lib
from jaxseg import predict as predict_lib
from jaxseg import sharding
from jaxseg.data import cityscapes
from jaxseg.data.datasets import canonical_split
from jaxseg.training import eval_setup
from jaxseg.training import loop
from jaxseg.training.initialization import ConfigError


@dataclasses.dataclass
class Inputs:
    """What is predicted: this host's batches, the global number of images, the number of real
    images in each global batch, the split (None for a folder) and a description."""

    batches: Iterable[dict]
    num_examples: int
    batch_count: Callable[[int], int]
    split: Optional[str]
    description: str


def eval_settings(config) -> dict:
    """The evaluation's sliding-window settings (``mode``, ``window``, ``stride`` of
    ``config.eval``, checked by :func:`jaxseg.training.eval_setup.view_arguments`). The dense CRF
    (``config.eval.crf``) is refused: predictions without it would not be what the evaluation
    scores."""
    if eval_setup.crf_params(config) is not None:
        raise ConfigError("config.eval.crf=True: --mode=predict does not apply the dense CRF yet; "
                          "predict without it (--config.eval.crf=False).")
    views = eval_setup.view_arguments(config)
    return {k: views[k] for k in ("mode", "window", "stride")}


def predict_settings(config) -> tuple[str, str, str]:
    """``(split, input_dir, output_dir)`` of ``config.predict``, checked (ConfigError)."""
    p = config.get("predict", ml_collections.ConfigDict())
    split, input_dir, output_dir = (str(p.get(k, "") or "") for k in ("split", "input_dir", "output_dir"))
    if not output_dir:
        raise ConfigError("--mode=predict writes its files to config.predict.output_dir: give "
                          "--config.predict.output_dir=<dir>.")
    if split and input_dir:
        raise ConfigError(f"config.predict.split={split!r} and config.predict.input_dir="
                          f"{input_dir!r}: give one of them (a split of the dataset, or a folder).")
    return split, input_dir, output_dir


def open_inputs(run: loop.Run, split: str, input_dir: str, output_dir: str) -> Inputs:
    """The split (default: the evaluation split) or the folder of images, opened (a missing
    dataset or folder, an unreadable image header fail here, before anything is compiled)."""
    B = run.eval_batch_size
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if input_dir:
        # What this mode writes is never read back, even with output_dir = input_dir.
        written = [output_dir] + [os.path.join(output_dir, f) for f in (
            predict_lib.PREDICTIONS_FOLDER, predict_lib.CITYSCAPES_FOLDER, predict_lib.OVERLAYS_FOLDER,
            predict_lib.PROBABILITIES_FOLDER, "results")]
        plan = data_lib.plan_image_folder(input_dir, B, exclude=written)
        batches = data_lib.create_folder_iterator(
            input_dir=input_dir, global_batch_size=B, mean=run.eval_data["mean"],
            std=run.eval_data["std"], plan=plan, **hosts)
        shapes = ", ".join(f"{h}x{w}" for h, w in plan.shapes)
        return Inputs(batches, plan.num_examples, plan.batch_count, None,
                      f"{plan.num_examples} images of {input_dir} (padded to {shapes})")
    kwargs = dict(run.eval_data)
    try:
        kwargs["split"] = canonical_split(kwargs["name"], split or kwargs["split"])
    except ValueError as e:  # an unknown split
        raise ConfigError(f"config.predict.split: {e}") from e
    source = data_lib.get_source(kwargs["name"], kwargs["split"], data_dir=kwargs["data_dir"],
                                 manual_dir=kwargs["manual_dir"], **kwargs["options"])
    n = source.num_examples
    batches = data_lib.create_eval_iterator(**kwargs, global_batch_size=B, **hosts)
    return Inputs(batches, n, lambda k: max(0, min(B, n - k * B)), source.split,
                  f"{n} images of {kwargs['name']}/{source.split}")


def layout_for(run: loop.Run, split: Optional[str]) -> predict_lib.Layout:
    """The official format of the run's dataset: Cityscapes labelIds for a 19-class Cityscapes
    run, the VOC devkit's layout for a 21-class VOC run on a split, indexed PNGs otherwise."""
    if run.info.name == "cityscapes" and tuple(run.class_names) == metrics_lib.CITYSCAPES_CLASS_NAMES:
        return predict_lib.cityscapes_layout(cityscapes.TRAIN_ID_TO_LABEL_ID)
    if (run.info.name == "voc2012_segmentation" and split is not None
            and tuple(run.class_names) == tuple(run.info.class_names)):
        return predict_lib.voc_layout(split)
    return predict_lib.indexed_layout()


def write_batches(batches: Iterable[dict], predict_fn, writer: predict_lib.PredictionWriter, *,
                  mean=None, std=None, progress: Optional[Callable[[int], None]] = None) -> int:
    """Writes the predictions of this host's ``batches`` (the evaluation or folder iterator's);
    returns the number of images written.

    ``predict_fn(batch) -> (class ids [b, H, W], probabilities [b, H, W, C] or None)`` for this
    host's rows; each real example (``example_mask``) is cropped to its ``size`` and written under
    its ``id``; overlays get the image with the normalisation (``mean`` / ``std``) undone;
    ``progress(k)`` is called after batch ``k``.
    """
    from jaxseg import viz  # pylint: disable=g-import-not-at-top

    count = 0
    for k, batch in enumerate(batches):
        ids, probs = predict_fn(batch)
        for j in np.flatnonzero(batch["example_mask"]):
            h, w = (int(v) for v in batch["size"][j])
            name = batch["id"][j]
            image = (viz.to_uint8_image(batch["image"][j, :h, :w], mean, std)
                     if writer.overlays else None)
            writer.submit(name.decode() if isinstance(name, bytes) else str(name), ids[j, :h, :w],
                          image=image, probabilities=None if probs is None else probs[j, :h, :w])
            count += 1
        if progress is not None:
            progress(k)
    return count


def predict_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                       step: Optional[int] = None) -> dict[str, Any]:
    """Writes the predictions of a checkpoint of ``workdir`` (default: latest) as
    ``config.predict`` asks (module docstring); returns a summary: ``step``, ``num_images``,
    ``written`` (by this host), ``output_dir``, ``folder`` (the predictions' folder), ``layout``,
    ``archive`` (or None), ``compilations``, ``shapes``, ``seconds``."""
    t_start = time.time()
    split, input_dir, output_dir = predict_settings(config)
    settings = eval_settings(config)
    run = loop.Run(config, workdir)
    p = config.predict
    try:
        latest = run.checkpointer.latest_step() if step is None else step
        if latest is None:
            raise FileNotFoundError(f"No checkpoint to predict with in {run.checkpointer.directory}; "
                                    f"train first (python train.py --workdir {workdir}).")
        inputs = open_inputs(run, split, input_dir, output_dir)
        state = run.checkpointer.restore(run.initial_state(), latest)
    finally:
        run.checkpointer.close()
    variables = state.variables
    del state  # the optimiser state is not needed
    layout = layout_for(run, inputs.split)
    step_fn = predict_lib.make_predict_step(run.mesh, run.model.apply, scales=run.eval_scales,
                                            flip=run.eval_flip, probabilities=bool(p.probabilities),
                                            **settings)
    is_main = jax.process_index() == 0
    if is_main:
        sliding = (f", windows {settings['window']} every {settings['stride']}"
                   if settings["mode"] == "slide" else "")
        print(f"Predicting {inputs.description} with the checkpoint of step {latest} (scales "
              f"{run.eval_scales}, flip {run.eval_flip}{sliding}) into "
              f"{os.path.abspath(output_dir)}", flush=True)

    def predict_fn(batch):
        g = sharding.global_batch({"image": batch["image"], "size": batch["size"]}, run.mesh)
        out = step_fn(variables, g["image"], g["size"])
        probs = out.get("probabilities")
        return predict_lib.host_rows(out["prediction"]), None if probs is None else predict_lib.host_rows(probs)

    writer = predict_lib.PredictionWriter(output_dir, layout, overlays=bool(p.overlays),
                                          probabilities=bool(p.probabilities),
                                          class_names=run.class_names)
    bar = tqdm(total=inputs.num_examples, unit="img", desc="predict", dynamic_ncols=True,
               disable=not (is_main and config.get("progress_bar", True)), file=sys.stdout)
    ok = False
    try:
        written = write_batches(inputs.batches, predict_fn, writer, mean=run.eval_data["mean"],
                                std=run.eval_data["std"],
                                progress=lambda k: bar.update(inputs.batch_count(k)))
        ok = True
    finally:
        bar.close()
        writer.close(raise_errors=ok)
    if jax.process_count() > 1:  # every host's files are written before the archive and count
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices("jaxseg predictions written")
    archive = None
    seconds = time.time() - t_start
    if is_main:
        archive = predict_lib.write_archive(writer.output_dir, layout)
        found = len(predict_lib.prediction_files(writer.output_dir, layout))
        folder = os.path.join(writer.output_dir, layout.folder)
        print(f"Wrote the predictions of {inputs.num_examples} images to {folder} in "
              f"{seconds:.1f} s ({step_fn.compilations} compilation(s)).", flush=True)
        if found != inputs.num_examples:
            print(f"WARNING: {folder} holds {found} prediction files for {inputs.num_examples} "
                  f"images: files of an earlier run are there too.", file=sys.stderr, flush=True)
        if layout.kind == "cityscapes":
            print(f"cityscapesScripts finds them with CITYSCAPES_RESULTS={folder}; the benchmark "
                  f"server takes a zip of that folder.", flush=True)
        if archive:
            print(f"Upload {archive} to the PASCAL VOC evaluation server.", flush=True)
    return {"step": int(latest), "num_images": inputs.num_examples, "written": written,
            "output_dir": writer.output_dir, "folder": os.path.join(writer.output_dir, layout.folder),
            "layout": layout.kind, "archive": archive, "compilations": step_fn.compilations,
            "shapes": list(step_fn.shapes), "seconds": seconds}
