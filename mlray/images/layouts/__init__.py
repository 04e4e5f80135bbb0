"""One module per layout family; each defines :class:`~mlray.images.shards.Layout` subclasses that both plan
and read their shards. The registry that names them is :data:`mlray.images.plan.REGISTRY`.

==============  ==========================================================================
``folders``     ``imagenet-val-flat``, ``wnid-folders``, ``imagenetv2``: image files in folders
``manifest``    ``manifest``: a CSV / TSV / Parquet list of image files (+ label columns)
``parquet``     ``parquet-shards``: Parquet files holding the encoded images
``webdataset``  ``webdataset``: tar shards of samples
``_common``     not a layout: shards of one file per image, finding shard files
==============  ==========================================================================
"""
