"""Claims built from pairwise ones: "ahead of every baseline", the equivalence questions, and the public form of a
run's claims with Holm-adjusted verdicts beside the raw ones."""
from __future__ import annotations

from .stats import combined_verdict, equivalence_claim, holm_verdicts, paired_claim, summary

PUBLIC_FIELDS = ("verdict", "verdict_holm", "diff", "ci95", "ci90", "margin", "p", "p_holm", "n_pairs",
                 "n_meta_seeds", "per_meta_seed", "against", "parts")


def ahead_of_every(claims: dict, acc: dict, baselines: tuple, pattern: str) -> dict:
    """CTS ahead of every baseline: holds only if every pairwise claim (``pattern.format(b)``) holds, fails if any
    fails; reports the paired difference to the strongest baseline (highest mean)."""
    strongest = max(baselines, key=lambda b: summary(acc[b])["mean"])
    c = dict(paired_claim(acc["cts"], acc[strongest]))
    c.pop("p")  # a composite claim is not a test of its own: Holm's family holds its parts
    c["parts"] = [pattern.format(b) for b in baselines]
    c["verdict"] = combined_verdict([claims[p]["verdict"] for p in c["parts"]])
    c["against"] = strongest
    return c


def equivalence_claims(acc: dict, baselines: tuple, setting: str, margin: float) -> dict:
    """"CTS and b give the same accuracy (within +-margin)" for every meta-learning baseline b: the question the
    recommendation asks when it calls rules equally good choices."""
    return {f"cts_same_as_{b}_{setting}": equivalence_claim(acc["cts"], acc[b], margin)
            for b in baselines if b != "scratch"}


def finish_claims(claims: dict) -> dict:
    """Holm-adjusted verdicts for the whole family, then only the public fields of each claim."""
    holm_verdicts(claims)
    return {k: {f: v[f] for f in PUBLIC_FIELDS if f in v} for k, v in claims.items()}
