#!/usr/bin/env bash
# The study's larger configuration (issue 12): ResNet-20, K = 1000, 20k meta-steps, the colour suite, 3 meta-seeds,
# every stage of the study's staged protocol (python -m benchmarks.study: rate x schedule search per algorithm and
# per K at the final step count, tuned and paper protocols, beta robustness, per-K-tuned K sweep, convergence bands). Writes into ${OUT:-gpu_study}:
# results.json, results.md, figures and log.txt. Finished meta-training runs and fine-tuning results are reused, so
# the same command continues an interrupted run (e.g. across several device sessions).
#   bash benchmarks/gpu_study.sh                      # from the repository root; SUITE=colour (benchmarks/study/config.py)
#   SUITE=glyph IMAGE_SIZE=28 bash benchmarks/gpu_study.sh
# Estimated device time (benchmarks/RESULTS.md, "The larger GPU configuration"): about 23 GPU-hours on one
# H100-class card: about 21 h of meta-training (21.8M inner task-steps at ~290 task-steps/s batched) and 2-3 h
# of fine-tuning (1292 runs).
set -u
OUT=${OUT:-gpu_study}; SUITE=${SUITE:-colour}; IMAGE_SIZE=${IMAGE_SIZE:-32}
mkdir -p "$OUT"; LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -m benchmarks.study --json --preset large --suite "$SUITE" --backbone resnet20 --image-size "$IMAGE_SIZE" --out "$OUT" \
  --set steps=20000 --set reset_period=1000 --set search_steps=20000 --set 'k_sweep_ks=[100, 1000, 10000]' \
  --set snapshot_every=2000 --set snapshot_finetune_steps=200 --set search_finetune_steps=300 \
  --set finetune_steps=1000 --set finetune_batch_size=128 --set limited_finetune_steps=300 \
  --set 'meta_seeds=[0, 1, 2]' --set finetune_seeds_per_meta_seed=2 --set paper_finetune_seeds_per_meta_seed=2 \
  > "$OUT/stdout.json" 2>> "$LOG"
echo "study exit $?" | tee -a "$LOG"
tail -n 60 "$LOG"
