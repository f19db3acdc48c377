"""The histogram of :func:`agent.emit.histogram`: exponential buckets with a guaranteed relative error.

Why exponential buckets rather than explicit bounds or a sample: a percentile read from explicit
bounds is only as good as the bounds someone chose for a distribution they had not seen yet, and a
sample misses the tail that p99 is about. Buckets whose width grows with the value bound the
*relative* error of every quantile, whatever the distribution (the DDSketch argument): bucket ``i``
holds the values ``v`` with ``base**i < |v| <= base**(i + 1)``, and reporting it by
``2 * base**(i + 1) / (base + 1)`` is off by at most ``(base - 1) / (base + 1)`` of any value in it.
With ``base = 2 ** (2 ** -scale)`` these are exactly OpenTelemetry's exponential-histogram buckets,
so a row written here and an OTLP ``ExponentialHistogramDataPoint`` share one column layout and
merge in SQL (``observability.histogram_quantiles``). At :data:`agent.contract.HISTOGRAM_SCALE` (5)
the error is 1.083 %, with 106 buckets per decade of values; only the buckets that are hit are kept.

Pure data, no I/O, no locks: the caller (:mod:`agent.emit.metrics`) holds the lock.
"""

from __future__ import annotations

import math
from typing import Any, Final

from agent import contract as c

_SCALE: Final = c.HISTOGRAM_SCALE
_FACTOR: Final = 2.0**_SCALE / math.log(2.0)  # log_base(v) = ln(v) * 2**scale / ln 2


def bucket_index(value: float, scale: int = _SCALE) -> int:
    """The bucket of ``|value|`` (> 0) at ``scale``: the ``i`` with ``base**i < |value| <= base**(i + 1)``.

    Exact powers of two are placed from the float's exponent (the logarithm may round them into
    the next bucket); other values by logarithm, which can misplace a value lying within a few
    ulps of a bound into the neighbouring bucket: its error is then the bound's, ``(base - 1) /
    (base + 1)`` up to rounding, so the guarantee holds.
    """
    v = abs(value)
    mantissa, exponent = math.frexp(v)
    if mantissa == 0.5:  # v == 2 ** (exponent - 1): the upper bound of its bucket
        return ((exponent - 1) << scale) - 1
    if scale == _SCALE:
        return math.ceil(math.log(v) * _FACTOR) - 1
    return math.ceil(math.log(v) * (2.0**scale / math.log(2.0))) - 1


class ExpHistogram:
    """Count, sum, min, max and the hit buckets of one series over one interval."""

    __slots__ = ("count", "max", "min", "neg", "pos", "sum", "zero")

    def __init__(self) -> None:
        self.count = 0
        self.sum: float = 0
        self.min = math.inf
        self.max = -math.inf
        self.zero = 0
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}

    def add(self, value: float, index: int) -> None:
        """Record ``value``, whose bucket the caller computed (outside its lock) with :func:`bucket_index`."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value > 0:
            self.pos[index] = self.pos.get(index, 0) + 1
        elif value < 0:
            self.neg[index] = self.neg.get(index, 0) + 1
        else:
            self.zero += 1

    def buckets(self) -> dict[str, Any]:
        """The ``buckets`` column: OTLP's exponential-histogram layout, dense from the lowest hit bucket.

        When the hit buckets of one sign span more than :data:`agent.contract.HISTOGRAM_MAX_BUCKETS`
        (values more than 10**38 apart in one interval), both signs are written at a smaller scale,
        halving the resolution per step, so a line stays bounded; the scale is in the record.
        """
        scale, pos, neg = _SCALE, self.pos, self.neg
        while _span(pos) > c.HISTOGRAM_MAX_BUCKETS or _span(neg) > c.HISTOGRAM_MAX_BUCKETS:
            scale, pos, neg = scale - 1, _halve(pos), _halve(neg)
        out: dict[str, Any] = {"scale": scale, "zero_count": self.zero, "positive": _dense(pos)}
        if neg:
            out["negative"] = _dense(neg)
        return out


def _span(hit: dict[int, int]) -> int:
    return max(hit) - min(hit) + 1 if hit else 0


def _halve(hit: dict[int, int]) -> dict[int, int]:
    """The same counts one scale lower: bucket ``i`` becomes ``i >> 1`` (floor, negatives too)."""
    out: dict[int, int] = {}
    for i, n in hit.items():
        out[i >> 1] = out.get(i >> 1, 0) + n
    return out


def _dense(hit: dict[int, int]) -> dict[str, Any]:
    if not hit:
        return {"offset": 0, "bucket_counts": []}
    lo = min(hit)
    counts = [0] * (max(hit) - lo + 1)
    for i, n in hit.items():
        counts[i - lo] = n
    return {"offset": lo, "bucket_counts": counts}


def bucket_value(index: int, scale: int = _SCALE) -> float:
    """The value that stands for positive bucket ``index``: ``2 * base**(index + 1) / (base + 1)``."""
    step = math.ldexp(1.0, -scale)  # 2 ** -scale
    return 2.0 * math.pow(2.0, (index + 1) * step) / (math.pow(2.0, step) + 1.0)
