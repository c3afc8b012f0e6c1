"""Durations in buckets and percentiles from the buckets (inventory.histograms): pure functions, no database."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from inventory.histograms import FLOOR, RELATIVE_WIDTH, bucket_bounds, histogram_percentile, seconds_bucket


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@pytest.mark.parametrize("seconds", [0.0, 0.01, FLOOR, 0.5, 1.0, 59.9, 60.0, 3600.0, 86400 * 3.3, 86400 * 400.0])
def test_every_duration_lies_in_its_own_bucket(seconds):
    low, high = bucket_bounds(seconds_bucket(seconds))
    assert low <= seconds < high
    assert high - low <= max(FLOOR, low * RELATIVE_WIDTH * 1.000001)


def test_negatives_and_nan_fall_in_the_first_bucket_and_buckets_are_ordered():
    assert seconds_bucket(-5.0) == seconds_bucket(float("nan")) == 0
    values = [random.Random(3).uniform(0, 1e6) for _ in range(2000)]
    assert [seconds_bucket(v) for v in sorted(values)] == sorted(seconds_bucket(v) for v in values)


def test_an_empty_histogram_has_no_percentile():
    assert histogram_percentile({}, 0.5) is None
    assert histogram_percentile({3: 0}, 0.5) is None


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_from_buckets_are_within_one_bucket_of_percentile_cont(q, seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(6, 2) for _ in range(rng.choice([1, 2, 7, 500]))]
    histogram = Counter(seconds_bucket(v) for v in values)
    assert histogram_percentile(histogram, q) == pytest.approx(_exact(values, q), rel=RELATIVE_WIDTH)
