"""mlray: multi-label evaluation of ImageNet classifiers at cluster scale on Ray.

The data flow has one direction; each step lives in one module:

    labels (label sources -> canonical labels table)      mlray.labels, mlray.vocab
    config (the run config file)                          mlray.config
    stats  (dataset statistics, cross-dataset comparison) mlray.stats
    reports (Parquet report writing, the stats job)       mlray.reports
    cli    (the `mlray` command; owns nothing)            mlray.cli
"""

__version__ = "0.1.0"
