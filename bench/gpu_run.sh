#!/usr/bin/env bash
# The device checks, as one prepared script for the lent GPU machine (no network):
#   1. the smoke grid on CUDA with every mitigation (bf16 student, cached frozen activations), all
#      notebooks rendered, 06 included;
#   2. bench/bench_finetune.py --random-llama-8b: our loop, our loop with the loss-based mitigation's
#      alignment term, and a PEFT + Trainer run, at Llama-3.1-8B's architecture (random weights).
# Needs the GPU kit (../shared/gpu-kit) copied to .gpu-kit/ and carried: run(command="bash bench/gpu_run.sh",
# carry=[".gpu-kit"]). Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
source bench/gpu_setup.sh
python3 .gpu-kit/versions.py . > "$OUT/versions.txt" 2>&1
start=$(date +%s)
python3 -m biasutils run --profile smoke --set device=cuda --set "grid.mitigations=[none,token,mask,loss]" \
    --reports "$OUT/reports" > "$OUT/smoke.log" 2>&1
echo "smoke on cuda: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
cp /tmp/bias-store/mitigation-comparison/*/comparisons.csv "$OUT/" 2>/dev/null
if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0: the smoke grid only
    timeout 300 python3 bench/bench_finetune.py --random-llama-8b --steps 40 --batch-size 8 --length 256 > "$OUT/bench_finetune.txt" 2>&1
    echo "bench_finetune: exit $?" | tee -a "$OUT/summary.txt"
fi
tail -n 5 "$OUT"/*.log "$OUT"/*.txt
