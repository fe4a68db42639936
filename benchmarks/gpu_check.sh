#!/usr/bin/env bash
# The GPU check: run as is from the repository root of a GPU machine, after `pip install -e ".[test]"`:
#
#     bash benchmarks/gpu_check.sh             # outputs under gpu_check/<UTC time>/
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# 1. the GPU-only tests of the input path (batches resident on the device, pinned + prefetched);
# 2. the training-step benchmark (trial step vs bare PyTorch) at ResNet-50 / 224 px / bf16 /
#    channels-last, batch 256, then at the largest power-of-two batch that fits the GPU: images/s,
#    ratio, model FLOP utilisation against a measured bf16 matmul peak, input-wait fraction and
#    host-device syncs inside the step;
# 3. benchmarks/memory_check.py, where it exists (the memory planner's check);
# 4. the data-pipeline benchmark (batched on the GPU vs a PIL DataLoader on all CPUs) and the kNN
#    monitor's overhead;
# 5. a short real sweep on the GPU: the smoke sweep in a local Ray, MLflow in $OUT/mlflow.db.
#
# SMALL=1 runs every step that a CPU can run with small sizes (cbr_nano, 32 px, a 1-epoch sweep),
# skipping the GPU-only parts: a check of the script itself on a machine without a GPU.
# Each step's output is in $OUT/<step>.txt; a failed step is reported and the others still run;
# the exit code is the number of failed steps.
set -uo pipefail

OUT="${OUT:-gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SMALL="${SMALL:-0}"
failures=0

step() {  # step NAME COMMAND...: run it, keep its output in $OUT/NAME.txt and on the terminal
    local name="$1"; shift
    echo "=== $name: $*" | tee "$OUT/$name.txt"
    local started=$SECONDS
    "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local status=${PIPESTATUS[0]}
    echo "=== $name: exit $status after $((SECONDS - started)) s" | tee -a "$OUT/$name.txt"
    if [ "$status" -ne 0 ]; then failures=$((failures + 1)); fi
}

{ date -u; uptime; git rev-parse HEAD 2>/dev/null; nvidia-smi 2>/dev/null || echo "no nvidia-smi";
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
             torch.cuda.get_device_name() if torch.cuda.is_available() else '')"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [ "$SMALL" = 1 ]; then
    step step_benchmark python benchmarks/train_step.py --backbone cbr_nano --image-size 32 --batch-size 64 \
        --steps 2 --repeats 3
    step pipeline_benchmark python benchmarks/data_pipeline.py --images 32 --sizes 96 --repeats 1
    step monitoring_overhead python benchmarks/monitoring.py --setting smoke --repeats 2
    sweep_settings=(--set epochs=1 --set image_size=16 --set probe_epochs=10 --set probe_repeats=1)
else
    step gpu_tests python -m pytest tests/trainables/test_batches.py -q -rs
    step step_benchmark_resnet50_224_batch256 python benchmarks/train_step.py --backbone resnet50 \
        --image-size 224 --batch-size 256 --steps 10 --repeats 5
    step step_benchmark_resnet50_224_largest_batch python benchmarks/train_step.py --backbone resnet50 \
        --image-size 224 --max-batch --steps 5 --repeats 3
    step pipeline_benchmark python benchmarks/data_pipeline.py --images 1024 --batch-size 256 --repeats 3
    step monitoring_overhead python benchmarks/monitoring.py
    sweep_settings=()
fi
if [ -f benchmarks/memory_check.py ]; then
    step memory_check python benchmarks/memory_check.py
fi
step smoke_sweep env RAY_ADDRESS=local python -m orchestrator.sweep smoke "${sweep_settings[@]}" \
    --tracking-uri "sqlite:///$OUT/mlflow.db" --storage-path "$OUT/ray_results"

echo "gpu check: $failures failed step(s); outputs in $OUT"
exit "$failures"
