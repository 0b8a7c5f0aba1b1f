#!/usr/bin/env bash
# Train, ship and compare the multi-task counterparts of the ConvNet-4-32 zoo entries (issue 30, item 1):
# zoo:glyph-convnet4-32-mtl and zoo:pool-convnet4-32-mtl, from training/recipes/zoo/NAME-mtl.yaml (the CTS recipe
# with algorithm: mtl; the rate and its evidence are in each recipe's header).
#
#     bash scripts/zoo_counterparts.sh RUNS_DIR NEW_TASKS_DIR [NAME ...]
#
# For each CTS entry NAME (default both): meta-trains RUNS_DIR/zoo/NAME-mtl at one thread (resuming a run that has
# checkpoints; the wall seconds of every invocation are summed in RUNS_DIR/zoo/NAME-mtl/seconds), adds it to the zoo
# as NAME-mtl linked to NAME (scripts/zoo.py add --counterpart-of), fine-tunes NAME, NAME-mtl and scratch on the new
# tasks of NEW_TASKS_DIR (bash scripts/make_new_tasks.sh NEW_TASKS_DIR) at two budgets, 3 seeds, 20 images per
# class: the short one (200 steps) and fine-tuned to convergence (--steps auto: early stopping on the validation
# split, at most 100 epochs, the best step kept), and records NAME vs NAME-mtl and NAME-mtl vs scratch in the registry
# and cards. Meta-training is 4000 steps per entry at one thread (one process: --cpu-processes 1).
set -euo pipefail

if [[ $# -lt 2 || "$1" == -* ]]; then
    echo "usage: bash scripts/zoo_counterparts.sh RUNS_DIR NEW_TASKS_DIR [glyph-convnet4-32] [pool-convnet4-32]" >&2
    exit 2
fi
runs=$1 tasks=$2
shift 2
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(glyph-convnet4-32 pool-convnet4-32)
export OMP_NUM_THREADS=1
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) cores, 1 thread, torch $(python -c 'import torch; print(torch.__version__)')"
glyph_eval=(tamil telugu khmer tibetan)
colour_eval=(emoji-symbols icons-devices icons-status textures-extra)

declare -A why names_of
why[glyph-convnet4-32]="the ratio study's choice for MTL on glyph validation tasks, per meta-seed: 0.1 in 8 of 10 meta-seeds, 0.0316 in 2 (benchmarks/recorded/study-ratio/glyph)"
why[pool-convnet4-32]="not chosen on validation tasks of this pool (no CPU time for that grid): the ratio study's choice for MTL on glyph (0.1 in 8 of 10 meta-seeds); on colour it chose 0.316 in 5 of 10, 0.1 in 4, 0.0316 in 1 (benchmarks/recorded/study-ratio)"
names_of[glyph-convnet4-32]="new scripts (Tamil, Telugu, Khmer, Tibetan), 20 images per class"
names_of[pool-convnet4-32]="new scripts (Tamil, Telugu, Khmer, Tibetan), 20 images per class|new colour tasks (emoji symbols, device and status icons, extra GIMP patterns), 20 images per class"

for name in "${names[@]}"; do
    mtl=$name-mtl out=$runs/zoo/$mtl
    if [[ ! -f $out/init/model.safetensors ]]; then
        resume=() ; [[ -d $out/checkpoints ]] && resume=(--resume)
        start=$(date +%s)
        ctinit-train --config "zoo/$mtl" --out "$out" --no-progress --cpu-processes 1 "${resume[@]}"
        echo $(( $(date +%s) - start )) >> "$out/seconds"
    fi
    seconds=$(( $(paste -sd+ "$out/seconds") ))
    python scripts/zoo.py add "$out" "$mtl" --replace --recipe "training/recipes/zoo/$mtl.yaml" \
        --command "OMP_NUM_THREADS=1 ctinit-train --config zoo/$mtl --out runs/zoo/$mtl --cpu-processes 1" \
        --seconds "$seconds" \
        --machine "$machine (shared with other jobs: wall time)" --counterpart-of "$name" --meta-lr-chosen "${why[$name]}"
    IFS='|' read -r -a labels <<< "${names_of[$name]}"
    groups=("${glyph_eval[*]}")
    [[ $name == pool-* ]] && groups+=("${colour_eval[*]}")
    for i in "${!groups[@]}"; do
        data=()
        for t in ${groups[$i]}; do data+=(--data "npz:$tasks/$t.npz"); done
        for budget in 200 auto; do
            e=$runs/zoo-eval/$name-vs-mtl-$i-$budget
            ctinit evaluate --init "zoo:$name" --init "zoo:$mtl" --init "scratch:zoo:$name" "${data[@]}" --seeds 3 \
                --steps $budget --batch-size 64 --max-train-per-class 20 --out "$e" --no-progress
            python scripts/zoo.py results "$name" "$e" --against "$mtl" --name "${labels[$i]}"
            python scripts/zoo.py results "$mtl" "$e" --scratch "scratch:zoo:$name" --name "${labels[$i]}"
        done
    done
done
