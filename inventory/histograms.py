"""Durations counted in buckets, and percentiles read from the buckets instead of a scan of every value.

A bucket is a range of seconds whose width grows with the value (log-spaced, :data:`PER_DOUBLING` buckets per
doubling from :data:`FLOOR` seconds up): any duration from a fraction of a second to years falls in one of a few
hundred buckets, and a percentile estimated from the buckets is within one bucket's width of the exact one —
about 4.4 % of the value (:data:`RELATIVE_WIDTH`). The rollups that keep them (the expiry overshoot, approvals'
time to decision) hold one row per bucket in use, so a p99 reads a few hundred rows whatever the number of
clients or requests.

Every bucket is computed here, in Python — by the folder, the recount and the readers of unfolded deltas — so
the database triggers only copy raw values and there is one definition of a bucket.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PER_DOUBLING = 16
FLOOR = 2.0**-4  # bucket 0 holds [0, 1/16 s): shorter than anything a person or a sweep can act on
RELATIVE_WIDTH = 2.0 ** (1 / PER_DOUBLING) - 1


def seconds_bucket(seconds: float) -> int:
    """The bucket of a duration: 0 below :data:`FLOOR` (and for negatives), else 1 + whole sixteenths of a
    doubling above it."""
    if not seconds >= FLOOR:  # also NaN
        return 0
    return 1 + int(math.floor(math.log2(seconds / FLOOR) * PER_DOUBLING))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """[low, high) seconds of a bucket."""
    if bucket <= 0:
        return 0.0, FLOOR
    return FLOOR * 2.0 ** ((bucket - 1) / PER_DOUBLING), FLOOR * 2.0 ** (bucket / PER_DOUBLING)


def histogram_percentile(histogram: Mapping[int, int], fraction: float) -> float | None:
    """The ``fraction`` percentile (0–1) of the durations counted in ``histogram`` (bucket → how many), or None
    when it is empty. Like ``percentile_cont``: the values at the two ranks around ``fraction × (N − 1)``,
    interpolated; each value is placed evenly within its bucket."""
    buckets = sorted((b, n) for b, n in histogram.items() if n > 0)
    total = sum(n for _, n in buckets)
    if not total:
        return None
    rank = fraction * (total - 1)
    lower = int(rank)
    upper = min(lower + 1, total - 1)
    low, high = _value_at(buckets, lower), _value_at(buckets, upper)
    return low + (high - low) * (rank - lower)


def _value_at(buckets: list[tuple[int, int]], rank: int) -> float:
    """The estimated ``rank``-th smallest value (0-based): the ranks of a bucket spread evenly over its width."""
    before = 0
    for bucket, n in buckets:
        if rank < before + n:
            low, high = bucket_bounds(bucket)
            return low + (high - low) * (rank - before + 0.5) / n
        before += n
    raise ValueError(f"rank {rank} is past the {before} values counted")  # pragma: no cover - callers bound it
