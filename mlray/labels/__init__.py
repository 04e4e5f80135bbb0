"""Labels: the ImageNet-1k class vocabulary, the one class/label-set parser, the label file readers and the
canonical labels table of a dataset.

=================  ===========================================================================================
``vocab``          index <-> wnid <-> name, from timm's packaged synset files; ``NUM_CLASSES``
``parse``          :func:`class_index` and :func:`label_set`: the one rule for classes in every input file
``readers``        one reader per label file format -> :class:`SourceLabels`; :func:`read_source`
``table``          :func:`build_dataset_labels` -> :class:`DatasetLabels` (Arrow) and :class:`LabelArrays` (numpy)
=================  ===========================================================================================
"""

from .parse import class_index, label_set
from .readers import (
    FORMATS,
    IMAGE_EXTENSIONS,
    READERS,
    REAL_NUM_IMAGES,
    UNKNOWN_IMAGE_POLICIES,
    SourceLabels,
    image_id_from_name,
    read_imagenetv2_json,
    read_loc_val_solution_csv,
    read_multilabelfy_json,
    read_real_json,
    read_source,
    read_table,
    read_tfds_multilabel_csv,
    real_image_id,
)
from .table import LABEL_LIST, LABELS_SCHEMA, DatasetLabels, LabelArrays, build_dataset_labels
from .vocab import NUM_CLASSES, Vocabulary, imagenet_vocabulary, timm_info_dir

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "LABEL_LIST",
    "LABELS_SCHEMA",
    "NUM_CLASSES",
    "READERS",
    "REAL_NUM_IMAGES",
    "UNKNOWN_IMAGE_POLICIES",
    "DatasetLabels",
    "LabelArrays",
    "SourceLabels",
    "Vocabulary",
    "build_dataset_labels",
    "class_index",
    "image_id_from_name",
    "imagenet_vocabulary",
    "label_set",
    "read_imagenetv2_json",
    "read_loc_val_solution_csv",
    "read_multilabelfy_json",
    "read_real_json",
    "read_source",
    "read_table",
    "read_tfds_multilabel_csv",
    "real_image_id",
    "timm_info_dir",
]
