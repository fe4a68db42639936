#!/usr/bin/env bash
# The GPU check, in one go (benchmarks/gpu_check.py says what it measures), from any directory:
#
#     bash benchmarks/gpu_check.sh              # on a GPU machine; the summary in $OUT/gpu_check_summary.json
#     bash benchmarks/gpu_check.sh --quick      # toy sizes on a CPU, Ray, MLflow and Optuna blocked (CI runs it)
#
# Needs python with torch, torchvision, timm, numpy and scikit-learn; the project need not be
# installed. pydicom (pure Python) may come as a wheel: every *.whl in $WHEELS (default: wheels/
# in the repository) goes on PYTHONPATH, e.g. after `pip download pydicom --no-deps -d wheels`.
# OUT defaults to gpu_check/<UTC time>/. The check stops after 8 minutes (GPU_CHECK_SECONDS).
set -euo pipefail

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=()
case "${1:-}" in
    --quick) quick=(--quick) ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--quick]" >&2; exit 2 ;;
esac
OUT="${OUT:-$repository/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

path="$repository"
for wheel in "${WHEELS:-$repository/wheels}"/*.whl; do
    if [ -e "$wheel" ]; then path="$wheel:$path"; fi
done
if [ "${#quick[@]}" -gt 0 ]; then path="$repository/benchmarks/without_cluster_packages:$path"; fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"

{ date -u; uptime; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; } > "$OUT/machine.txt" 2>&1 || true
timeout "${GPU_CHECK_SECONDS:-480}" python "$repository/benchmarks/gpu_check.py" "${quick[@]}" --out "$OUT" \
    2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
echo "gpu check: exit $status; summary in $OUT/gpu_check_summary.json"
exit "$status"
