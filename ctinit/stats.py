"""Paired comparisons with 95% t-intervals: how ctinit says "this initialization beats that one" (evaluation tables,
``ctinit pick``, the zoo's cards). Plain Python, no torch."""
from __future__ import annotations

import math

#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values (df >= 1)")
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_ci95(values: list[float]) -> dict:
    """Mean, standard deviation and 95% t-interval of independent values; ``ci95`` is None with fewer than two."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "sd": sd}


#: What a paired interval says about "A - B".
BETTER, WORSE, UNCLEAR = "better", "worse", "no clear difference"


def interval_verdict(ci95: list[float] | None) -> str:
    """``better`` when the interval of ``A - B`` is above 0, ``worse`` when below, else ``no clear difference``
    (also without an interval)."""
    if ci95 is None:
        return UNCLEAR
    return BETTER if ci95[0] > 0 else WORSE if ci95[1] < 0 else UNCLEAR


def paired_difference(values: dict, baseline: dict) -> dict:
    """``values`` and ``baseline`` map the same pairing keys (e.g. ``(task, seed)``) to accuracies: the mean of
    ``values - baseline`` over the keys both have, its 95% t-interval, ``n`` and the verdict."""
    keys = [k for k in values if k in baseline]
    if not keys:
        return {"mean": None, "ci95": None, "n": 0, "verdict": UNCLEAR}
    stats = mean_ci95([values[k] - baseline[k] for k in keys])
    return {**stats, "verdict": interval_verdict(stats["ci95"])}


def format_difference(diff: dict, scale: float = 100.0, unit: str = " pts") -> str:
    """``+10.2 pts [6.1, 14.3]`` (accuracy differences in percentage points); ``-`` when nothing was paired."""
    if diff.get("mean") is None:
        return "-"
    text = f"{diff['mean'] * scale:+.1f}{unit}"
    if diff.get("ci95"):
        lo, hi = diff["ci95"]
        text += f" [{lo * scale:+.1f}, {hi * scale:+.1f}]"
    return text


__all__ = ["BETTER", "T975", "UNCLEAR", "WORSE", "format_difference", "interval_verdict", "mean_ci95",
           "paired_difference", "t_quantile_975"]
