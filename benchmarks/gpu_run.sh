#!/usr/bin/env bash
# The GPU run of issue 13 (graph-captured step) and its correctness checks, as one prepared script for one
# H100/H200. Writes into ${1:-${OUT:-gpu_out}}: gpu_check.json, throughput_*.json, log.txt (everything printed on
# stderr) and summary.txt.
#   bash benchmarks/gpu_run.sh [OUT_DIR]
#
# Device time: about 8.5 minutes, at most 10 (570 s of hard limits plus start-up; the machine's own start is extra).
#   part                                                                        typical   hard limit
#   header (nvidia-smi, versions)                                                  5 s        -
#   gpu_check: batched == sequential (issue 6) + captured == eager (issue 13)     80 s      120 s
#   throughput fp32, 8 tasks, resnet20 + convnet4-32, 6 variants                  80 s      100 s
#   throughput bf16, 8 tasks, same                                                80 s      100 s
#   throughput fp32, 32 tasks, same                                               90 s      100 s
#   throughput bf16, 32 tasks, same                                               90 s      100 s
#   throughput bf16, 8 x resnet20, channels_last (batched, graphs)                25 s       35 s
#   inductor check (torch.compile; only with the time left, last)                 <= the rest of 570 s
# Variants: plain (a plain PyTorch loop per task), cts (sequential, eager), scratch_batched / cts_batched (batched,
# eager), scratch_graphs / cts_graphs (batched, captured as one CUDA graph); per mode the CTS / plain ratio, per
# variant TFLOP/s, memory per task and the projected wall time of 1.6M task-steps (benchmarks/throughput.py).
set -u
OUT=${1:-${OUT:-gpu_out}}; mkdir -p "$OUT"; LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
DEADLINE=570  # seconds from the start of this script for all parts
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$LOG"
run() {  # run NAME LIMIT_SECONDS ARGS...: at most LIMIT, and never past the deadline
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then echo "$name skipped: ${left}s left" | tee -a "$LOG"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" >> "$LOG"
  timeout "$limit" python3 "$@" > "$OUT/$name.json" 2>> "$LOG"; echo "$name exit $? after ${SECONDS}s" | tee -a "$LOG"
}
TP="benchmarks/throughput.py --device cuda --backbones resnet20,convnet4-32 --compile-variants --rounds 8 --budget-seconds 10 --json"
run gpu_check 120 benchmarks/gpu_check.py --json
run throughput_fp32_8 100 $TP --tasks 8
run throughput_bf16_8 100 $TP --tasks 8 --mixed-precision bf16
run throughput_fp32_32 100 $TP --tasks 32
run throughput_bf16_32 100 $TP --tasks 32 --mixed-precision bf16
run throughput_bf16_8_channels_last 35 benchmarks/throughput.py --device cuda --backbones resnet20 --compile-variants \
    --variants cts_batched,cts_graphs --channels-last --mixed-precision bf16 --rounds 6 --budget-seconds 8 --json
run gpu_check_inductor 600 benchmarks/gpu_check.py --json --only-compile --inductor
python3 - "$OUT" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    try:
        r = json.loads(path.read_text())
    except ValueError:
        print(f"{path.name}: no JSON (timed out or failed; see log.txt)")
        continue
    if "checks" in r:
        for name, ok in r["checks"].items():
            print(f"{path.name}: {'ok  ' if ok else 'FAIL'} {name}")
    for arch, b in r.get("backbones", {}).items():
        c = r["config"]
        for v, m in b["variants"].items():
            print(f"{path.name}: {c['tasks']} x {arch} {c['mixed_precision']}: {v:<16} {m['step_ms']['median']:8.2f} ms/step "
                  f"{m['task_steps_per_s']:8.1f} task-steps/s {(m['achieved_gflops'] or 0) / 1e3:6.2f} TFLOP/s "
                  f"{m.get('memory_mib_per_task', float('nan')):7.1f} MiB/task  1.6M task-steps in "
                  f"{m['projected_hours_1p6M_task_steps'] * 60:.1f} min")
        for mode, q in b.get("ratio_by_mode", {}).items():
            print(f"{path.name}: {c['tasks']} x {arch} {c['mixed_precision']}: {mode} cts/plain {q['median']:.3f}")
EOF
