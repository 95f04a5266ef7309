"""Small statistics for the fault checker, stdlib only (no scipy).

- `clopper_pearson_upper(k, n)`: the exact one-sided upper confidence bound of a binomial rate after
  k events in n trials: the p at which P(X <= k | n, p) = 1 - conf. It is the beta quantile
  Beta^-1(conf; k + 1, n - k), found by bisection on the regularized incomplete beta function (a
  continued fraction, Numerical Recipes §6.4). With k = 0 it is 1 - (1 - conf)^(1/n), the "rule of
  three" (about 3/n at 95 %).
- `binom_cdf(k, n, p)`: the exact binomial tail, summed in log space (an independent cross-check).
- `n_needed(rate, conf)`: trials with no event needed to bound a rate below `rate`:
  ln(1 - conf) / ln(1 - rate), e.g. 29,956 for 1e-4 at 95 %.
- `percentile(sorted_values, q)`: nearest-rank percentile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPS = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _EPS if abs(d) < _EPS else d
    d = 1.0 / d
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _EPS if abs(d) < _EPS else d
        c = 1.0 + aa / c
        c = _EPS if abs(c) < _EPS else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _EPS if abs(d) < _EPS else d
        c = 1.0 + aa / c
        c = _EPS if abs(c) < _EPS else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc: a and b must be > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection (I is increasing in x)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("beta_ppf: q must be in [0, 1]")
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lfn = math.lgamma(n + 1)
    terms = [lfn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided exact upper bound of a binomial rate after `k` events in `n` trials."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"clopper_pearson_upper: need 0 <= k <= n, got k={k}, n={n}")
    if k == n:
        return 1.0
    if k == 0:
        # Closed form: (1 - p)^n = 1 - conf.
        return -math.expm1(math.log(1.0 - conf) / n)
    return beta_ppf(conf, k + 1, n - k)


def clopper_pearson_upper_by_tail(k: int, n: int, conf: float = 0.95) -> float:
    """The same bound by bisection on the exact binomial tail (slower; used to cross-check)."""
    if n <= 0 or k >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if binom_cdf(k, n, mid) > 1.0 - conf:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson_lower(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided exact lower bound of a binomial rate after `k` events in `n` trials."""
    if n <= 0 or k <= 0:
        return 0.0
    if k > n:
        raise ValueError(f"clopper_pearson_lower: need k <= n, got k={k}, n={n}")
    return beta_ppf(1.0 - conf, k, n - k + 1)


def n_needed(rate: float = 1e-4, conf: float = 0.95) -> int:
    """Event-free trials needed for the one-sided `conf` bound of a rate to fall to `rate`."""
    return math.ceil(math.log(1.0 - conf) / math.log1p(-rate))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of an ascending sequence; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
