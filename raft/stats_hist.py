"""Histograms of the statistics (raft.stats): the durations and lateness of executions.

**Histograms** are sparse counts on fixed log-scale buckets (`bucket_of`: exact below 8 ms, then 8
buckets per power of two): bounded (at most 500 buckets, in practice a handful), mergeable (counts add),
and integer arithmetic only, so every replica stores the same bytes. A quantile read from one is the
middle of its bucket, clamped to the observed min and max: within 6.25 % of the true value.
"""

from __future__ import annotations

import bisect

from cronraft.proto.v1 import stats_pb2

Histogram = stats_pb2.Histogram

# Buckets per power of two (2**SUB_BITS): a bucket is at most 1/8 of its lower bound wide.
SUB_BITS = 3
SUB = 1 << SUB_BITS

_bisect_left = bisect.bisect_left


def bucket_of(value_ms: int) -> int:
    """The histogram bucket of a value (negative values count as 0)."""
    if value_ms < SUB:
        return max(0, value_ms)
    e = value_ms.bit_length() - 1  # >= SUB_BITS
    return SUB + (e - SUB_BITS) * SUB + ((value_ms >> (e - SUB_BITS)) & (SUB - 1))


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """[low, high) of the values in `bucket` (`bucket_of` inverted)."""
    if bucket < SUB:
        return bucket, bucket + 1
    shift = (bucket - SUB) // SUB
    sub = (bucket - SUB) % SUB
    return (SUB + sub) << shift, (SUB + sub + 1) << shift


def hist_add(h: Histogram, value_ms: int) -> None:
    # On the apply path of every execution that ends: each field is read once (upb attribute reads
    # are not free).
    if value_ms < SUB:
        if value_ms < 0:  # noqa: PLR1730 (max() is a call: most durations are under SUB ms)
            value_ms = 0
        b = value_ms
    else:
        e = value_ms.bit_length() - 1
        b = SUB + (e - SUB_BITS) * SUB + ((value_ms >> (e - SUB_BITS)) & (SUB - 1))
    samples = h.samples
    if not samples:  # a new hour's first sample (every task's, in a burst of one-time tasks)
        h.buckets.append(b)
        h.counts.append(1)
        h.min_ms = h.max_ms = h.sum_ms = value_ms
        h.samples = 1
        return
    buckets = h.buckets
    i = _bisect_left(buckets, b)
    try:  # buckets[i] == b, without reading the length first (past the last bucket is rare)
        found = buckets[i] == b
    except IndexError:
        found = False
    if found:
        h.counts[i] += 1
    else:
        buckets.insert(i, b)
        h.counts.insert(i, 1)
    # A field is written only when it changes (min and max rarely do): a write costs more than a read.
    if value_ms < h.min_ms:  # noqa: PLR1730 (min() would write every time)
        h.min_ms = value_ms
    if value_ms > h.max_ms:  # noqa: PLR1730
        h.max_ms = value_ms
    h.samples = samples + 1
    h.sum_ms += value_ms


def hist_merge(into: Histogram, other: Histogram) -> None:
    """Add `other`'s samples to `into` (both stay sparse and sorted)."""
    if not other.samples:
        return
    counts = dict(zip(into.buckets, into.counts, strict=True))
    for b, c in zip(other.buckets, other.counts, strict=True):
        counts[b] = counts.get(b, 0) + c
    order = sorted(counts)
    del into.buckets[:]
    del into.counts[:]
    into.buckets.extend(order)
    into.counts.extend(counts[b] for b in order)
    into.min_ms = other.min_ms if not into.samples else min(into.min_ms, other.min_ms)
    into.max_ms = max(into.max_ms, other.max_ms)
    into.samples += other.samples
    into.sum_ms += other.sum_ms


def quantile(h: Histogram, per_mille: int) -> int:
    """The value at `per_mille`/1000 of the samples: the middle of its bucket, within [min, max]."""
    if not h.samples:
        return 0
    rank = max(1, -(-per_mille * h.samples // 1000))  # ceil, in integers
    seen = 0
    for b, c in zip(h.buckets, h.counts, strict=True):
        seen += c
        if seen >= rank:
            lo, hi = bucket_bounds(b)
            return min(max((lo + hi - 1) // 2, h.min_ms), h.max_ms)
    return h.max_ms


def quantiles(h: Histogram) -> stats_pb2.Quantiles:
    if not h.samples:
        return stats_pb2.Quantiles()
    return stats_pb2.Quantiles(
        samples=h.samples,
        p50_ms=quantile(h, 500),
        p95_ms=quantile(h, 950),
        p99_ms=quantile(h, 990),
        max_ms=h.max_ms,
        min_ms=h.min_ms,
        mean_ms=h.sum_ms // h.samples,
    )


class HistDelta:
    """Values added to a histogram within one entry, added to the stored one when the entry ends: counted
    per bucket first, then each bucket's count added to the stored histogram, and its min, max, samples and
    sum written once. The same histogram as adding them one by one as they came (`hist_add`: counts add;
    min, max, samples and sum are order-free), at a fraction of the cost: an entry's values fall in a few
    buckets, and each `hist_add` reads and writes about ten protobuf fields."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[int] = []

    def merge_into(self, h: Histogram) -> None:
        values = [v if v > 0 else 0 for v in self.values]  # as hist_add stores them
        if not values:
            return
        counts: dict[int, int] = {}
        for v in values:
            if v < SUB:  # bucket_of(v), inline
                b = v
            else:
                e = v.bit_length() - 1
                b = SUB + (e - SUB_BITS) * SUB + ((v >> (e - SUB_BITS)) & (SUB - 1))
            counts[b] = counts.get(b, 0) + 1
        low, high = min(values), max(values)
        samples = h.samples
        buckets, stored = h.buckets, h.counts
        if not samples:  # hist_add's first sample, then the others
            order = sorted(counts)
            buckets.extend(order)
            stored.extend([counts[b] for b in order])
            h.min_ms, h.max_ms, h.sum_ms = low, high, sum(values)
            h.samples = len(values)
            return
        for b in sorted(counts):
            i = _bisect_left(buckets, b)
            if i < len(buckets) and buckets[i] == b:
                stored[i] += counts[b]
            else:
                buckets.insert(i, b)
                stored.insert(i, counts[b])
        if low < h.min_ms:  # noqa: PLR1730 (a field is written only when it changes, as hist_add does)
            h.min_ms = low
        if high > h.max_ms:  # noqa: PLR1730
            h.max_ms = high
        h.samples = samples + len(values)
        h.sum_ms += sum(values)
