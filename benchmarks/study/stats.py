"""The study's statistics: t-intervals over meta-seeds, paired claims with p-values, Holm's adjustment across a
run's claims, two one-sided tests for equivalence, and the curve summaries (beta width, bands, steps to reach).

The unit of replication is the meta-training seed: every value is first averaged within its meta-seed (over tasks
and fine-tuning seeds), and the interval has n_meta_seeds - 1 degrees of freedom. Student's t distribution is
computed here (its CDF from the regularized incomplete beta function) so that the study needs no scipy."""
from __future__ import annotations

import math

from ctinit.stats import T975, mean_ci95, t_quantile_975  # noqa: F401 (T975, t_quantile_975: the study's names too)

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t (bisection on ``t_cdf``)."""
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def verdict(ci95: list[float] | None) -> str:
    """``holds`` when the interval of a difference oriented in the claim's favour is above 0, ``fails`` when it
    is below 0, else ``inconclusive`` (also when there is no interval)."""
    if ci95 is None:
        return "inconclusive"
    lo, hi = ci95
    return "holds" if lo > 0 else "fails" if hi < 0 else "inconclusive"


def per_meta_seed_means(acc: dict) -> dict[int, float]:
    """``{(meta_seed, task, finetune_seed): value}`` -> ``{meta_seed: mean over its tasks and fine-tuning seeds}``."""
    groups: dict[int, list[float]] = {}
    for (m, _task, _seed), v in acc.items():
        groups.setdefault(m, []).append(v)
    return {m: sum(v) / len(v) for m, v in sorted(groups.items())}


def summary(acc: dict) -> dict:
    """Mean with a 95% interval over meta-seeds (the per-meta-seed means are the replicates)."""
    means = per_meta_seed_means(acc)
    stats = mean_ci95(list(means.values()))
    return {"mean": stats["mean"], "ci95": stats["ci95"], "meta_seeds": len(means), "n_runs": len(acc),
            "per_meta_seed": [means[m] for m in means]}


def per_task_summaries(acc: dict) -> dict:
    """``{task name: summary over the meta-seeds that had the task}``."""
    return {t.split(":", 1)[-1]: summary({k: v for k, v in acc.items() if k[1] == t})
            for t in sorted({k[1] for k in acc})}


def _p_two_sided(mean: float, sd: float, n: int) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0."""
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    return 2.0 * (1.0 - t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def paired_claim(favoured: dict, other: dict) -> dict:
    """The claim "favoured > other" as a paired difference over the keys both have ((meta-seed, task,
    fine-tuning seed), or any key whose first element is the meta-seed): mean within each meta-seed, then a
    t-interval over meta-seeds (the exact t quantile). ``p``: the two-sided p-value of the mean difference (None
    with one meta-seed)."""
    keys = sorted(set(favoured) & set(other))
    if not keys:
        raise ValueError("no pairs: the two sides share no (meta-seed, task, seed) key")
    diffs = per_meta_seed_means({k: favoured[k] - other[k] for k in keys})
    stats = mean_ci95(list(diffs.values()))
    p = None
    if stats["ci95"] is not None:
        p = _p_two_sided(stats["mean"], stats["sd"], stats["n"])
        # the exact quantile (not T975's 3 decimals): the interval excludes 0 exactly when p < 0.05
        half = t_quantile(0.975, stats["n"] - 1) * stats["sd"] / math.sqrt(stats["n"])
        stats["ci95"] = [stats["mean"] - half, stats["mean"] + half]
    return {"verdict": verdict(stats["ci95"]), "diff": stats["mean"], "ci95": stats["ci95"], "p": p,
            "n_pairs": len(keys), "n_meta_seeds": len(diffs), "per_meta_seed": list(diffs.values())}


def equivalence_claim(a: dict, b: dict, margin: float) -> dict:
    """"a and b are the same within +-margin" by two one-sided tests on the per-meta-seed paired differences:
    ``equivalent`` when both one-sided tests reject at 5% (the 90% interval lies inside (-margin, margin)),
    ``different`` when the 90% interval lies wholly outside it, else ``inconclusive``. ``p`` is the larger of the
    two one-sided p-values (what Holm's adjustment takes)."""
    c = paired_claim(a, b)
    n, d = c["n_meta_seeds"], c["diff"]
    out = {"diff": d, "margin": margin, "n_pairs": c["n_pairs"], "n_meta_seeds": n,
           "per_meta_seed": c["per_meta_seed"], "ci90": None, "p": None, "verdict": "inconclusive"}
    if n < 2:
        return out
    sd = math.sqrt(sum((v - d) ** 2 for v in c["per_meta_seed"]) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.95, n - 1) * se
    out["ci90"] = [d - half, d + half]
    if se == 0:
        out["p"] = 0.0 if abs(d) < margin else 1.0
    else:
        out["p"] = max(1.0 - t_cdf((d + margin) / se, n - 1), t_cdf((d - margin) / se, n - 1))
    lo, hi = out["ci90"]
    out["verdict"] = ("equivalent" if -margin < lo and hi < margin
                      else "different" if hi < -margin or lo > margin else "inconclusive")
    return out


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of a family of p-values (None: not tested, left None)."""
    tested = sorted((p, name) for name, p in p_values.items() if p is not None)
    adjusted, running = {}, 0.0
    for i, (p, name) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - i) * p))
        adjusted[name] = running
    return {name: adjusted.get(name) for name in p_values}


def holm_verdicts(claims: dict) -> None:
    """Adds ``p_holm`` and ``verdict_holm`` to every claim, in place: the family is every claim of the run that
    carries a p-value; a composite claim (``parts``: the names of its pairwise claims) holds when every part holds
    after the adjustment, fails when any fails. A difference holds (fails) when its adjusted p is below 5% and
    its sign is in (against) the claim's favour; an equivalence claim is ``equivalent`` when its adjusted TOST p
    is below 5%, else ``inconclusive``: the TOST p tests equivalence only, so "different" (the raw verdict's 90%
    interval wholly outside the margin) has no Holm counterpart."""
    adjusted = holm({name: c.get("p") for name, c in claims.items() if "parts" not in c})
    for name, c in claims.items():
        if "parts" in c:
            continue
        p = adjusted[name]
        c["p_holm"] = p
        if "margin" in c:
            c["verdict_holm"] = "equivalent" if p is not None and p < ALPHA else "inconclusive"
        else:
            c["verdict_holm"] = ("inconclusive" if p is None or p >= ALPHA else "holds" if c["diff"] > 0 else "fails")
    for c in claims.values():
        if "parts" in c:
            c["verdict_holm"] = combined_verdict([claims[p]["verdict_holm"] for p in c["parts"]])


def combined_verdict(parts: list[str]) -> str:
    """"ahead of every one": holds when every part holds, fails when any fails, else inconclusive."""
    return "holds" if all(v == "holds" for v in parts) else "fails" if "fails" in parts else "inconclusive"


def combine(acc_a: dict, acc_b: dict, sign: float = -1.0) -> dict:
    """``a + sign * b`` key by key (for differences of differences)."""
    return {k: acc_a[k] + sign * acc_b[k] for k in set(acc_a) & set(acc_b)}


def beta_width(betas: list[float], means: list[float], tolerance: float = 0.01) -> dict:
    """The contiguous range of grid rates around the best whose mean is within ``tolerance`` of the best, and its
    width in decades (0 when only the best qualifies: then the true width is below one grid spacing).
    ``open_low``/``open_high``: the range reaches an end of the grid, so the true width may be larger."""
    order = sorted(range(len(betas)), key=lambda i: betas[i])
    b = [betas[i] for i in order]
    m = [means[i] for i in order]
    best = max(range(len(m)), key=lambda i: m[i])
    lo = hi = best
    while lo > 0 and m[lo - 1] >= m[best] - tolerance:
        lo -= 1
    while hi < len(m) - 1 and m[hi + 1] >= m[best] - tolerance:
        hi += 1
    return {"best_beta": b[best], "best_mean": m[best], "range": [b[lo], b[hi]],
            "width_decades": math.log10(b[hi] / b[lo]), "open_low": lo == 0, "open_high": hi == len(m) - 1}


def band(curves: list[list[list[float]]]) -> dict:
    """Mean and 95% t-band over seeds of curves [[step, value], ...] at the steps they share."""
    steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    out = {"steps": steps, "mean": [], "ci95": []}
    for s in steps:
        stats = mean_ci95([next(v for t, v in c if t == s) for c in curves])
        out["mean"].append(stats["mean"])
        out["ci95"].append(stats["ci95"])
    return out


def steps_to_reach(curve: list[list[float]], target: float) -> int | None:
    """The first step of ``curve`` ([[step, accuracy], ...]) whose accuracy is at least ``target``."""
    return next((int(s) for s, a in curve if a >= target), None)


def value_at(curve: list[list[float]], step: int) -> float:
    return next(a for s, a in curve if s == step)
