#!/usr/bin/env bash
# The device checks, as one prepared script for the lent GPU machine (no network):
#   1. the smoke grid on CUDA with every mitigation and two rounds (bf16 student, cached frozen
#      activations, packed batches), all notebooks rendered;
#   2. bench/bench_finetune.py --random-llama-8b at 16 x 512: our loop padded and packed, packed with the
#      loss-based mitigation's alignment term, PEFT + Trainer and unsloth (where its wheel is in the kit),
#      tokens/s, MFU and peak memory at Llama-3.1-8B's architecture (random weights).
# Needs the GPU kit (../shared/gpu-kit) copied to .gpu-kit/ and carried: run(command="bash bench/gpu_run.sh",
# carry=[".gpu-kit"]). Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
source bench/gpu_setup.sh
python3 .gpu-kit/versions.py . > "$OUT/versions.txt" 2>&1
start=$(date +%s)
python3 -m biasutils run --profile smoke --set device=cuda --set finetune.packing=true --set multiround.rounds=2 \
    --set "grid.mitigations=[none,token,mask,loss]" --reports "$OUT/reports" > "$OUT/smoke.log" 2>&1
echo "smoke on cuda: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
cp /tmp/bias-store/mitigation-comparison/*/comparisons.csv "$OUT/" 2>/dev/null
if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0: the smoke grid only
    timeout 420 python3 bench/bench_finetune.py --random-llama-8b --steps 10 --batch-size 16 --length 512 > "$OUT/bench_finetune.txt" 2>&1
    echo "bench_finetune: exit $?" | tee -a "$OUT/summary.txt"
fi
tail -n 5 "$OUT"/*.log "$OUT"/*.txt
