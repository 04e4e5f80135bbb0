"""Image datasets -> deterministic shards of (image_id, original file bytes) -> decoded RGB images.

Plain Python (no Ray): the objects returned are small and picklable, so the Ray Data pipeline can plan once on
the driver and call :func:`read_shard` / :func:`decode_image` inside its tasks. Modelled on timm's
``data/readers``: one module per storage format behind a small registry.

=================  ============================================================================================
``roots``          where a dataset lives: a pyarrow filesystem (local path or URI) + listing / read helpers
``shards``         :class:`Shard`, :class:`ImagePlan`, :class:`ImageError`, the :class:`Layout` interface, and
                   the bookkeeping planning shares
``layouts/``       one module per layout family; each layout both plans and reads its shards:
                   ``folders`` (imagenet-val-flat, wnid-folders, imagenetv2), ``manifest``, ``parquet``
                   (parquet-shards), ``webdataset``
``plan``           the layout registry: :func:`plan_shards`, :func:`read_shard`, :func:`read_shard_sources`
``budget``         the per-image memory budget every decode / resize buffer is checked against before allocating
``decode``         :func:`decode_image`: bytes -> RGB ``PIL.Image`` as timm's loader, with explicit failures
``writer``         :func:`write_parquet_shards` (``mlray shard``): any layout -> Parquet shards
=================  ============================================================================================

Where the images are (``images:``) is a local path or any URI ``pyarrow.fs.FileSystem.from_uri`` understands
(``s3://bucket/prefix``, ``gs://...``, ``file:///...``). Local paths go through pyarrow's ``LocalFileSystem``
too, so there is one code path for listing and reading.

Layouts (``layout:``)
=====================

=====================  =================================================================================
``imagenet-val-flat``  every image directly in one folder (``ILSVRC2012_val_00000001.JPEG``, ...); the
                       layout gives no labels (they come from the label sources). An image in a subfolder
                       is an error (use a class-folder layout or a manifest).
``wnid-folders``       ``<wnid>/<file>`` (torchvision ``ImageFolder`` / the ImageNet train tree): the
                       original label is the folder's wnid in the ImageNet-1k vocabulary. A folder holding
                       images whose name is not one of the 1,000 wnids is an error naming it.
``imagenetv2``         the public ImageNetV2 tarballs: ``<class_index>/<id>.jpeg``. Folder names are the
                       integers 0..999 and *are* the class index (folder ``10`` is class 10, never the
                       string-sorted position); any other folder name holding images is an error.
``manifest``           ``images:`` names a CSV/TSV/Parquet file with ``path`` (+ ``image_id``, else the
                       file stem) and optional ``label`` (int, -1/empty = unknown) and/or ``labels`` (a list,
                       or a ``;``-separated string; an empty CSV cell = the empty set, a Parquet null = not
                       annotated). Relative paths resolve against the manifest's folder; a URI must be on
                       the manifest's filesystem. Rows are taken as listed (no extension filter) and are not
                       stat'ed while planning: a missing file is a read error when its shard is read.
``parquet-shards``     Parquet files (a folder of them, or one file) with ``image_id``, ``image`` (binary,
                       or a Hugging Face ``struct<bytes, path>``) + optional ``label`` / ``labels``.
                       ``errors.parquet`` (the quarantine :func:`write_parquet_shards` writes) is skipped.
``webdataset``         ``.tar`` / ``.tar.gz`` / ``.tgz`` shards (a folder of them, or one file). Members are
                       grouped into samples by key (WebDataset's rule: the member name up to the first dot
                       of its base name); the image is the member with an image extension, an optional
                       ``cls`` member (integer text) is the original label; image_id = the key's base name.
                       A sample with no image member is skipped and counted; two image members of one
                       sample are an error.
=====================  =================================================================================

Classes in label columns and ``cls`` members are parsed by :mod:`mlray.labels.parse` (the one rule for every
input file): a class named twice in one label set is kept once and counted in the plan's
``SourceLabels.merged_duplicates``. In folder layouts, files whose extension is not in
:data:`mlray.labels.IMAGE_EXTENSIONS` (README, manifest.csv, .txt ...) and hidden files/folders (a path part
starting with ``.``: ``.DS_Store``, macOS ``._x.jpg``, ``.ipynb_checkpoints``) are skipped and counted in
``n_skipped_non_image`` -- never an error. Nothing under a folder is dropped silently: a broken symlink, a folder
named like an image (``x.JPEG/``), a FIFO / socket / device named like an image is planned as an image whose read
is an error with that reason (counted in ``n_flagged``; never opened), so
``entries = images to read + flagged + skipped`` (:meth:`ImagePlan.accounting`). Two files with the same image id
(file stem, e.g. ``a.jpg`` and ``a.png``) anywhere in a dataset are an error naming both paths.

Shards
======

:func:`plan_shards` lists a dataset once and returns an :class:`ImagePlan`. File layouts (flat, wnid-folders,
imagenetv2, manifest) are sorted by image id and cut into shards of ``shard_size`` images; ``parquet-shards``
cuts each Parquet file (sorted by path) into row ranges of at most ``shard_size`` rows; ``webdataset`` has one
shard per tar. Shard ids are ``s00000``, ``s00001``, ... in that order, so the same input and ``shard_size``
always give the same shards (a resumed run can skip the ones it finished). :func:`read_shard` yields
``(image_id, bytes, None)`` or ``(image_id, None, ImageError('read', reason))`` for every image the shard
planned -- each planned image exactly once, and a missing file, member or row is an error item, never an
exception. See :mod:`mlray.images.decode` for decoding and :mod:`mlray.images.budget` for the memory budget of one
image (also applied by :func:`mlray.models.preprocess_uint8` to every resize).
"""

from .budget import MAX_BUFFER_BYTES, MAX_BUFFER_PIXELS
from .decode import DEFAULT_MAX_PIXELS, decode_image
from .layouts.parquet import ERRORS_FILE
from .plan import LAYOUTS, REGISTRY, layout_of, plan_shards, read_shard, read_shard_sources, shard_items
from .shards import DEFAULT_SHARD_SIZE, ImageError, ImagePlan, Layout, PlanAccounting, Shard, ShardItem, SourcedItem
from .writer import SHARD_ERRORS_SCHEMA, SHARD_SCHEMA, WrittenShards, write_parquet_shards

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SHARD_SIZE",
    "ERRORS_FILE",
    "LAYOUTS",
    "MAX_BUFFER_BYTES",
    "MAX_BUFFER_PIXELS",
    "REGISTRY",
    "SHARD_ERRORS_SCHEMA",
    "SHARD_SCHEMA",
    "ImageError",
    "ImagePlan",
    "Layout",
    "PlanAccounting",
    "Shard",
    "ShardItem",
    "SourcedItem",
    "WrittenShards",
    "decode_image",
    "layout_of",
    "plan_shards",
    "read_shard",
    "read_shard_sources",
    "shard_items",
    "write_parquet_shards",
]
