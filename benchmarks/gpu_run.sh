#!/usr/bin/env bash
# The GPU run of issue 6 (and its correctness check), as one prepared script. Writes into ${OUT:-gpu_out}:
# gpu_check.json, throughput_*.json and log.txt (everything printed on stderr).
#   bash benchmarks/gpu_run.sh
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"; LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$LOG"
run() { local name=$1 limit=$2; shift 2; echo "== $name: $*" >> "$LOG"
  timeout "$limit" python3 "$@" > "$OUT/$name.json" 2>> "$LOG"; echo "$name exit $?" | tee -a "$LOG"; }
run gpu_check 90 benchmarks/gpu_check.py --json
run throughput_fp32 120 benchmarks/throughput.py --device cuda --backbones resnet20,convnet4-32 --budget-seconds 25 --json
run throughput_bf16 80 benchmarks/throughput.py --device cuda --backbones resnet20 --mixed-precision bf16 --budget-seconds 25 --json
run throughput_bf16_32tasks 80 benchmarks/throughput.py --device cuda --backbones resnet20 --tasks 32 --mixed-precision bf16 --budget-seconds 20 --json
grep -E "ms/step|not measured|Error|ok|FAIL" "$LOG" | tail -n 20
