"""Metric parameters: the choices behind every metric value, each default defined here once.

The run config's ``scoring:`` section (:class:`mlray.config.ScoringConfig`), the ``mlray score`` /
``mlray evaluate`` flags, the jobs and the demo all build a :class:`MetricParams`; its fields are written next to
each result in the reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import MlrayError

MIN_GAP_FOR_SHARE = 0.01  # the share of a gap the label-count mix explains is reported for gaps of >= 1 point only


@dataclass(frozen=True)
class MetricParams:
    """The choices behind every metric value (written next to each result).

    ``max_group``: k_i >= max_group merge into the group ``f"{max_group}+"``. ``min_group_size``: ASMA leaves out
    groups with fewer images. ``n_boot``: bootstrap resamples (0 = no intervals). ``seed``: bootstrap seed.
    ``ci``: central coverage of the percentile interval. ``confidence_threshold``: the top-1 probability from
    which a "mistake" counts as confident (``penalized_valid_share_conf<100 t>``). ``ece_bins``: equal-width bins
    of [0, 1] of the calibration error and the reliability table.
    """

    max_group: int = 5
    min_group_size: int = 10
    n_boot: int = 1000
    seed: int = 0
    ci: float = 0.95
    confidence_threshold: float = 0.5
    ece_bins: int = 15

    def __post_init__(self) -> None:
        if not (isinstance(self.max_group, (int, np.integer)) and 1 <= self.max_group <= 1000):
            raise MlrayError(f"metric params: max_group must be an integer >= 1, got {self.max_group!r}")
        if not (isinstance(self.min_group_size, (int, np.integer)) and self.min_group_size >= 1):
            raise MlrayError(f"metric params: min_group_size must be an integer >= 1, got {self.min_group_size!r}")
        if not (isinstance(self.n_boot, (int, np.integer)) and self.n_boot >= 0):
            raise MlrayError(f"metric params: n_boot must be an integer >= 0, got {self.n_boot!r}")
        if not (isinstance(self.seed, (int, np.integer)) and self.seed >= 0):
            raise MlrayError(f"metric params: seed must be an integer >= 0, got {self.seed!r}")
        if not (0.0 < float(self.ci) < 1.0):
            raise MlrayError(f"metric params: ci must be in (0, 1), got {self.ci!r}")
        t = self.confidence_threshold
        if (
            isinstance(t, bool)
            or not isinstance(t, (int, float))
            or not 0.0 < t <= 1.0
            or abs(round(100 * t) - 100 * t) > 1e-9
        ):
            raise MlrayError(
                f"metric params: confidence_threshold must be in (0, 1] in whole percent (0.5, 0.9), got {t!r}"
            )
        if not (isinstance(self.ece_bins, (int, np.integer)) and 1 <= self.ece_bins <= 1000):
            raise MlrayError(f"metric params: ece_bins must be an integer in 1..1000, got {self.ece_bins!r}")

    @property
    def confident_metric(self) -> str:
        """The name of the confident variant of ``penalized_valid_share``: ``penalized_valid_share_conf50`` for
        the default threshold 0.5."""
        return f"penalized_valid_share_conf{round(100 * self.confidence_threshold)}"

    def to_dict(self) -> dict[str, int | float]:
        """The fields as plain Python numbers (``ci`` and ``confidence_threshold`` floats, the others ints), e.g. for
        a JSON manifest."""
        return {k: (float(v) if k in ("ci", "confidence_threshold") else int(v)) for k, v in asdict(self).items()}
