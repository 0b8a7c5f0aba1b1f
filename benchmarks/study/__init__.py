"""The reproduction study: CTS against Reptile, first-order MAML, Leap, multi-task learning and scratch, with
meta-training seeds, paired differences and 95% intervals (raw and Holm-adjusted verdicts), equivalence tests,
per-algorithm rate choices on held-out meta-train tasks, and the paper's own protocol side by side.

    python -m benchmarks.study [--quick | --preset quick|full|large|ratio|long] [--json] [--suite glyph|colour]
                               [--out DIR] [--set KEY=VALUE ...] [--optional-algorithms]
                               [--backbone NAME] [--image-size N]

Run it from the repository root (``benchmarks`` is found on the working directory; nothing to install beyond the
project). It replaces ``python benchmarks/meta_test.py``.

Two protocols. The **staged** presets (``quick``, ``full``, ``large``; every number is a preset value):

1. **search**: for every algorithm and every K of the sweep, the meta rate and schedule (constant or cosine decay
   to 0) are searched alike: three rates around the algorithm's centre (times 1/sqrt(10), 1, sqrt(10)) for each
   schedule, grown by one more rate beyond a winning end (at most ``max_extensions`` times). Each candidate
   meta-trains on the suite's meta-train tasks less its search-validation tasks for ``search_steps`` steps and is
   scored by fine-tuning on those held-out *meta-train* tasks. No meta-test task is read by the search
   (tests/test_study.py checks it).
2. **tuned protocol**: every algorithm with its selection, ``meta_seeds`` meta-training seeds, on all meta-train
   tasks, equal budgets; fine-tuned on every meta-test task with all data and with ``limited_per_class`` examples
   per class.
3. **paper protocol**: every algorithm at the official meta rate 1e-2, the official fine-tuning recipe.
4. **beta robustness**: CTS, Reptile and MTL at every rate of ``beta_grid`` (measured on meta-test tasks, not
   used for selection).
5. **K sweep**: CTS and Reptile at every K of ``k_sweep_ks``, each with its own search.
6. convergence bands (measured on meta-test tasks, not used for selection), statistics, figures.

The **ratio** preset (issue 20): steps / K = 100 (2000 steps, K = 20); CTS, Reptile, MTL and scratch
(``--optional-algorithms`` adds FOMAML, FOMAML-CTS and Leap); 10 meta-seeds, 2 fine-tuning seeds each. Every
meta-seed draws its own seeded split of the suite into meta-train, validation and meta-test tasks (recorded in
``config.splits``; ``config.meta_test_tasks`` lists every meta-test task drawn), meta-trains every rate of the
preset's fixed ``rate_grid`` and keeps, per algorithm, the rate that scores best on its validation tasks: the
choice is inside the meta-seed, so its noise is inside the interval. Every candidate is also fine-tuned on the
meta-test tasks, reported as curves "measured on meta-test tasks, not used for selection".

The **long** preset (issue 29): the same S = 5000 inner steps per task at K = 20, 100 and 500 (250, 50 and 10
trajectories per task), CTS and Reptile at every K, MTL and scratch once, meta-seeds 0-5 with the ratio preset's
seeded splits, 2 fine-tuning seeds, three fine-tuning budgets (``config.finetune_budgets``: 200 steps all data,
100 and 1000 steps with 20 per class; the long one logs validation curves, scratch's last quarter tested flat).
Rates are chosen ONCE per (algorithm, K) on tuning meta-seed 100 (scored on its validation tasks, never a
meta-test task; a winning grid end adds the next half-decade, twice at most) and written to
``RECORDS/tuning-FINGERPRINT.json`` before any claim meta-seed runs. Each finished run is recorded at once
(``RECORDS/run-LABEL-FINGERPRINT.json``: its meta-validation curve and fine-tuning accuracies), so a restart on a
fresh machine loses at most the run in progress. ``python -m benchmarks.study.summary RESULTS.json`` renders its
table and its two figures (accuracy vs K; meta-validation accuracy vs steps at the longest K).

Statistics. The unit of replication is the meta-training seed: every mean carries a t-interval over the
per-meta-seed means (each the mean over meta-test tasks and fine-tuning seeds). Every claim is a *paired*
difference averaged within each meta-seed; "holds" when its 95% interval excludes 0 in its favour, "fails" when it
excludes 0 against it, else "inconclusive". ``verdict_holm`` is the same verdict after Holm's adjustment over all
claims of the run. "Are they the same" questions get an equivalence verdict (two one-sided tests, +-2 points).

Resuming. Meta-training runs are kept in ``OUT/runs/NAME`` (``study.json`` written when one finishes) and
fine-tuning results in ``OUT/finetune.jsonl`` (one line per finished result, keyed by the init's weights, the
task, the seed and the recipe); a restarted run reuses both. The ratio protocol writes ``results.json`` after
every meta-seed, with ``"partial": true`` and its counts until the last. ``--json`` prints one object on stdout;
progress goes to stderr.
"""
