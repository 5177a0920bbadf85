"""Input pipelines: Pascal VOC 2012 + SBD and Cityscapes (TFDS builders over the official
archives, image-only test splits included), the synthetic ``shapes``, ``streets`` and ``circles``
datasets, augmentation, equibatch and class-balanced sampling, split statistics, the training /
evaluation iterators the trainer uses, and folders of images batched in size buckets for
prediction.

TensorFlow runs on the host only (it is hidden from the GPUs at import).
"""

from jaxseg import _extras

_extras.require("data", "jaxseg.data (the input pipelines)", "tensorflow", "tensorflow_datasets",
                "scipy", "PIL")

# pylint: disable=wrong-import-position
from jaxseg.data.class_balanced import ClassBalancedSchedule  # noqa: E402
from jaxseg.data.datasets import (
    NAMES,
    DatasetInfo,
    Source,
    dataset_info,
    get_dataset,
    get_source,
    prepared_builder,
)
from jaxseg.data.archives import DataError
from jaxseg.data.equibatch import EpochSchedule, EquibatchSchedule
from jaxseg.data.image_folder import (
    FolderPlan,
    create_folder_iterator,
    plan_image_folder,
)
from jaxseg.data.pipeline import (
    create_eval_iterator,
    create_train_iterator,
    eval_pad_size,
)
from jaxseg.data.statistics import SplitStatistics, split_statistics
from jaxseg.data.synthetic import CirclesData, circles

__all__ = [
    "NAMES",
    "CirclesData",
    "ClassBalancedSchedule",
    "DataError",
    "DatasetInfo",
    "EpochSchedule",
    "EquibatchSchedule",
    "FolderPlan",
    "Source",
    "SplitStatistics",
    "circles",
    "create_eval_iterator",
    "create_folder_iterator",
    "create_train_iterator",
    "dataset_info",
    "eval_pad_size",
    "get_dataset",
    "get_source",
    "plan_image_folder",
    "prepared_builder",
    "split_statistics",
]
