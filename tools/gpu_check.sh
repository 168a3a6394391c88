#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one run of under ten minutes on one GPU. No test of the suite
# needs a GPU; run this when one is lent (the `device` tool's status says so, at no cost).
#
# Prepare once, here (the data travels with the working tree; .gpu_data/ is ignored by git):
#   mkdir -p .gpu_data/FashionMNIST/raw && cp /usr/share/datasets/fashion-mnist/*.gz .gpu_data/FashionMNIST/raw/
# Run there:  bash tools/gpu_check.sh        (device tool: carry [".gpu_data"], timeout_s 600)
#
# What it checks, each step under its own time limit, results in $OUT (default output/gpu_check):
#  1. env.txt      the GPU, the driver, torch's version and what it sees;
#  2. tests.txt    tests/test_cuda.py (fp32 on the GPU trains as on the CPU; bf16 autocast close to
#                  fp32; train.py on the GPU writes a run predict.py scores on the CPU) and the
#                  model and speed tests, now with CUDA present;
#  3. bench.jsonl  tools/benchmark.py --compare on CUDA, both models, bf16 autocast on and off
#                  (one JSON object per line);
#  4. study.txt, metrics.csv, results.json: one class of the Fashion-MNIST study at the original's
#                  budget (Skip-WGANomaly, Bag abnormal, 32x32, default widths, 15 epochs).
# Six files: the device tool brings back at most eight.
set -uo pipefail
OUT=${OUT:-output/gpu_check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run it with a limit, note its exit code, go on
    local name=$1 limit=$2; shift 2
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@"; local rc=$?
    echo "== $name: exit code $rc"
    [ "$rc" -eq 0 ] || status=1
}
{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name())"; } \
    > "$OUT/env.txt" 2>&1
step tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_speed.py tests/test_models.py \
    -m "not browser and not ray" > "$OUT/tests.txt" 2>&1
for model in skipganomaly w_skipganomaly; do
    for amp in amp no-amp; do
        step "benchmark $model --$amp" 45 "$PY" -m tools.benchmark --device cuda --model "$model" "--$amp" --compare \
            --steps 10 --eval_batches 20 --reps 5 >> "$OUT/bench.jsonl"
    done
done
step study 240 "$PY" train.py --dataset fashion-mnist --dataroot .gpu_data --nc 1 --model w_skipganomaly \
    --abnormal_class Bag --isize 32 --niter 15 --device gpu --manualseed 0 --outf output/gpu_check_run \
    --name study --overwrite --print_freq 100000 --save_image_freq 100000 > "$OUT/study.txt" 2>&1
cp output/gpu_check_run/study/metrics.csv output/gpu_check_run/study/results.json "$OUT/" 2>/dev/null
exit $status
