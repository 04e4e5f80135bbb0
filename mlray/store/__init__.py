"""The prediction store and the errors store: every rule of what inference writes and what scoring reads.

=============  ==============================================================================================
``schema``     :data:`PREDICTIONS_SCHEMA`, :data:`ERRORS_SCHEMA`, the key columns, :data:`DEFAULT_K`
``ranks``      :func:`softmax`, :func:`topk_from_scores`, :func:`topk_with_classes`: scores -> the ranked lists the
               store keeps
``tables``     :func:`predictions_table`, :func:`errors_table`, :func:`conform`: building and checking tables
``layout``     folders, part names, :func:`shard_tag`, which shards a (dataset, model) holds, stale parts
``writer``     :func:`write_partition`, :func:`finish_shard` (errors part first, then predictions), atomically
``reader``     :func:`read_store`, :func:`read_predictions`, :func:`read_errors`: read back, never a row twice
``importers``  :func:`import_predictions`: CSV / Parquet predictions made elsewhere -> a prediction table
``align``      :func:`align`: a model's predictions in the row order of a dataset's labels
``remote``     :func:`open_remote`, :func:`linked`: a store on object storage, each part published as written
=============  ==============================================================================================

How the store lies on disk, and how to read it with pandas, pyarrow or DuckDB: :mod:`mlray.store.layout`.
"""

from .align import Aligned, align
from .importers import import_predictions
from .layout import (
    ERRORS_DIR,
    PREDICTIONS_DIR,
    check_layout,
    dataset_dir,
    errors_root,
    finished_shards,
    folder_name,
    list_partitions,
    name_of_folder,
    part_name,
    part_names,
    part_tag,
    partition_dir,
    parts,
    predictions_root,
    refuse_stale_parts,
    shard_tag,
    stale_parts,
    store_folders,
    store_listing,
    stored_tags,
    subfolders,
)
from .ranks import softmax, topk_from_scores, topk_with_classes
from .reader import count_rows, read_errors, read_predictions, read_store
from .remote import RemoteFolder, linked, open_remote, publish
from .schema import (
    CLASS_LIST,
    DEFAULT_K,
    ERRORS_SCHEMA,
    KEY_COLUMNS,
    LOGITS_FIELD,
    PARQUET_SUFFIXES,
    PREDICTIONS_SCHEMA,
    PROB_LIST,
)
from .tables import conform, errors_table, predictions_table
from .writer import finish_shard, write_errors, write_partition, write_predictions

__all__ = [
    "CLASS_LIST",
    "DEFAULT_K",
    "ERRORS_DIR",
    "ERRORS_SCHEMA",
    "KEY_COLUMNS",
    "LOGITS_FIELD",
    "PARQUET_SUFFIXES",
    "PREDICTIONS_DIR",
    "PREDICTIONS_SCHEMA",
    "PROB_LIST",
    "RemoteFolder",
    "Aligned",
    "align",
    "check_layout",
    "conform",
    "count_rows",
    "dataset_dir",
    "errors_root",
    "errors_table",
    "finish_shard",
    "finished_shards",
    "folder_name",
    "import_predictions",
    "linked",
    "list_partitions",
    "name_of_folder",
    "open_remote",
    "part_name",
    "part_names",
    "part_tag",
    "partition_dir",
    "parts",
    "predictions_root",
    "predictions_table",
    "publish",
    "read_errors",
    "read_predictions",
    "read_store",
    "refuse_stale_parts",
    "shard_tag",
    "softmax",
    "stale_parts",
    "store_folders",
    "store_listing",
    "stored_tags",
    "subfolders",
    "topk_from_scores",
    "topk_with_classes",
    "write_errors",
    "write_partition",
    "write_predictions",
]
